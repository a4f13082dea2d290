"""Cheap per-image attributes of the pool, from decoded arrays: what the failure slices (:mod:`madseg.slices`)
are described in, never from any truth.

:func:`image_attributes` measures an image's pixels (brightness, contrast, colour, sharpness, edges, noise,
size), :func:`prediction_attributes` the target's prediction (its main class and that class's area). The
attributes stage decodes the pool and calls these once per index, so that editing the slice finder does not
decode the pool again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

IMAGE_ATTRIBUTES = (
    "brightness",
    "contrast",
    "rms_contrast",
    "colourfulness",
    "colour_cast",
    "saturation",
    "sharpness",
    "edge_density",
    "oblique_edges",
    "noise",
    "megapixels",
    "aspect",
)
EDGE = 0.04  # a gradient of 10 grey levels per pixel (after a sigma-1 blur) is an edge
TAN_22_5 = float(np.tan(np.pi / 8))  # an edge is oblique within 22.5 degrees of a diagonal


def image_attributes(rgb: np.ndarray) -> dict[str, float]:
    """Cheap attributes of an (H, W, 3) uint8 image, each in a fixed unit so that pools of any size compare.

    brightness: mean luma in [0, 1]; contrast: luma 1st-99th percentile range in [0, 1]; rms_contrast: luma
    standard deviation; colourfulness: Hasler and Suesstrunk's metric / 100; colour_cast: the length of the
    mean (red-green, yellow-blue) opponent colour; saturation: mean max - min over the channels; sharpness:
    mean absolute Laplacian of luma; edge_density: the share of pixels on an edge and oblique_edges: the share
    of gradient energy within 22.5 degrees of a diagonal, both measured after a sigma-1 Gaussian blur so that
    pixel noise does not count as structure; noise: Immerkaer's estimate of Gaussian noise sigma; megapixels;
    aspect: width / height. Luma and colour in [0, 1] units.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    img = rgb.astype(np.float32) / 255.0
    luma = img @ np.asarray([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(luma, [1, 99])
    rg, yb = img[..., 0] - img[..., 1], 0.5 * (img[..., 0] + img[..., 1]) - img[..., 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    h, w = luma.shape
    sharpness = noise = edge_density = oblique_edges = 0.0
    if min(h, w) >= 3:
        lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
        # Immerkaer (1996): the mask [1 -2 1; -2 4 -2; 1 -2 1] cancels image structure, leaves the noise
        m = (
            luma[:-2, :-2]
            + luma[:-2, 2:]
            + luma[2:, :-2]
            + luma[2:, 2:]
            - 2 * (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:])
            + 4 * luma[1:-1, 1:-1]
        )
        sharpness = float(np.abs(lap).mean())
        noise = float(np.sqrt(np.pi / 2) * np.abs(m).sum() / (6 * (w - 2) * (h - 2)))
        gy, gx = np.gradient(ndimage.gaussian_filter(luma, 1.0))
        ax, ay = np.abs(gx), np.abs(gy)
        energy = gx * gx + gy * gy
        edge_density = float((energy > EDGE * EDGE).mean())
        oblique = np.minimum(ax, ay) > TAN_22_5 * np.maximum(ax, ay)
        oblique_edges = float(energy[oblique].sum() / energy.sum()) if energy.sum() > 0 else 0.0
    return {
        "brightness": float(luma.mean()),
        "contrast": float(hi - lo),
        "rms_contrast": float(luma.std()),
        "colourfulness": float(colourfulness),
        "colour_cast": float(np.hypot(rg.mean(), yb.mean())),
        "saturation": float((img.max(axis=2) - img.min(axis=2)).mean()),
        "sharpness": sharpness,
        "edge_density": edge_density,
        "oblique_edges": oblique_edges,
        "noise": noise,
        "megapixels": h * w / 1e6,
        "aspect": w / h,
    }


def prediction_attributes(area: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The target's predicted main class (the largest foreground area; 'background' if none) and its area.

    ``area``: columns area_<class> for every class (PredictionStore.stats()); the first class is background.
    """
    fg = area[[f"area_{c}" for c in class_names[1:]]].to_numpy()
    main = fg.argmax(axis=1)
    has = fg.max(axis=1) > 0
    names = np.asarray(class_names[1:], dtype=object)
    return pd.DataFrame(
        {
            "main_class": np.where(has, names[main], class_names[0]),
            "main_area": np.where(has, fg.max(axis=1), 0.0),
        },
        index=area.index,
    )
