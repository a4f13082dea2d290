"""validity: measure the method against the demo world's hidden truth (never read by mining or selection).

Writes metrics/mining_precision.json (share of M on which f_t^(0) is truly wrong, beside the entropy and random
strategies at the same budget) and metrics/validity.json (each f_t^(i) on the held-out D_eval: all, corner cases,
per factor; T0; the gain from f_t^(0) to the last target; and the study's cross-seed margins of MAD over entropy
and random, from metrics/study.json), and metrics/slices.json (the truth factors the final round's top slices
recover).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from madseg import paths
from madseg.annotation.aggregation import estimate
from madseg.annotation.simulated import annotator_names
from madseg.config import Params
from madseg.device import resolve_device
from madseg.inference import predict_images
from madseg.io.atomic import read_json, write_json
from madseg.io.images import read_mask, read_rgb
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.metrics import confusion_matrix
from madseg.mining import entropy_candidates, random_candidates
from madseg.models.predictors import load_predictor
from madseg.slices import factors_recovered, hindsight_bound, slice_table
from madseg.validity import (
    factor_names,
    factor_shares,
    group_scores,
    pairwise_disagreement,
    read_pool_factors,
    truly_wrong_fraction,
)

log = logging.getLogger(__name__)
STUDY = paths.METRICS / "study.json"  # written by scripts/validity_study.py (outside CI: about an hour)
STUDY_KEYS = ("seeds", "mad_minus_entropy", "mad_minus_random", "mad_minus_entropy_sd", "mad_minus_random_sd",
              "competition.mad_minus_entropy", "competition.mad_minus_random")  # fmt: skip
# written by scripts/validity_study.py --options: the recipes beyond the paper's, side by side
STUDY_OPTIONS = paths.METRICS / "study_options.json"
OPTION_FIGURES = ("corner_miou_gain", "t0_drop", "d_eval_miou", "gain.low_contrast", "gain.colour_shift",
                  "mad_minus_entropy", "mad_minus_random")  # fmt: skip


def run(params: Params) -> None:
    classes = params.dataset.class_list()
    _disagreement(params, classes)
    _mining_precision(params, classes)
    pool_factors = read_pool_factors(params.annotation.simulated.truth_dir)
    _eval_pool_scores(params, classes, pool_factors)
    _slices_recovery(params, pool_factors)


def _disagreement(params: Params, classes) -> None:
    """Mean pairwise 1 - mIoU between all pretrained models on normal vs corner-case pool images."""
    kinds = read_csv(
        Path(params.annotation.simulated.truth_dir) / "factors.csv", required=["image_id", "kind"]
    ).set_index("image_id")["kind"]
    stores = {"target": PredictionStore(paths.target_predictions("0"))}
    stores |= {
        name: PredictionStore(paths.competitor_predictions(name)) for name in params.models.competitors
    }
    names = list(stores)
    aligned = zip(*(s.iter_shards() for s in stores.values()), strict=True)
    out: dict = pairwise_disagreement(aligned, names, kinds, classes.num_classes)
    out["models"] = names
    write_json(paths.METRICS / "disagreement.json", out)
    log.info("mean pairwise 1 - mIoU between models: normal %.3f, corner %.3f",
             out["mean_pairwise_distance.normal"], out["mean_pairwise_distance.corner"])  # fmt: skip


def _mining_precision(params: Params, classes) -> None:
    truth = read_csv(
        Path(params.annotation.simulated.truth_dir) / "factors.csv", required=["image_id", "kind"]
    )
    kinds = dict(zip(truth["image_id"], truth["kind"], strict=True))
    store = PredictionStore(paths.target_predictions("0"))
    m = read_csv(paths.mining_dir("0") / "M.csv", required=["image_id"])
    stats = store.stats()
    sets = {
        "mad": m["image_id"].tolist(),
        "entropy": entropy_candidates(stats, len(m), classes)["image_id"].tolist(),
        "random": random_candidates(stats, len(m), classes, seed=params.mining.seed)["image_id"].tolist(),
    }
    wanted = sorted({i for ids in sets.values() for i in ids})
    maps = store.read_maps(wanted)
    masks = {
        i: read_mask(Path(params.annotation.simulated.truth_dir) / "masks" / f"{i}.png", classes)
        for i in wanted
        if kinds.get(i) != "ood"
    }
    out: dict[str, float | int | None] = {}
    for name, ids in sets.items():
        for key, value in truly_wrong_fraction(ids, maps, masks, kinds, classes.num_classes).items():
            out[f"{name}.{key}"] = value
    out["mad"] = out["mad.wrong_share"]
    out["entropy"] = out["entropy.wrong_share"]
    out["random"] = out["random.wrong_share"]
    write_json(paths.METRICS / "mining_precision.json", out)
    log.info("share of the candidates on which f_t^(0) is truly wrong: mad %.3f entropy %.3f random %.3f",
             out["mad"], out["entropy"], out["random"])  # fmt: skip


def _eval_pool_scores(params: Params, classes, pool_factors: pd.Series) -> None:
    factors = read_csv(
        Path(params.evaluation.eval_pool) / "truth" / "factors.csv",
        required=["image_id", "name", "kind", "factors"],
    )
    factors["factors"] = factors["factors"].fillna("")
    images = [
        read_rgb(Path(params.evaluation.eval_pool) / "images" / f"{name}.jpg") for name in factors["name"]
    ]
    truth = [
        read_mask(Path(params.evaluation.eval_pool) / "truth" / "masks" / f"{i}.png", classes)
        for i in factors["image_id"]
    ]
    k = classes.num_classes
    rows, metrics = [], {}
    for key in params.rounds:
        predictor = load_predictor(
            paths.target_checkpoint(key), classes=classes, device=resolve_device(params.device)
        )
        pred = predict_images(predictor, images,
                              factors["image_id"].tolist()).maps  # fmt: skip
        cms = np.stack([confusion_matrix(t, p, k) for t, p in zip(truth, pred, strict=True)])
        for group, (images_in, score) in group_scores(cms, factors).items():
            rows.append({"round": int(key), "group": group, "images": images_in, "miou": score})
            metrics[f"target_{key}.{group}"] = score
        metrics[f"target_{key}.T0"] = _t0(params, key)
    first, last = "0", max(params.rounds, key=int)
    metrics["corner_miou_gain"] = 100 * (metrics[f"target_{last}.corner"] - metrics[f"target_{first}.corner"])
    metrics["normal_miou_change"] = 100 * (
        metrics[f"target_{last}.normal"] - metrics[f"target_{first}.normal"]
    )
    metrics["t0_drop"] = 100 * (metrics[f"target_{first}.T0"] - metrics[f"target_{last}.T0"])
    for factor in sorted(k.split(".factor.")[1] for k in metrics if k.startswith(f"target_{last}.factor.")):
        metrics[f"gain.{factor}"] = 100 * (
            metrics[f"target_{last}.factor.{factor}"] - metrics[f"target_{first}.factor.{factor}"]
        )
    # the share of the images the final target was fine-tuned on (S^(1..n)) carrying each factor of the pool
    s_all = read_csv(
        paths.annotations_dir(max(params.finetunes, key=int)) / "S_all.csv", required=["image_id"]
    )
    metrics |= {f"share_in_S.{f}": v for f, v in factor_shares(pool_factors, s_all["image_id"]).items()}
    precision = pd.read_json(paths.METRICS / "mining_precision.json", typ="series")
    metrics["precision_ratio_vs_random"] = (
        float(precision["mad"] / precision["random"]) if precision["random"] else None
    )
    metrics |= _study_margins()
    metrics["aggregation.bias_rmse"] = _rater_bias_rmse(params)
    write_csv(paths.METRICS / "validity_eval_pool.csv", pd.DataFrame(rows))
    write_json(paths.METRICS / "validity.json", metrics)
    log.info("D_eval corner mIoU %+.1f points from f_t^(0) to f_t^(%s); T0 drop %.1f points",
             metrics["corner_miou_gain"], last, metrics["t0_drop"])  # fmt: skip


def _slices_recovery(params: Params, pool_factors: pd.Series) -> None:
    """How many of the pool's truth factors the final round's 10 top slices recover (metrics/slices.json), beside
    how many a rule of the slices' own vocabulary could isolate when chosen with the truth (the gap to that is the
    finder's), and how many such a search finds for the same factors shuffled among M's images (its chance level:
    with thousands of rules, small slices fit labels that mean nothing)."""
    final = max(params.rounds, key=int)
    factors = factor_names(pool_factors)
    m = read_csv(paths.mining_dir(final) / "M.csv", required=["image_id"])["image_id"]
    m_factors = pool_factors.reindex(m).fillna("")
    slices = read_csv(paths.slices_dir(final) / "slices.csv", required=["rule", "group_ids"])
    got = factors_recovered(slices, m_factors, factors, top=10)
    table = slice_table(read_csv(paths.POOL_ATTRIBUTES, required=["id"]).set_index("id"),
                        PredictionStore(paths.target_predictions(final)).stats(), params.dataset.class_list().names)  # fmt: skip
    bound = hindsight_bound(table, table.index.isin(m), m_factors, factors, seed=params.seed)
    write_json(paths.METRICS / "slices.json",
               {"round": int(final), "factors": len(factors), "factors_recovered_top10": len(got), "recovered": got,
                **bound})  # fmt: skip
    log.info("the final round's 10 top slices recover %d of %d truth factors (%s); rules chosen with the truth "
             "could isolate %d (%.1f for shuffled factors)", len(got), len(factors), got,
             bound["factors_describable_in_hindsight"], bound["factors_describable_shuffled"])  # fmt: skip


def _rater_bias_rmse(params: Params) -> float | None:
    """RMSE between the rater model's biases, fitted on every round's ratings, and the simulated annotators'
    planted biases (both measured from the raters' average); None when the raters are people."""
    sim = params.annotation.simulated
    if params.annotation.backend != "simulated":
        return None
    scores = pd.concat([read_csv(paths.annotations_dir(k) / "scores.csv", required=["image_id", "annotator", "score"])
                        for k in params.rounds if (paths.annotations_dir(k) / "scores.csv").exists()])  # fmt: skip
    fitted = estimate(scores).bias
    names = annotator_names(params.annotation.annotators_per_task)
    planted = np.array(sim.bias[: len(names)], dtype=float)  # annotator sim<n> has bias[n]
    error = fitted.reindex(names).to_numpy(dtype=float) - (planted - planted.mean())
    return float(np.sqrt(np.mean(error**2)))


def _study_margins() -> dict:
    """The cross-seed margins of scripts/validity_study.py (metrics/study.json), the paper's recipe under the
    same names as the options, and each option's figures (metrics/study_options.json); None until run."""
    study = read_json(STUDY) if STUDY.exists() else {}
    options = read_json(STUDY_OPTIONS) if STUDY_OPTIONS.exists() else {}
    out = {key: study.get(key) for key in STUDY_KEYS}
    out["paper.corner_miou_gain"] = study.get("mad.corner_miou_gain")
    out["paper.mad_minus_entropy"] = study.get("mad_minus_entropy")
    for option in sorted({key.split(".")[0] for key in options if key.endswith(".seeds")}):
        for figure in OPTION_FIGURES:
            for suffix in ("", "_sd"):
                out[f"options.{option}.{figure}{suffix}"] = options.get(f"{option}.{figure}{suffix}")
    return out


def _t0(params: Params, round_key: str) -> float:
    """f_t^(i)'s T0 mIoU as the fine-tunes measured it, bit for bit what evaluate@i reports (so validity need
    not wait for the evaluations): fine-tune i measures f_t^(i) before and f_t^(i+1) after."""
    if round_key in params.finetunes:
        return float(read_json(paths.finetune_metrics(round_key))["t0_miou_before"])
    before = [key for key, spec in params.finetunes.items() if spec.next == round_key]
    if not before:
        raise ValueError(
            "validity measures what fine-tuning changed, and params.yaml has no fine-tuning round"
        )
    return float(read_json(paths.finetune_metrics(before[0]))["t0_miou_after"])
