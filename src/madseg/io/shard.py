"""One shard of a prediction store in memory, and the area-fraction rule its ``area`` field follows.

Dependency-free (numpy only), so that the pure library (mining, validity) can take shards without importing the
store's file handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def area_fractions(maps: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """The area fraction of every class in each label map: the one rule of what an area fraction is.

    Args:
        maps: N (H, W) integer label maps (any sizes), values in [0, 256).
        num_classes: K.
    Returns:
        (N, K) float64: pixels of class k / (H * W). Values outside [0, K) (ignored pixels, 255) count in the
        denominator only; rejecting ids outside the class list is the caller's business.
    """
    out = np.zeros((len(maps), num_classes), np.float64)
    for i, m in enumerate(maps):
        counts = np.bincount(m.reshape(-1).astype(np.int64), minlength=256)
        out[i] = counts[:num_classes] / float(m.size)
    return out


@dataclass
class Shard:
    """One shard's contents. ``maps[i]`` is image ``ids[i]``'s (H, W) uint8 label map."""

    ids: list[str]
    maps: list[np.ndarray]
    area: np.ndarray  # (N, K) float32: predicted area fraction per class (see area_fractions)
    entropy: np.ndarray  # (N,) float32: mean pixel entropy of the softmax (nats)
    maxprob: np.ndarray  # (N,) float32: mean max softmax probability
    # the maps end to end and each one's start: set when decoded (the maps are views into it), else built once
    _pixels: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """All maps as one flat (sum H*W,) uint8 array and their (N + 1,) int64 offsets into it."""
        if self._pixels is None:
            sizes = np.array([m.size for m in self.maps], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            flat = np.concatenate([m.reshape(-1) for m in self.maps]) if self.maps else np.zeros(0, np.uint8)
            self._pixels = (flat, offsets)
        return self._pixels

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.maps) != n or self.area.shape[0] != n or self.entropy.shape != (n,) or self.maxprob.shape != (n,):
            raise ValueError(
                f"shard fields disagree on the image count: ids {n}, maps {len(self.maps)}, "
                f"area {self.area.shape}, entropy {self.entropy.shape}, maxprob {self.maxprob.shape}"
            )
        for i, m in enumerate(self.maps):
            if m.ndim != 2 or m.dtype != np.uint8:
                raise ValueError(f"map of image {self.ids[i]} must be (H, W) uint8, got {m.shape} {m.dtype}")


@dataclass
class EmbeddingShard:
    """One shard of an embedding store: ``features[i]`` is image ``ids[i]``'s feature vector."""

    ids: list[str]
    features: np.ndarray  # (N, D) float16: the encoder's global-average-pooled features

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] != len(self.ids):
            raise ValueError(f"features must be (N, D) for {len(self.ids)} ids, got {self.features.shape}")
