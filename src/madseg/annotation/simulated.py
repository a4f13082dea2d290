"""Simulated annotators: answers from the demo world's hidden truth, so the loop runs with no human.

Not an oracle. A rating is the true per-image mIoU of the round's target mapped to a level 1..5 by
``thresholds``, plus the annotator's ``bias`` and Gaussian noise (``noise_sd`` levels), rounded and clipped to
1..5. A truly out-of-domain image is vetoed with probability ``ood_veto_prob`` (< 1), any other image by
mistake with ``false_veto_rate``. Every draw is seeded by (seed, round, image, annotator), so the answers do
not depend on the order or the number of images asked. Pixel labels are the true masks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.config import SimulatedAnnotators
from madseg.io.images import read_mask
from madseg.io.tables import read_csv
from madseg.labels import ClassList
from madseg.metrics import image_miou

from .tasks import SCORE_COLUMNS


def annotator_names(n: int) -> list[str]:
    return [f"sim{a}" for a in range(n)]


def _rng(seed: int, round_key: str, image_id: str, annotator: str) -> np.random.Generator:
    # a hash of the tuple, not a running generator: the answer for one (image, annotator) is independent of
    # the others, so adding or reordering images never changes existing answers
    digest = hashlib.sha256(f"{seed}|{round_key}|{image_id}|{annotator}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def quality_level(miou: float, thresholds: Sequence[float]) -> int:
    """The noiseless level 1..5: 1 + the number of thresholds that ``miou`` reaches."""
    if len(thresholds) != 4 or list(thresholds) != sorted(thresholds):
        raise ValueError(f"thresholds must be 4 increasing mIoU values, got {list(thresholds)}")
    return 1 + int(np.searchsorted(np.asarray(thresholds), miou, side="right"))


def simulate_ratings(
    miou: Mapping[str, float],
    ood: set[str] | frozenset[str],
    params: SimulatedAnnotators,
    *,
    annotators: int,
    round_key: str,
) -> pd.DataFrame:
    """Ratings of every image in ``miou`` by ``annotators`` simulated annotators.

    Args:
        miou: image_id -> true mIoU of the target's prediction against the hidden truth.
        ood: the truly out-of-domain image ids.
    Returns:
        SCORE_COLUMNS (lead_time_s NaN: nothing was timed), sorted by image_id, annotator.
    """
    if annotators > len(params.bias):
        raise ValueError(f"{annotators} simulated annotators need as many biases, got bias {list(params.bias)}")
    if not 0 <= params.ood_veto_prob < 1:
        raise ValueError(f"ood_veto_prob must lie in [0, 1) (not an oracle), got {params.ood_veto_prob}")
    names = annotator_names(annotators)
    rows = []
    for image in sorted(miou):
        level = quality_level(miou[image], params.thresholds)
        for name, bias in zip(names, params.bias, strict=False):
            rng = _rng(params.seed, round_key, image, name)
            noisy = level + bias + rng.normal(0.0, params.noise_sd)
            score = int(np.clip(np.rint(noisy), 1, 5))
            veto = rng.random() < (params.ood_veto_prob if image in ood else params.false_veto_rate)
            rows.append((image, name, score, bool(veto), float("nan")))
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    return table.astype({"score": "int64", "out_of_domain": "bool", "lead_time_s": "float64"})


def true_miou(
    predictions: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray], num_classes: int
) -> dict[str, float]:
    """image_id -> mIoU of the (H, W) uint8 prediction against the (H, W) uint8 truth (ignore 255 dropped)."""
    missing = sorted(set(predictions) - set(truth))
    if missing:
        raise ValueError(f"no truth for images {missing[:5]}")
    return {i: image_miou(predictions[i], truth[i], num_classes) for i in sorted(predictions)}


class HiddenTruth:
    """Reads a pool's truth (the demo world's, or a user's labelled pool): ``masks/<image_id>.png`` and
    ``factors.csv`` (image_id and kind columns)."""

    def __init__(self, truth_dir: str | Path, classes: ClassList):
        self.truth_dir = Path(truth_dir)
        self.classes = classes

    def kinds(self) -> dict[str, str]:
        factors = read_csv(self.truth_dir / "factors.csv", required=["image_id", "kind"])
        return dict(zip(factors["image_id"].astype(str), factors["kind"].astype(str), strict=True))

    def ood_ids(self) -> set[str]:
        return {i for i, k in self.kinds().items() if k == "ood"}

    def masks(self, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {i: read_mask(self.truth_dir / "masks" / f"{i}.png", self.classes) for i in sorted(image_ids)}
