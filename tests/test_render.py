"""Overlays: sizes, upscaling, legend, and the rater overlay never showing a competitor's map."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
from PIL import Image

from madseg.labels import make_class_list
from madseg.render import (
    CandidateOverlay,
    blend,
    candidate_pngs,
    png_bytes,
    rater_overlay,
    report_overlay,
    upscale_factor,
)

CLASSES = make_class_list("demo")
DISC, STAR = 1, 6


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)
    target = np.zeros((64, 64), np.uint8)
    target[10:30, 10:30] = DISC
    competitor = target.copy()
    competitor[40:60, 40:60] = STAR  # a class only the competitor predicts
    return image, target, competitor


def colours(im: Image.Image) -> set[tuple[int, int, int]]:
    arr = np.asarray(im.convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(arr, axis=0)}


def test_upscale_factor():
    assert upscale_factor(64, 64) == 3 and upscale_factor(64, 100) == 3
    assert upscale_factor(500, 375) == 1 and upscale_factor(100, 100, min_side=192) == 2


def test_rater_overlay_size_and_legend(scene):
    image, target, _ = scene
    im = rater_overlay(image, target, CLASSES)
    assert im.mode == "RGB" and im.width >= 2 * 192 and im.height > 192  # two upscaled panels + legend
    got = colours(im)
    assert tuple(CLASSES.palette[DISC]) in got  # the legend swatch of the predicted class, exact colour
    assert tuple(CLASSES.palette[STAR]) not in got
    # the upscaled image panel is the image, nearest-neighbour: its top-left 3x3 block is one image pixel
    arr = np.asarray(im)
    ys, _ = np.nonzero((arr == image[0, 0]).all(-1))
    assert len(ys) >= 9


def test_rater_overlay_never_contains_the_competitor(scene):
    image, target, competitor = scene
    assert "competitor" not in " ".join(inspect.signature(rater_overlay).parameters)
    rater = colours(rater_overlay(image, target, CLASSES))
    report = colours(report_overlay(image, target, competitor, CLASSES, "target vs g | star | c", "g"))
    star_blend = tuple(int(v) for v in blend(image, competitor, CLASSES)[50, 50])
    assert tuple(CLASSES.palette[STAR]) in report and star_blend in report
    assert tuple(CLASSES.palette[STAR]) not in rater and star_blend not in rater


def test_report_overlay_has_three_panels_and_caption(scene):
    image, target, competitor = scene
    three = report_overlay(image, target, competitor, CLASSES, "target vs g | disc | t | d=0.5", "g")
    two = report_overlay(image, target, None, CLASSES, "entropy | rank 1")
    assert three.width > two.width >= 2 * 192 and three.width >= 3 * 192
    assert three.height > 192


def test_maps_at_model_resolution_are_resized_with_nearest(scene):
    image, target, _ = scene
    small = target[::2, ::2]  # a 32x32 prediction for a 64x64 image
    assert rater_overlay(image, small, CLASSES).size == rater_overlay(image, target, CLASSES).size


def test_deterministic_png_bytes(scene):
    image, target, competitor = scene
    a = png_bytes(report_overlay(image, target, competitor, CLASSES, "x", "g"))
    b = png_bytes(report_overlay(image, target, competitor, CLASSES, "x", "g"))
    assert a == b and Image.open(io.BytesIO(a)).format == "PNG"


def test_candidate_pngs_are_the_same_drawn_in_processes(scene):
    image, target, competitor = scene
    items = [
        CandidateOverlay(np.roll(image, k, axis=1), np.roll(target, k, axis=0), cmap, "g", f"caption {k}")
        for k, cmap in enumerate([competitor, None, competitor.T.copy(), None, competitor])
    ]
    serial = list(candidate_pngs(items, CLASSES))
    assert serial[1] == (
        png_bytes(rater_overlay(items[1].image, items[1].target_map, CLASSES)),
        png_bytes(report_overlay(items[1].image, items[1].target_map, None, CLASSES, "caption 1")),
    )
    assert len(set(serial)) == len(items)  # each item drawn from its own inputs, in order
    assert list(candidate_pngs(items, CLASSES, workers=2)) == serial


def test_bad_inputs(scene):
    image, target, _ = scene
    bad = target.copy()
    bad[0, 0] = 9
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        rater_overlay(image, bad, CLASSES)
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\) uint8"):
        rater_overlay(image[..., 0], target, CLASSES)
