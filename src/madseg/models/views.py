"""Views: the target under a transformation g, a competitor of its own (self-consistency).

MAD finds where models of different designs disagree, so a failure that every model shares is almost never
proposed. The target's prediction on g(x), mapped back where g moves pixels, disagrees with its prediction on x
exactly where the target is not robust to g, whatever the other models do. A view's predictions go into a
prediction store like a competitor's and are mined with the same machinery; they depend on the target, so they
are recomputed every round.

Photometric views change colours only: ``contrast_stretch`` (luma's 1st-99th percentile to the full range),
``greyscale``, ``channel_swap`` (RGB -> BGR), ``gamma_0.5`` and ``gamma_2``. Geometric ones move pixels and are
mapped back: ``hflip`` (mirrored, and its map mirrored back) and ``half_scale`` (half the resolution; its map is
predicted at the image's own size, as every map is).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


def _contrast_stretch(rgb: np.ndarray) -> np.ndarray:
    luma = rgb.astype(np.float32) @ _LUMA
    lo, hi = np.percentile(luma, [1, 99])
    scale = 255.0 / max(float(hi - lo), 1.0)
    return np.clip((rgb.astype(np.float32) - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def _greyscale(rgb: np.ndarray) -> np.ndarray:
    luma = np.clip(rgb.astype(np.float32) @ _LUMA + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


def _gamma(g: float) -> Callable[[np.ndarray], np.ndarray]:
    lut = np.clip((np.arange(256) / 255.0) ** g * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lambda rgb: lut[rgb]


def _half_scale(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w / 2)), max(1, round(h / 2)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


def _identity(label_map: np.ndarray) -> np.ndarray:
    return label_map


# name -> (transformation of an (H, W, 3) uint8 image, the map of g(x) back onto x's pixels)
_VIEWS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "contrast_stretch": (_contrast_stretch, _identity),
    "greyscale": (_greyscale, _identity),
    "channel_swap": (lambda rgb: np.ascontiguousarray(rgb[..., ::-1]), _identity),
    "gamma_0.5": (_gamma(0.5), _identity),
    "gamma_2": (_gamma(2.0), _identity),
    "hflip": (lambda rgb: np.ascontiguousarray(rgb[:, ::-1]), lambda m: np.ascontiguousarray(m[:, ::-1])),
    "half_scale": (_half_scale, _identity),
}
VIEWS = tuple(_VIEWS)
PREFIX = "self_"  # a view's name as a competitor: self_<view>


def check_views(names: Sequence[str]) -> None:
    """Raise ValueError naming an unknown or repeated view."""
    unknown = [n for n in names if n not in _VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; views: {', '.join(VIEWS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a view is listed twice: {list(names)}")


def apply_view(name: str, rgb: np.ndarray) -> np.ndarray:
    """g(x) of an (H, W, 3) uint8 image: (H', W', 3) uint8."""
    check_views([name])
    return _VIEWS[name][0](rgb)


def competitor_name(view: str) -> str:
    return PREFIX + view


class ViewPredictor:
    """A predictor seeing every image through a view: maps of g(x), mapped back onto x (H, W)."""

    needs_pixels = True

    def __init__(self, predictor, view: str) -> None:
        check_views([view])
        if not predictor.needs_pixels:
            raise ValueError("a view needs a model that predicts from pixels, not a folder of predictions")
        self.inner, self.view = predictor, view
        self.policy, self.mean, self.std = predictor.policy, predictor.mean, predictor.std

    def prepare(self, image: np.ndarray):
        """(H, W, 3) uint8 -> the model's input tensor of g(image)."""
        return self.inner.prepare(apply_view(self.view, image))

    def infer(self, tensors, shapes: Sequence[tuple[int, int]]):
        """Prepared g(x) tensors of images whose own sizes are ``shapes`` -> a Prediction with maps on x's
        pixels."""
        pred = self.inner.infer(tensors, shapes)
        back = _VIEWS[self.view][1]
        return dataclasses.replace(pred, maps=[back(m) for m in pred.maps])

    def predict(self, images: Sequence[np.ndarray], ids: Sequence[str] = ()):
        return self.infer([self.prepare(im) for im in images], [im.shape[:2] for im in images])
