"""The per-shard kernel: per-image class areas of both models and their distance, vectorised over a shard.

Images of one shard may differ in size; a shard is handled as one stream of pixels, never copied per image, and
the cost per competitor follows the pixels where it differs from the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from madseg.io.shard import Shard
from madseg.labels import IGNORE_INDEX
from madseg.metrics import miou_from_counts

DISTANCES = ("miou", "pixel_accuracy")
# distances are rounded so that equal disagreements tie exactly whatever the summation order that produced
# them (a brute-force reference and the batched computation then rank identically)
DISTANCE_DECIMALS = 12

# images below this many pixels are histogrammed together (one bincount over image-tagged codes); larger ones
# one by one with torch's bincount, which counts uint8 directly instead of widening every pixel to int64
_SMALL_IMAGE_PIXELS = 1 << 16
_CODES_PER_CHUNK = 1 << 22


def check_distance(distance: str) -> None:
    """ValueError unless ``distance`` is one of DISTANCES."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {list(DISTANCES)}")


def image_histograms(flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-image value counts of maps stored end to end.

    Args:
        flat: (sum H*W,) uint8, the maps end to end.
        offsets: (N + 1,) int64, image i is ``flat[offsets[i]:offsets[i + 1]]``.
    Returns:
        (N, 256) int64.
    """
    n = len(offsets) - 1
    sizes = np.diff(offsets)
    out = np.zeros((n, 256), np.int64)
    if n == 0:
        return out
    if sizes.max() >= _SMALL_IMAGE_PIXELS:
        pixels = torch.from_numpy(flat)
        for i in range(n):
            out[i] = torch.bincount(pixels[offsets[i] : offsets[i + 1]], minlength=256).numpy()
        return out
    start = 0
    while start < n:  # chunks of whole images, about _CODES_PER_CHUNK pixels each
        stop = int(np.searchsorted(offsets, offsets[start] + _CODES_PER_CHUNK, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        tags = np.repeat(np.arange(stop - start, dtype=np.int64) << 8, sizes[start:stop])
        codes = tags | flat[offsets[start] : offsets[stop]]
        out[start:stop] = np.bincount(codes, minlength=(stop - start) * 256).reshape(-1, 256)
        start = stop
    return out


def disagreements(a: np.ndarray, b: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels where two models' maps differ.

    Compared eight pixels at a time as uint64 words; only the words that differ are opened, so the cost follows
    the disagreement, not the image size.

    Args:
        a, b: (sum H*W,) uint8, two models' maps end to end over the same images.
        offsets: (N + 1,) int64 image offsets into them.
    Returns:
        image index (D,) int64, a's value (D,) int64 and b's value (D,) int64 of every differing pixel, in pixel
        order.
    """
    whole = len(a) - len(a) % 8
    wa, wb = a[:whole].view(np.uint64), b[:whole].view(np.uint64)
    words = np.flatnonzero(wa != wb)
    pa, pb = wa[words].view(np.uint8), wb[words].view(np.uint8)
    byte = np.flatnonzero(pa != pb)
    pos = words[byte >> 3] * 8 + (byte & 7)
    av, bv = pa[byte], pb[byte]
    tail = np.flatnonzero(a[whole:] != b[whole:]) + whole
    if tail.size:
        pos, av, bv = (
            np.concatenate([pos, tail]),
            np.concatenate([av, a[tail]]),
            np.concatenate([bv, b[tail]]),
        )
    per_image = np.diff(np.searchsorted(pos, offsets))
    image = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), per_image)
    return image, av.astype(np.int64), bv.astype(np.int64)


