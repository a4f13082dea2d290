"""Hidden-truth checks of the method: on what share of a candidate set is the target truly wrong, how much do
the models disagree by kind of image, and what does each target score per group and factor of a held-out pool.

Reads a pool's truth, so it is for measuring the method only; mining and selection never call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.io.store import Shard
from madseg.io.tables import read_csv
from madseg.metrics import image_miou, mean_iou
from madseg.mining import shard_pair_stats

OOD = "ood"


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
    aligned: Iterable[Sequence[Shard]], names: Sequence[str], kinds: pd.Series, num_classes: int
) -> dict[str, float | None]:
    """Mean pairwise 1 - mIoU between models per kind of image (normal, corner, ood).

    ``aligned`` yields, per shard, one Shard per model of ``names`` (the same ids); ``kinds`` maps an image id
    to its kind (ids it lacks count as unknown).
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


def read_pool_factors(truth_dir: str | Path) -> pd.Series:
    """The pool's truth factors from ``truth_dir``/factors.csv: image id -> ';'-joined factor names ('' for none)."""
    truth = read_csv(Path(truth_dir) / "factors.csv", required=["image_id", "factors"])
    return truth.set_index("image_id")["factors"].fillna("").astype(str)


def factor_names(named: pd.Series) -> list[str]:
    """The distinct factors of ';'-joined factor cells ('' for none), sorted."""
    return sorted(set(";".join(named.fillna("")).split(";")) - {""})


def factor_shares(named: pd.Series, ids: Sequence[str]) -> dict[str, float]:
    """Per factor of ``named`` (image id -> ';'-joined factors), the share of ``ids`` carrying it (0 if none)."""
    carried = named.reindex(list(ids)).fillna("").str.split(";")
    return {f: float(carried.map(lambda fs, f=f: f in fs).mean()) if len(carried) else 0.0
            for f in factor_names(named)}  # fmt: skip


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
