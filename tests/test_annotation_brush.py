"""Brush RLE <-> label maps: exact round trips, anti-aliased strokes, overlaps, unpainted pixels, errors."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import encode_rle

from madseg.annotation.brush import (
    IGNORE_LABEL,
    decode_alpha,
    encode_layer,
    label_names,
    mask_to_results,
    results_to_mask,
)
from madseg.labels import IGNORE_INDEX, make_class_list

CLASSES = make_class_list("demo")


def _stroke(alpha: np.ndarray, label: str, rid: str = "s") -> dict:
    """A region as the UI writes a stroke: its own RGBA raster with anti-aliased alpha."""
    h, w = alpha.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = alpha
    rle = [int(v) for v in encode_rle(rgba.reshape(-1))]
    return {
        "id": rid,
        "type": "brushlabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
    }


def test_label_names_cover_every_class_and_ignore():
    assert label_names(CLASSES) == [*CLASSES.names, IGNORE_LABEL]


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 64), (37, 50)])
def test_round_trip_is_exact(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.integers(0, CLASSES.num_classes, size=shape).astype(np.uint8)
    mask[rng.random(shape) < 0.1] = IGNORE_INDEX
    results = mask_to_results(mask, CLASSES)
    # one region per class present (background is left unpainted)
    assert sorted(r["value"]["brushlabels"][0] for r in results) == sorted(
        IGNORE_LABEL if v == IGNORE_INDEX else CLASSES.names[v] for v in np.unique(mask) if v != 0
    )
    out = results_to_mask(results, CLASSES, height=shape[0], width=shape[1])
    np.testing.assert_array_equal(out, mask)
    assert out.dtype == np.uint8


def test_layers_are_opaque_in_all_channels():
    layer = np.zeros((4, 5), bool)
    layer[1:3, 2:4] = True
    alpha = decode_alpha(encode_layer(layer), 4, 5)
    np.testing.assert_array_equal(alpha, np.where(layer, 255, 0))


def test_unpainted_pixels_are_background():
    assert results_to_mask([], CLASSES, height=3, width=4).tolist() == [[0] * 4] * 3


def test_anti_aliased_stroke_is_thresholded_and_regions_of_a_label_merge():
    h, w = 6, 10
    ramp = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))  # 0, 28, ..., 255: soft edge left to right
    left = np.zeros((h, w), np.uint8)
    left[:2, :3] = 128  # just over the threshold
    left[4:, :3] = 127  # just under it: not painted
    out = results_to_mask([_stroke(ramp, "disc", "a"), _stroke(left, "disc", "b")], CLASSES, height=h, width=w)
    want = np.where(ramp > 127, 1, 0)
    want[:2, :3] = 1
    np.testing.assert_array_equal(out, want)


def test_overlaps_later_region_wins_and_background_erases():
    h, w = 4, 6
    square = np.zeros((h, w), np.uint8)
    square[:, :4] = 255
    disc = np.zeros((h, w), np.uint8)
    disc[:, 2:] = 255
    eraser = np.zeros((h, w), np.uint8)
    eraser[0, :] = 255
    void = np.zeros((h, w), np.uint8)
    void[3, 5] = 255
    results = [_stroke(square, "square", "1"), _stroke(disc, "disc", "2")]
    np.testing.assert_array_equal(results_to_mask(results, CLASSES, height=h, width=w)[1], [2, 2, 1, 1, 1, 1])
    # the same regions listed the other way round: square on top
    np.testing.assert_array_equal(results_to_mask(results[::-1], CLASSES, height=h, width=w)[1], [2, 2, 2, 2, 1, 1])
    out = results_to_mask(
        [*results, _stroke(eraser, "background", "3"), _stroke(void, IGNORE_LABEL, "4")],
        CLASSES,
        height=h,
        width=w,
    )
    assert out[0].tolist() == [0] * w
    assert out[3, 5] == IGNORE_INDEX


def test_other_controls_are_ignored():
    other = {"type": "choices", "from_name": "rating", "value": {"choices": ["1"]}}
    layer = np.ones((2, 2), np.uint8) * 255
    stroke = _stroke(layer, "star")
    out = results_to_mask([other, stroke, {**stroke, "from_name": "elsewhere"}], CLASSES, height=2, width=2)
    assert (out == CLASSES.index("star")).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"brushlabels": ["unicorn"]}, "exactly one label"),
        ({"brushlabels": ["disc", "star"]}, "exactly one label"),
        ({"format": "polygon"}, "format 'rle'"),
        ({"rle": [1, 2, 3]}, "brush RLE"),
    ],
)
def test_malformed_regions_are_named(change, message):
    stroke = _stroke(np.full((3, 3), 255, np.uint8), "disc", "r7")
    stroke["value"] = {**stroke["value"], **change}
    with pytest.raises(ValueError, match=message) as e:
        results_to_mask([stroke], CLASSES, height=3, width=3, what="task 9")
    assert "task 9" in str(e.value) and "r7" in str(e.value)


def test_size_mismatch_is_an_error():
    stroke = _stroke(np.full((3, 3), 255, np.uint8), "disc")
    with pytest.raises(ValueError, match="3x3 image, expected 4x3"):
        results_to_mask([stroke], CLASSES, height=4, width=3)
    stroke = {**stroke, "original_height": 4}
    with pytest.raises(ValueError, match="holds 9 pixels"):
        results_to_mask([stroke], CLASSES, height=4, width=3)


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="outside the class list"):
        mask_to_results(np.full((2, 2), 9, np.uint8), CLASSES)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_to_results(np.zeros((2, 2, 1), np.uint8), CLASSES)
    with pytest.raises(ValueError, match="reserved"):
        label_names(make_class_list(["background", "ignore"]))
