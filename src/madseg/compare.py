"""`madseg compare`: a MAD competition between any two models (the source paper's Appendix A).

The two models predict a pool of unlabelled images; the images on which they disagree most (per foreground
class and direction, inside the class's area band, exactly as in mining: one model plays the target, the other
the only competitor) are labelled through the annotation backend, and each model is scored there. The model
that keeps a higher mIoU on the other's worst disagreements is the better one — no fixed test set needed.

The command is resumable: predictions are sharded stores that survive an interruption, and with Label Studio
the first call exports the pixel tasks and stops; the next call, once people have labelled them, scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from madseg.evaluation import bootstrap_miou_difference, per_image_confusions, score_set
from madseg.io.store import Shard
from madseg.labels import ClassList
from madseg.metrics import miou_from_batch
from madseg.mining import mine_mad, summarize_m

log = logging.getLogger(__name__)


def competition_set(
    a_shards: Iterable[Shard],
    b_shards: Iterable[Shard],
    bands: np.ndarray,
    classes: ClassList,
    *,
    n: int,
    distance: str = "miou",
    b_name: str = "b",
) -> pd.DataFrame:
    """The images on which models a and b disagree most: per (class, direction) the top-n by distance.

    Args:
        a_shards, b_shards: both models' prediction shards over the same ids, in store order.
        bands: (K, 2) area bands [p_k, q_k] (see madseg.mining.area_bands).
        n: images per (class, direction) group.
        b_name: b's name in the ``competitor`` column.
    Returns:
        One row per image (madseg.mining.M_COLUMNS), sorted by image_id; direction 't' groups were partitioned
        by a's map, 'c' groups by b's. Images on which both maps agree exactly are dropped: labelling them
        cannot separate the two models.
    """
    m = summarize_m(mine_mad(a_shards, {b_name: b_shards}, bands, classes, n3=n, distance=distance))
    return m[m["best_distance"] > 0].reset_index(drop=True)


@dataclass(frozen=True)
class CompetitionResult:
    scores: dict[str, float | int | str]
    per_image: pd.DataFrame  # image_id, miou_a, miou_b


def score_competition(
    ids: Sequence[str],
    a_maps: Mapping[str, np.ndarray],
    b_maps: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    classes: ClassList,
    *,
    names: tuple[str, str] = ("a", "b"),
    n_boot: int = 1000,
    seed: int = 0,
) -> CompetitionResult:
    """Score both models on the labelled competition set.

    Args:
        ids: the competition images (N).
        a_maps, b_maps, labels: id -> (H, W) uint8 maps (labels: 255 = ignore).
        names: how the two models are called in the keys.
    Returns:
        scores: ``<name>.miou``, ``<name>.image_miou``, ``<name>.miou_ci_low/high`` for both models;
        ``miou_difference`` (a - b, points of mIoU x 100) with its paired 95 % bootstrap interval over images;
        ``wins.<name>`` (images where that model's per-image mIoU is higher), ``ties``, ``n_images`` and
        ``winner`` (the name with the higher mIoU, or 'tie').
        per_image: each image's mIoU under both models.
    """
    if len(ids) == 0:
        raise ValueError("the competition set is empty: the two models never disagree inside the area bands")
    k = classes.num_classes
    cms = {
        names[0]: per_image_confusions(a_maps, labels, ids, k),
        names[1]: per_image_confusions(b_maps, labels, ids, k),
    }
    scores: dict[str, float | int | str] = {"n_images": len(ids)}
    for name, cm in cms.items():
        s = score_set(cm, classes.names, n_boot=n_boot, seed=seed)
        scores |= {f"{name}.{key}": s[key] for key in ("miou", "image_miou", "miou_ci_low", "miou_ci_high")}
    per_image = pd.DataFrame(
        {"image_id": list(ids), f"miou_{names[0]}": miou_from_batch(cms[names[0]]),
         f"miou_{names[1]}": miou_from_batch(cms[names[1]])}
    )  # fmt: skip
    diff = per_image[f"miou_{names[0]}"] - per_image[f"miou_{names[1]}"]
    scores[f"wins.{names[0]}"] = int((diff > 0).sum())
    scores[f"wins.{names[1]}"] = int((diff < 0).sum())
    scores["ties"] = int((diff == 0).sum())
    scores["miou_difference"] = 100 * (float(scores[f"{names[0]}.miou"]) - float(scores[f"{names[1]}.miou"]))
    low, high = bootstrap_miou_difference(cms[names[0]], cms[names[1]], n_boot, seed)
    scores["miou_difference_ci_low"], scores["miou_difference_ci_high"] = 100 * low, 100 * high
    d = scores["miou_difference"]
    scores["winner"] = names[0] if d > 0 else names[1] if d < 0 else "tie"
    return CompetitionResult(scores=scores, per_image=per_image)
