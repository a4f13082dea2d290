"""scripts/failure_detection.py's AUROC: planted answers and the pairwise definition it stands for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("failure_detection", ROOT / "scripts" / "failure_detection.py")
detection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(detection)


def test_auroc_plants_perfect_reversed_and_tied_rankings():
    wrong = np.array([False, False, True, True])
    assert detection.auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0
    assert detection.auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 0.0
    assert detection.auroc(np.full(4, 0.5), wrong) == 0.5


def test_auroc_is_the_share_of_failure_success_pairs_ranked_right():
    rng = np.random.default_rng(0)
    score, wrong = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3  # ties on purpose
    pos, neg = score[wrong], score[~wrong]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert np.isclose(detection.auroc(score, wrong), pairs)
