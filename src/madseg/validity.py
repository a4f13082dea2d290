"""Hidden-truth checks of a candidate set: on what share of it is the target truly wrong?

Reads the demo world's truth, so it is for measuring the method only; mining and selection never call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from madseg.metrics import image_miou

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
