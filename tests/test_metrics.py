"""The one confusion matrix and everything derived from it: properties, hand-computed cases, a naive
reference."""

import numpy as np
import pytest

from madseg.labels import IGNORE_INDEX
from madseg.metrics import (
    batch_confusion,
    confusion_matrix,
    image_miou,
    iou_per_class,
    mean_iou,
    miou_from_batch,
    pixel_accuracy,
    pixel_accuracy_from_batch,
)


def naive_miou(a, b, k):
    ious = []
    for c in range(k):
        inter = union = 0
        for x, y in zip(a.ravel(), b.ravel(), strict=True):
            if x == IGNORE_INDEX or y == IGNORE_INDEX:
                continue
            inter += (x == c) and (y == c)
            union += (x == c) or (y == c)
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


def test_identical_maps_score_one_and_distance_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (16, 16)), rng.integers(0, 4, (16, 16))
    assert image_miou(a, a, 4) == 1.0
    assert image_miou(a, b, 4) == pytest.approx(image_miou(b, a, 4))


def test_hand_computed_case_and_absent_classes_are_excluded():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # class 0: 1/2, class 1: 2/3, class 2 absent from both -> excluded, not NaN
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3) / 2)
    assert np.isnan(iou_per_class(cm)[2])
    assert pixel_accuracy(cm) == 0.75


def test_ignored_pixels_are_dropped():
    truth = np.array([[0, IGNORE_INDEX, 1]])
    pred = np.array([[0, 1, IGNORE_INDEX]])
    assert confusion_matrix(truth, pred, 2).sum() == 1


def test_matches_naive_reference_on_random_maps():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 5, (12, 9))
        b = np.where(rng.random((12, 9)) < 0.1, IGNORE_INDEX, rng.integers(0, 5, (12, 9)))
        assert image_miou(a, b, 5) == pytest.approx(naive_miou(a, b, 5))


def test_batch_confusion_equals_per_image_matrices():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 3, (6, 50)), rng.integers(0, 3, (6, 50))
    cms = batch_confusion(a, b, 3)
    for i in range(6):
        assert (cms[i] == confusion_matrix(a[i], b[i], 3)).all()
    assert miou_from_batch(cms) == pytest.approx([mean_iou(c) for c in cms])
    assert pixel_accuracy_from_batch(cms) == pytest.approx([pixel_accuracy(c) for c in cms])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match=r"\[7\]"):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 7), 3)
