"""Set scores, bootstrap intervals and the Table-1 layout."""

import numpy as np
import pytest

from madseg.evaluation import (
    bootstrap_miou,
    bootstrap_miou_difference,
    per_image_confusions,
    score_set,
    table1,
    table_markdown,
)
from madseg.metrics import confusion_matrix, mean_iou


def test_score_set_pools_pixels_and_averages_images():
    truth = {"a": np.array([[0, 1], [1, 1]], np.uint8), "b": np.array([[0, 0], [0, 2]], np.uint8)}
    pred = {"a": np.array([[0, 1], [1, 1]], np.uint8), "b": np.array([[0, 0], [0, 0]], np.uint8)}
    cms = per_image_confusions(pred, truth, ["a", "b"], 3)
    scores = score_set(cms, ["bg", "x", "y"], n_boot=200, seed=0)
    pooled = confusion_matrix(np.stack([truth["a"], truth["b"]]), np.stack([pred["a"], pred["b"]]), 3)
    assert scores["miou"] == pytest.approx(mean_iou(pooled))
    # image a is perfect (1.0); image b: bg IoU 3/4, class y IoU 0 -> 0.375
    assert scores["image_miou"] == pytest.approx((1.0 + 0.375) / 2)
    assert scores["iou.y"] == 0.0 and scores["n_images"] == 2
    assert scores["miou_ci_low"] <= scores["miou"] <= scores["miou_ci_high"]


def test_per_image_confusions_names_the_bad_image():
    with pytest.raises(ValueError, match="no prediction for image b"):
        per_image_confusions({}, {"b": np.zeros((2, 2), np.uint8)}, ["b"], 2)
    with pytest.raises(ValueError, match="image c"):
        per_image_confusions({"c": np.zeros((2, 3), np.uint8)}, {"c": np.zeros((2, 2), np.uint8)}, ["c"], 2)


def test_bootstrap_interval_narrows_with_more_images_and_is_seeded():
    rng = np.random.default_rng(0)

    def cms(n):
        return np.stack([confusion_matrix(rng.integers(0, 3, 64), rng.integers(0, 3, 64), 3) for _ in range(n)])

    small, large = cms(10), cms(400)
    lo_s, hi_s = bootstrap_miou(small, 500, seed=1)
    lo_l, hi_l = bootstrap_miou(large, 500, seed=1)
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_miou(small, 500, seed=1) == (lo_s, hi_s)


def test_paired_bootstrap_of_a_difference_cancels_shared_difficulty():
    rng = np.random.default_rng(2)
    truth = [rng.integers(0, 3, 64) for _ in range(30)]
    a = np.stack([confusion_matrix(t, t, 3) for t in truth])  # always right
    b = np.stack([confusion_matrix(t, np.where(rng.random(64) < 0.3, 0, t), 3) for t in truth])
    lo, hi = bootstrap_miou_difference(a, b, 500, seed=1)
    assert 0 < lo <= mean_iou(a.sum(0)) - mean_iou(b.sum(0)) <= hi
    assert bootstrap_miou_difference(b, b, 200, seed=1) == (0.0, 0.0)  # a model against itself: no spread
    with pytest.raises(ValueError, match="different sets"):
        bootstrap_miou_difference(a, b[:5], 10, seed=1)


def test_table1_shape_and_markdown():
    rounds = {
        "0": {"target.T0.miou": 0.8, "target.T.miou": 0.5, "unet.T0.miou": 0.7, "unet.T.miou": 0.4},
        "1": {"target.T0.miou": 0.81, "target.T.miou": 0.6, "unet.T0.miou": 0.7, "unet.T.miou": 0.3},
    }
    table = table1(rounds, ["target", "unet"])
    assert list(table.columns) == ["model", "round 0 T0", "round 0 T1", "round 1 T0", "round 1 T2"]
    assert table.loc[0, "round 1 T2"] == 0.6
    md = table_markdown(table)
    assert "| target | 80.0 | 50.0 | 81.0 | 60.0 |" in md


def test_ranking_stability_is_one_when_every_prefix_ranks_alike():
    from madseg.evaluation import ranking_stability, stable_from

    def cms(quality, n=12):
        out = np.zeros((n, 2, 2), np.int64)
        out[:, 0, 0] = out[:, 1, 1] = quality
        out[:, 0, 1] = 10 - quality
        return out

    stable = ranking_stability({"a": cms(9), "b": cms(6), "c": cms(3)}, k_min=4)
    assert stable["k"].tolist() == list(range(4, 13)) and (stable["srcc"] == 1.0).all()
    # model b is worst on the first half and best overall on the second: early prefixes disagree
    b = cms(9)
    b[:6] = cms(1)[:6]
    flipped = ranking_stability({"a": cms(8), "b": b, "c": cms(3)}, k_min=2)
    assert flipped["srcc"].iloc[0] < 1.0 and flipped["srcc"].iloc[-1] == 1.0
    assert stable_from(flipped, 0.99) == flipped.loc[flipped["srcc"] >= 0.99, "k"].min()