def _check_values(hist: np.ndarray, ids: Sequence[str], k: int, model: str) -> None:
    bad = hist[:, k:IGNORE_INDEX].any(1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        values = (np.flatnonzero(hist[r, k:IGNORE_INDEX]) + k).tolist()
        raise ValueError(
            f"image {ids[r]}: model {model!r} predicts class ids {values} outside the class list "
            f"(0..{k - 1}, ignore {IGNORE_INDEX})"
        )


def _check_ids(target: Shard, other: Shard, name: str, s: int) -> None:
    if target.ids == other.ids:
        return
    t, o = set(target.ids), set(other.ids)
    if t - o:
        raise ValueError(
            f"image {sorted(t - o)[0]} (shard {s}) is in the target's predictions but missing "
            f"from competitor {name!r}'s"
        )
    if o - t:
        raise ValueError(
            f"image {sorted(o - t)[0]} (shard {s}) is in competitor {name!r}'s predictions but "
            "missing from the target's"
        )
    raise ValueError(f"shard {s}: competitor {name!r} holds the target's images in another order")


class TargetShard:
    """The target's side of one shard, computed once and compared with each competitor's shard in turn."""

    def __init__(self, target: Shard, num_classes: int, shard_index: int = 0):
        self.shard, self.k, self.shard_index = target, num_classes, shard_index
        self.ids = list(target.ids)
        self.flat, self.offsets = target.pixels()
        self.pixels = np.diff(self.offsets)[:, None].astype(np.float64)
        self.hist = image_histograms(self.flat, self.offsets)
        _check_values(self.hist, self.ids, num_classes, "target")
        self.counts = self.hist[:, :num_classes]
        self.area = self.counts / self.pixels  # (N, K) float64

    def versus(self, other: Shard, name: str, distance: str = "miou") -> tuple[np.ndarray, np.ndarray]:
        """Competitor ``name``'s area fractions (N, K) float64 and distance to the target (N,) float64, rounded
        to DISTANCE_DECIMALS. Raises ValueError naming the image and model for mismatched ids or shapes, or
        class ids outside the list."""
        check_distance(distance)
        _check_ids(self.shard, other, name, self.shard_index)
        for i, (a, b) in enumerate(zip(self.shard.maps, other.maps, strict=True)):
            if a.shape != b.shape:
                raise ValueError(
                    f"image {self.ids[i]}: competitor {name!r}'s map is {b.shape}, the target's is {a.shape}"
                )
        n, k = len(self.ids), self.k
        # the confusion of two maps follows from the target's class counts and the pixels where they differ:
        # intersection_k = count_k(target) - differing pixels where the target says k
        image, av, bv = disagreements(self.flat, other.pixels()[0], self.offsets)
        tag = image << 8
        b_hist = np.bincount(tag | bv, minlength=n * 256).reshape(n, 256)
        _check_values(b_hist, self.ids, k, name)  # where the maps agree, the target's check covered it
        a_hist = np.bincount(tag | av, minlength=n * 256).reshape(n, 256)
        tp = self.counts - a_hist[:, :k]
        c_counts = tp + b_hist[:, :k]
        if self.hist[:, IGNORE_INDEX].any() or b_hist[:, IGNORE_INDEX].any():
            # a pixel ignored in either map leaves the confusion (and so the union) altogether
            valid = (av != IGNORE_INDEX) & (bv != IGNORE_INDEX)
            image, tag, av, bv = image[valid], tag[valid], av[valid], bv[valid]
            a_hist = np.bincount(tag | av, minlength=n * 256).reshape(n, 256)
            b_hist = np.bincount(tag | bv, minlength=n * 256).reshape(n, 256)
        if distance == "miou":
            sim = miou_from_counts(tp, tp + a_hist[:, :k] + b_hist[:, :k])
        else:
            correct = tp.sum(1).astype(np.float64)
            total = correct + np.bincount(image, minlength=n)
            sim = np.divide(correct, total, out=np.ones_like(total), where=total > 0)
        return c_counts / self.pixels, np.round(1.0 - sim, DISTANCE_DECIMALS)


def shard_pair_stats(
    target: Shard,
    competitors: Mapping[str, Shard],
    num_classes: int,
    distance: str = "miou",
    shard_index: int = 0,
) -> tuple[list[str], np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per-image statistics of one shard (see :class:`TargetShard`).

    Args:
        target: the target's shard (N images).
        competitors: competitor name -> its shard over the same N ids.
        num_classes: K.
        distance: 'miou' (1 - mIoU of the two maps) or 'pixel_accuracy' (1 - pixel accuracy).
    Returns:
        ids (N,), the target's area fractions (N, K) float64, and per competitor (its area fractions (N, K)
        float64, distance to the target (N,) float64 rounded to DISTANCE_DECIMALS).
    Raises:
        ValueError naming the image and model for mismatched ids, shapes or class ids outside the list.
    """
    check_distance(distance)
    side = TargetShard(target, num_classes, shard_index)
    return (
        side.ids,
        side.area,
        {name: side.versus(other, name, distance) for name, other in competitors.items()},
    )
