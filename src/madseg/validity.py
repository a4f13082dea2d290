"""Hidden-truth checks of the method: on what share of a candidate set is the target truly wrong, how much do
the models disagree by kind of image, and what does each target score per group and factor of a held-out pool.

Takes a pool's truth (the stage reads it), so it is for measuring the method only; mining and selection never
call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from madseg.metrics import image_miou, mean_iou
from madseg.mining import shard_pair_stats
from madseg.rater_model import estimate
from madseg.slices import factors_recovered, hindsight_bound

OOD = "ood"
# what validity folds in from scripts/validity_study.py's metrics/study.json
STUDY_KEYS = (
    "seeds",
    "mad_minus_entropy",
    "mad_minus_random",
    "mad_minus_entropy_sd",
    "mad_minus_random_sd",
    "competition.mad_minus_entropy",
    "competition.mad_minus_random",
)
# and from its metrics/study_options.json (--options): the recipes beyond the paper's, side by side
OPTION_FIGURES = (
    "corner_miou_gain",
    "t0_drop",
    "d_eval_miou",
    "gain.low_contrast",
    "gain.colour_shift",
    "mad_minus_entropy",
    "mad_minus_random",
)


def truly_wrong_fraction(
    ids: Sequence[str],
    target_maps: Mapping[str, np.ndarray],
    truth_masks: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    num_classes: int,
    threshold: float = 0.5,
) -> dict[str, float | int | None]:
    """Share of ``ids`` on which the target is truly wrong (per-image mIoU against the truth < ``threshold``).

    Out-of-domain images (kind 'ood') have no meaningful mask: they are counted separately, not as wrong.

    Args:
        ids: the images of a set (e.g. M), unique.
        target_maps: id -> (H, W) uint8 prediction of the target.
        truth_masks: id -> (H, W) uint8 hidden truth (255 = ignore); needed for in-domain ids only.
        kinds: id -> 'normal' | 'corner' | 'ood' (the world's factors.csv).
        num_classes: K.
    Returns:
        n, n_ood, n_in_domain, n_wrong, wrong_share (n_wrong / n_in_domain; None if none), ood_share
        (n_ood / n), mean_image_miou over in-domain images (None if none: JSON has no NaN).
    """
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids must be unique, got {len(ids)} ids with {len(ids) - len(set(ids))} repeats")
    missing_kind = [i for i in ids if i not in kinds]
    if missing_kind:
        raise ValueError(f"no kind (normal/corner/ood) for images {missing_kind[:5]}")
    mious = []
    n_ood = 0
    for i in ids:
        if kinds[i] == OOD:
            n_ood += 1
            continue
        if i not in target_maps:
            raise ValueError(f"image {i}: no prediction of the target")
        if i not in truth_masks:
            raise ValueError(f"image {i}: no truth mask")
        pred, truth = target_maps[i], truth_masks[i]
        if pred.shape != truth.shape:
            raise ValueError(f"image {i}: prediction {pred.shape} and truth {truth.shape} differ in shape")
        mious.append(image_miou(truth, pred, num_classes))
    arr = np.asarray(mious, dtype=np.float64)
    n = len(ids)
    n_wrong = int((arr < threshold).sum())
    return {
        "n": n,
        "n_ood": n_ood,
        "n_in_domain": int(arr.size),
        "n_wrong": n_wrong,
        "wrong_share": n_wrong / arr.size if arr.size else None,
        "ood_share": n_ood / n if n else None,
        "mean_image_miou": float(arr.mean()) if arr.size else None,
    }


def pairwise_disagreement(
    aligned: Iterable[Sequence], names: Sequence[str], kinds: pd.Series, num_classes: int
) -> dict[str, float | None]:
    """Mean pairwise 1 - mIoU between models per kind of image (normal, corner, ood).

    ``aligned`` yields, per shard, one prediction Shard (``ids`` and (n, H, W) maps, as the prediction store
    reads them) per model of ``names``, with the same ids; ``kinds`` maps an image id to its kind (ids it
    lacks count as unknown).
    """
    sums: dict[str, list[float]] = {"normal": [], "corner": [], "ood": []}
    for shards in aligned:
        kind = kinds.reindex(shards[0].ids).fillna("unknown").to_numpy()
        pair = [
            shard_pair_stats(shards[a], {names[b]: shards[b]}, num_classes)[2][names[b]][1]
            for a in range(len(names))
            for b in range(a + 1, len(names))
        ]
        mean_pair = np.mean(pair, axis=0)
        for group in sums:
            sums[group].extend(mean_pair[kind == group].tolist())
    return {f"mean_pairwise_distance.{g}": float(np.mean(v)) if v else None for g, v in sums.items()}


def candidate_precision(
    sets: Mapping[str, Sequence[str]],
    target_maps: Mapping[str, np.ndarray],
    truth_masks: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    num_classes: int,
) -> dict[str, float | int | None]:
    """:func:`truly_wrong_fraction` of each candidate set (e.g. mad, entropy, random at the same budget).

    Returns <set>.<figure> for each of its figures, and <set> alone for its wrong_share.
    """
    out: dict[str, float | int | None] = {}
    for name, ids in sets.items():
        for key, value in truly_wrong_fraction(ids, target_maps, truth_masks, kinds, num_classes).items():
            out[f"{name}.{key}"] = value
    for name in sets:
        out[name] = out[f"{name}.wrong_share"]
    return out


def factor_names(named: pd.Series) -> list[str]:
    """The distinct factors of ';'-joined factor cells ('' for none), sorted."""
    return sorted(set(";".join(named.fillna("")).split(";")) - {""})


def factor_shares(named: pd.Series, ids: Sequence[str]) -> dict[str, float]:
    """Per factor of ``named`` (image id -> ';'-joined factors), the share of ``ids`` carrying it (0 if
    none)."""
    carried = named.reindex(list(ids)).fillna("").str.split(";")
    return {f: float(carried.map(lambda fs, f=f: f in fs).mean()) if len(carried) else 0.0 for f in factor_names(named)}


def group_scores(cms: np.ndarray, factors: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """Pooled mIoU per group of a held-out pool: all in-domain, normal, corner, and each factor.

    Args:
        cms: (N, K, K) int64 per-image confusions, in the order of ``factors``' rows.
        factors: columns kind (normal | corner | ood) and factors (';'-joined names, '' for none).
    Returns:
        group name -> (images in the group, mIoU).
    """
    kinds, named = factors["kind"], factors["factors"].fillna("")
    groups = {"all_in_domain": kinds != OOD, "normal": kinds == "normal", "corner": kinds == "corner"}
    for factor in factor_names(named):
        groups[f"factor.{factor}"] = named.str.split(";").apply(lambda fs, f=factor: f in fs)
    return {g: (int(mask.sum()), mean_iou(cms[mask.to_numpy()].sum(0))) for g, mask in groups.items()}


def round_gains(scores: Mapping[str, float], first: str, last: str) -> dict[str, float]:
    """What fine-tuning changed from f_t^(first) to f_t^(last), in points of mIoU.

    Args:
        scores: target_<round>.<group> -> mIoU for both rounds (groups from :func:`group_scores`, plus T0).
    Returns:
        corner_miou_gain, normal_miou_change, t0_drop (T0's fall: > 0 is forgetting) and gain.<factor> for
        each factor the last round was scored on.
    """
    gains = {
        "corner_miou_gain": 100 * (scores[f"target_{last}.corner"] - scores[f"target_{first}.corner"]),
        "normal_miou_change": 100 * (scores[f"target_{last}.normal"] - scores[f"target_{first}.normal"]),
        "t0_drop": 100 * (scores[f"target_{first}.T0"] - scores[f"target_{last}.T0"]),
    }
    prefix = f"target_{last}.factor."
    for factor in sorted(k.split(".factor.")[1] for k in scores if k.startswith(prefix)):
        gains[f"gain.{factor}"] = 100 * (scores[prefix + factor] - scores[f"target_{first}.factor.{factor}"])
    return gains


def t0_of_round(round_key: str, finetunes: Mapping, finetuned: Mapping[str, Mapping]) -> float:
    """f_t^(round_key)'s T0 mIoU as the fine-tunes measured it, bit for bit what evaluate reports (so validity
    need not wait for the evaluations): fine-tune i measured f_t^(i) before and f_t^(i+1) after.

    Args:
        finetunes: fine-tuning round key -> its spec (``.next``: the round it makes).
        finetuned: fine-tuning round key -> its metrics (t0_miou_before, t0_miou_after).
    """
    if round_key in finetuned:
        return float(finetuned[round_key]["t0_miou_before"])
    before = [key for key, spec in finetunes.items() if spec.next == round_key]
    if not before:
        raise ValueError("validity measures what fine-tuning changed, and params.yaml has no fine-tuning round")
    return float(finetuned[before[0]]["t0_miou_after"])


def rater_bias_rmse(scores: pd.DataFrame, names: Sequence[str], planted: Sequence[float]) -> float:
    """RMSE between the rater model's biases fitted on ``scores`` (image_id, annotator, score) and the biases
    ``planted`` in the raters ``names`` (in that order), both measured from the raters' average."""
    fitted = estimate(scores).bias
    planted_ = np.array(planted, dtype=float)
    error = fitted.reindex(list(names)).to_numpy(dtype=float) - (planted_ - planted_.mean())
    return float(np.sqrt(np.mean(error**2)))


def precision_ratios(precision: Mapping[str, float | None]) -> dict[str, float | None]:
    """What M is worth against the baselines at its budget, from :func:`candidate_precision`'s figures: the
    ratio of truly wrong shares (MAD over random), the target's mean per-image mIoU on M and on entropy's picks over
    that on the random sample (lower: harder images found), and the random sample's wrong share (how often the
    target fails on the pool at large). None where a figure is missing."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return float(a / b) if a is not None and b else None

    random_miou = precision.get("random.mean_image_miou")
    return {
        "precision_ratio_vs_random": ratio(precision.get("mad"), precision.get("random")),
        "m_over_random_miou": ratio(precision.get("mad.mean_image_miou"), random_miou),
        "entropy_over_random_miou": ratio(precision.get("entropy.mean_image_miou"), random_miou),
        "target_wrong_share": precision.get("random.wrong_share"),
    }


def study_margins(study: Mapping, options: Mapping) -> dict:
    """The cross-seed margins of scripts/validity_study.py (``study``: its metrics/study.json), the paper's
    recipe under the same names as the options, and each option's figures (``options``: its
    metrics/study_options.json); None where a figure is missing (not run yet)."""
    out = {key: study.get(key) for key in STUDY_KEYS}
    out["paper.corner_miou_gain"] = study.get("mad.corner_miou_gain")
    out["paper.mad_minus_entropy"] = study.get("mad_minus_entropy")
    for option in sorted({key.split(".")[0] for key in options if key.endswith(".seeds")}):
        for figure in OPTION_FIGURES:
            for suffix in ("", "_sd"):
                out[f"options.{option}.{figure}{suffix}"] = options.get(f"{option}.{figure}{suffix}")
    return out


def slice_recovery(
    slices: pd.DataFrame, table: pd.DataFrame, m_ids: Sequence[str], factors_of_pool: pd.Series, *, seed: int
) -> dict:
    """How many of the pool's truth factors the 10 top ``slices`` of M recover, beside how many a rule of the
    slices' own vocabulary could isolate when chosen with the truth (the gap to that is the finder's), and how
    many such a search finds for the same factors shuffled among M's images (its chance level: with thousands
    of rules, small slices fit labels that mean nothing).

    Args:
        slices: the round's slices (find_slices' columns); table: slice_table of the pool (index = image id).
        m_ids: the images of M; factors_of_pool: image id -> ';'-joined truth factors ('' for none).
    Returns:
        factors, factors_recovered_top10 (also as slices_factors_recovered), recovered (their names) and
        :func:`madseg.slices.hindsight_bound`'s keys.
    """
    factors = factor_names(factors_of_pool)
    m_factors = factors_of_pool.reindex(m_ids).fillna("")
    got = factors_recovered(slices, m_factors, factors, top=10)
    bound = hindsight_bound(table, table.index.isin(m_ids), m_factors, factors, seed=seed)
    return {
        "factors": len(factors),
        "factors_recovered_top10": len(got),
        "slices_factors_recovered": len(got),  # the same count under the name the issue tracks
        "recovered": got,
        **bound,
    }
