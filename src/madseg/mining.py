"""MAD mining with content-aware partitioning, and the entropy / random baselines behind one interface.

MAD (the source paper's Eq. 1 and 2): for each competitor g_j, each foreground class k and each direction, the
pool is partitioned by one model's predicted map (direction ``t``: the target's, ``c``: the competitor's): an
image belongs to D_k if at least one pixel is predicted k, and is kept if its predicted area fraction of k
lies in [p_k, q_k]. The top-n3 images by distance d(f_t(x), g_j(x)) (1 - mIoU, or 1 - pixel accuracy, between
the two predicted maps) form the group (j, k, direction). M is the deduplicated union of all groups,
|M| <= 2 m c n3.

Scale: prediction stores are streamed shard by shard in lockstep. For each shard the per-image statistics
(both models' class area fractions and the pairwise distance) are computed vectorised while the maps are in
memory, and each group keeps only its running top-n3, so memory is bounded by the shard size and the number of
groups, not by the pool. Time is linear in pool size x competitors.

Mining never reads ground truth of the pool: only predictions (and S0's truth for the default area bands).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from madseg.io.store import PredictionStore, Shard
from madseg.labels import IGNORE_INDEX, ClassList
from madseg.metrics import miou_from_counts

log = logging.getLogger(__name__)

DISTANCES = ("miou", "pixel_accuracy")
STRATEGIES = ("mad", "entropy", "random")
DIRECTIONS = ("t", "c")  # t: partition and area filter by the target's map; c: by the competitor's
NONE = "-"  # provenance field that does not apply to a strategy (e.g. the competitor of an entropy pick)
# distances are rounded so that equal disagreements tie exactly whatever the summation order that produced
# them (a brute-force reference and the batched computation then rank identically)
DISTANCE_DECIMALS = 12

CANDIDATE_COLUMNS = ("strategy", "image_id", "competitor", "class", "direction", "distance", "score", "rank")
M_COLUMNS = (
    "image_id", "strategy", "n_groups", "best_distance", "best_score", "competitor", "class", "direction",
    "distance", "rank",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ area bands
def class_area_fractions(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Area fraction of each class in one label map.

    Args:
        mask: (H, W) integer label map, values in [0, K) or IGNORE_INDEX.
        num_classes: K.
    Returns:
        (K,) float64: pixels of class k / (H * W) (ignored pixels count in the denominator only).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    counts = np.bincount(mask.reshape(-1).astype(np.int64), minlength=256)
    bad = np.flatnonzero(counts[num_classes:IGNORE_INDEX]) + num_classes
    if bad.size:
        raise ValueError(f"label values {bad.tolist()} outside 0..{num_classes - 1} (ignore {IGNORE_INDEX})")
    return counts[:num_classes] / float(mask.size)


def area_bands(
    areas: np.ndarray | Iterable[np.ndarray],
    classes: ClassList,
    quantiles: Sequence[float] = (0.25, 0.75),
    overrides: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """The area band [p_k, q_k] of every class.

    By default p_k, q_k are the ``quantiles`` of class k's area fraction over the images of S0 that contain k
    (from ground truth). ``overrides`` maps a class name to an explicit [p, q]. Background (index 0) is
    excluded from mining and gets NaN. A class that no S0 image contains and that is not overridden gets
    [0, 1] (no size prior: every image predicted to contain it passes), with a warning.

    Args:
        areas: either an (N, K) float array of per-image area fractions, or an iterable of (H, W) ground-truth
            label maps (uint8, 255 = ignore) whose fractions are computed here, one at a time.
        classes: the class list (K classes).
        quantiles: (lo, hi) with 0 <= lo <= hi <= 1.
        overrides: class name -> (p, q) with 0 <= p <= q <= 1.
    Returns:
        (K, 2) float64, row k = [p_k, q_k]; row 0 NaN.
    """
    k = classes.num_classes
    frac = area_matrix(areas, k)
    lo, hi = _check_pair(quantiles, "area quantiles")
    overrides = dict(overrides or {})
    bands = np.full((k, 2), np.nan)
    for c in classes.foreground:
        have = frac[:, c][frac[:, c] > 0]
        if have.size:
            bands[c] = np.quantile(have, [lo, hi])
        else:
            bands[c] = (0.0, 1.0)
            if classes.names[c] not in overrides:
                log.warning("no S0 image contains class %r: its area band is [0, 1]", classes.names[c])
    for name, pair in overrides.items():
        c = classes.index(name)
        if c == 0:
            raise ValueError(f"area override for {name!r}: background is not mined")
        bands[c] = _check_pair(pair, f"area override for {name!r}")
    return bands


def bands_frame(
    bands: np.ndarray,
    classes: ClassList,
    areas: np.ndarray | None = None,
    overrides: Mapping[str, Sequence[float]] | None = None,
) -> pd.DataFrame:
    """bands.csv: one row per foreground class: class, p, q, source (quantile | override | default), n_s0
    (S0 images containing the class; -1 when ``areas`` is not given)."""
    _check_bands(bands, classes)
    rows = []
    for c in classes.foreground:
        name = classes.names[c]
        n_s0 = int((areas[:, c] > 0).sum()) if areas is not None else -1
        source = "override" if name in (overrides or {}) else ("quantile" if n_s0 != 0 else "default")
        rows.append({"class": name, "p": float(bands[c, 0]), "q": float(bands[c, 1]), "source": source,
                     "n_s0": n_s0})  # fmt: skip
    return pd.DataFrame(rows)


def area_matrix(areas: np.ndarray | Iterable[np.ndarray], k: int) -> np.ndarray:
    """(N, K) float64 area fractions: an (N, K) float array as is (checked), or one row per (H, W) label map."""
    if isinstance(areas, np.ndarray) and areas.ndim == 2 and areas.dtype.kind == "f":
        if areas.shape[1] != k:
            raise ValueError(f"area fractions must be (N, {k}), got {areas.shape}")
        return areas.astype(np.float64)
    rows = [class_area_fractions(np.asarray(m), k) for m in areas]
    return np.stack(rows) if rows else np.zeros((0, k))


def _check_pair(pair: Sequence[float], what: str) -> tuple[float, float]:
    vals = [float(v) for v in pair]
    if len(vals) != 2 or not 0.0 <= vals[0] <= vals[1] <= 1.0:
        raise ValueError(f"{what} must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(pair)}")
    return vals[0], vals[1]


def _check_bands(bands: np.ndarray, classes: ClassList) -> None:
    k = classes.num_classes
    if bands.shape != (k, 2):
        raise ValueError(f"bands must be ({k}, 2) for classes {list(classes.names)}, got {bands.shape}")
    fg = bands[1:]
    if np.isnan(fg).any() or (fg[:, 0] > fg[:, 1]).any():
        raise ValueError(f"bands must hold p_k <= q_k for every foreground class, got {bands[1:].tolist()}")


# ------------------------------------------------------------------------------------------- per shard
# images below this many pixels are histogrammed together (one bincount over image-tagged codes); larger ones
# one by one with torch's bincount, which counts uint8 directly instead of widening every pixel to int64
_SMALL_IMAGE_PIXELS = 1 << 16
_CODES_PER_CHUNK = 1 << 22


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


def disagreements(
    a: np.ndarray, b: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        raise ValueError(f"image {sorted(t - o)[0]} (shard {s}) is in the target's predictions but missing "
                         f"from competitor {name!r}'s")  # fmt: skip
    if o - t:
        raise ValueError(f"image {sorted(o - t)[0]} (shard {s}) is in competitor {name!r}'s predictions but "
                         "missing from the target's")  # fmt: skip
    raise ValueError(f"shard {s}: competitor {name!r} holds the target's images in another order")


class TargetShard:
    """The target's side of one shard, computed once and compared with each competitor's shard in turn.

    Images of one shard may differ in size; the shard is handled as one stream of pixels, never copied per
    image, and the cost per competitor follows the pixels where it differs from the target.
    """

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
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; valid: {list(DISTANCES)}")
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
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {list(DISTANCES)}")
    side = TargetShard(target, num_classes, shard_index)
    return (
        side.ids,
        side.area,
        {name: side.versus(other, name, distance) for name, other in competitors.items()},
    )


# ------------------------------------------------------------------------------------------------- MAD
# (competitor, class index, direction) -> the group's best images as (-distance, image id, target's areas),
# sorted; distance descending, then id ascending
GroupTops = dict[tuple[str, int, str], list[tuple[float, str, np.ndarray]]]


def shard_tops(
    target: Shard,
    competitors: Iterable[tuple[str, Shard]],
    bands: np.ndarray,
    classes: ClassList,
    *,
    n3: int,
    distance: str = "miou",
    exclude: frozenset[str] = frozenset(),
    shard_index: int = 0,
) -> GroupTops:
    """Each MAD group's top-n3 within one shard: the partial result that :func:`merge_tops` folds together,
    wherever the shards were mined (this process, a pool of processes, Ray tasks).

    ``competitors`` yields (name, shard) pairs and is consumed one pair at a time, so only the target's shard
    and one competitor's are in memory together.
    """
    k = classes.num_classes
    fg = np.arange(1, k)
    lo, hi = bands[fg, 0], bands[fg, 1]
    side = TargetShard(target, k, shard_index)
    tops: GroupTops = {}
    if not side.ids:
        return tops
    id_arr = np.asarray(side.ids)
    eligible = np.array([i not in exclude for i in side.ids])[:, None]
    t_area = side.area
    t_ok = (t_area[:, fg] > 0) & (t_area[:, fg] >= lo) & (t_area[:, fg] <= hi) & eligible
    for name, other in competitors:
        c_area, dist = side.versus(other, name, distance)
        del other
        c_ok = (c_area[:, fg] > 0) & (c_area[:, fg] >= lo) & (c_area[:, fg] <= hi) & eligible
        for d, ok in (("t", t_ok), ("c", c_ok)):
            for col in np.flatnonzero(ok.any(0)):
                idx = np.flatnonzero(ok[:, col])
                idx = idx[np.lexsort((id_arr[idx], -dist[idx]))[:n3]]
                tops[(name, int(fg[col]), d)] = [(-float(dist[i]), side.ids[i], t_area[i]) for i in idx]
    return tops


def merge_tops(into: GroupTops, part: GroupTops, n3: int) -> None:
    """Fold one shard's tops into the running ones (in place); the result does not depend on shard order."""
    for key, group in part.items():
        merged = into.setdefault(key, [])
        merged.extend(group)
        merged.sort(key=lambda e: (e[0], e[1]))
        del merged[n3:]


def check_aligned(target: PredictionStore, competitors: Mapping[str, PredictionStore]) -> int:
    """The shard count of stores that line up shard by shard; ValueError naming a store that does not."""
    n = len(target.manifest["shards"])
    for name, store in competitors.items():
        m = len(store.manifest["shards"])
        if m != n:
            raise ValueError(f"competitor {name!r} has {'fewer' if m < n else 'more'} shards than the target "
                             f"({m} vs {n}): its predictions are over another pool")  # fmt: skip
    return n


def mine_store_shard(
    target_root: str,
    competitor_roots: Mapping[str, str],
    shard_index: int,
    bands: np.ndarray,
    classes: ClassList,
    *,
    n3: int,
    distance: str = "miou",
    exclude: frozenset[str] = frozenset(),
) -> GroupTops:
    """:func:`shard_tops` of shard ``shard_index`` read from stores by path (a Ray task's or a process's work)."""
    target = PredictionStore(target_root).read_shard(shard_index)
    competitors = (
        (name, PredictionStore(root).read_shard(shard_index)) for name, root in competitor_roots.items()
    )
    return shard_tops(target, competitors, bands, classes, n3=n3, distance=distance, exclude=exclude,
                      shard_index=shard_index)  # fmt: skip


def _lockstep(
    target_shards: Iterable[Shard], competitor_shards: Mapping[str, Iterable[Shard]]
) -> Iterator[tuple[int, Shard, Iterator[tuple[str, Shard]]]]:
    """Shard s of the target, and the competitors' shards s read one at a time as they are asked for."""
    names = list(competitor_shards)
    iterators = {n: iter(c) for n, c in competitor_shards.items()}
    missing = object()

    def competitors(s: int, t: Shard) -> Iterator[tuple[str, Shard]]:
        for name in names:
            c = next(iterators[name], missing)
            if c is missing:
                raise ValueError(f"competitor {name!r} has fewer shards than the target: missing shard {s} "
                                 f"(images from {t.ids[0] if t.ids else '?'})")  # fmt: skip
            yield name, c

    s = -1
    for s, t in enumerate(target_shards):
        yield s, t, competitors(s, t)
    extra = [n for n in names if next(iterators[n], missing) is not missing]
    if extra:
        raise ValueError(f"competitors {extra} have more shards than the target (shard {s + 1} and later)")


def mine_mad(
    target_shards: Iterable[Shard],
    competitor_shards: Mapping[str, Iterable[Shard]],
    bands: np.ndarray,
    classes: ClassList,
    *,
    n3: int,
    distance: str = "miou",
    progress: bool = False,
    total: int | None = None,
    exclude: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """MAD candidates: per (competitor, class, direction) the top-n3 images by distance, streamed by shard.

    Args:
        target_shards: the target's shards in store order.
        competitor_shards: competitor name -> its shards, aligned with the target's (shard s holds the same
            ids). Group order in the output follows this mapping's order.
        bands: (K, 2) [p_k, q_k] from :func:`area_bands`.
        classes: the class list (K classes); background (index 0) is not mined.
        n3: images per group.
        distance: 'miou' or 'pixel_accuracy'.
        progress / total: show a tqdm bar over shards (``total`` shards).
        exclude: image ids that are not candidates (see :func:`select_candidates`).
    Returns:
        candidates: one row per (group, image) with columns CANDIDATE_COLUMNS (strategy 'mad', score =
        distance, rank 1-based within the group) plus area_<class> for every class (the target's predicted
        area fractions).
        Groups in order competitor, class index, direction (t, c); within a group rows are ordered by distance
        descending, then image_id ascending (ties are deterministic).
    """
    _check_mad_args(competitor_shards, bands, classes, n3, distance)
    tops: GroupTops = {}
    seen = 0
    shards = _lockstep(target_shards, competitor_shards)
    for s, t, competitors in tqdm(shards, total=total, disable=not progress, desc="mine", unit="shard"):
        seen += len(t.ids)
        part = shard_tops(t, competitors, bands, classes, n3=n3, distance=distance, exclude=exclude,
                          shard_index=s)  # fmt: skip
        merge_tops(tops, part, n3)
        del t, competitors  # before the next shard is read, so one shard's maps are in memory at a time
    log.info("mined %d images x %d competitors", seen, len(competitor_shards))
    return mad_frame(tops, list(competitor_shards), classes)


def _check_mad_args(competitors: Mapping | Sequence, bands: np.ndarray, classes: ClassList, n3: int,
                    distance: str) -> None:  # fmt: skip
    if n3 < 1:
        raise ValueError(f"n3 must be >= 1, got {n3}")
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {list(DISTANCES)}")
    if not competitors:
        raise ValueError("MAD needs at least one competitor, got none")
    _check_bands(bands, classes)


def mad_frame(tops: GroupTops, competitors: Sequence[str], classes: ClassList) -> pd.DataFrame:
    """The candidate table of merged tops (see :func:`mine_mad`); groups in order competitor (as given), class
    index, direction."""
    keys = [(j, c, d) for j in competitors for c in range(1, classes.num_classes) for d in DIRECTIONS]
    area_cols = [f"area_{c}" for c in classes.names]
    records, areas = [], []
    for j, c, d in keys:
        for rank, (neg, image, area) in enumerate(tops.get((j, c, d), ()), start=1):
            records.append(("mad", image, j, classes.names[c], d, -neg, -neg, rank))
            areas.append(area)
    df = pd.DataFrame.from_records(records, columns=list(CANDIDATE_COLUMNS))
    area_df = pd.DataFrame(np.stack(areas) if areas else np.zeros((0, len(area_cols))), columns=area_cols)
    return pd.concat([df, area_df], axis=1)


# ------------------------------------------------------------------------------------------- baselines
def _check_stats(target_stats: pd.DataFrame, classes: ClassList) -> pd.DataFrame:
    cols = [f"area_{c}" for c in classes.names]
    missing = [c for c in ["id", "entropy", *cols] if c not in target_stats.columns]
    if missing:
        raise ValueError(f"target stats lack columns {missing}; has {list(target_stats.columns)}")
    dup = target_stats["id"].duplicated()
    if dup.any():
        raise ValueError(f"target stats repeat image ids, e.g. {target_stats['id'][dup].iloc[0]}")
    return target_stats


def _baseline_frame(
    strategy: str, picked: pd.DataFrame, score: np.ndarray, classes: ClassList
) -> pd.DataFrame:
    cols = [f"area_{c}" for c in classes.names]
    df = pd.DataFrame({
        "strategy": strategy, "image_id": picked["id"].to_numpy(), "competitor": NONE, "class": NONE,
        "direction": NONE, "distance": np.nan, "score": score, "rank": np.arange(1, len(picked) + 1),
    })  # fmt: skip
    return pd.concat([df, picked[cols].reset_index(drop=True).astype(np.float64)], axis=1)


def entropy_candidates(target_stats: pd.DataFrame, budget: int, classes: ClassList) -> pd.DataFrame:
    """The ``budget`` images with the highest mean pixel entropy of the target's prediction (ties: id asc).

    Args:
        target_stats: PredictionStore.stats() of the target: columns id, area_<class>..., entropy.
    Returns:
        candidates (CANDIDATE_COLUMNS + area_*), score = mean entropy (nats), rank 1 = most uncertain.
    """
    stats = _check_stats(target_stats, classes)
    order = np.lexsort((stats["id"].to_numpy(), -stats["entropy"].to_numpy(np.float64)))[:budget]
    picked = stats.iloc[order]
    return _baseline_frame("entropy", picked, picked["entropy"].to_numpy(np.float64), classes)


def random_candidates(target_stats: pd.DataFrame, budget: int, classes: ClassList, seed: int) -> pd.DataFrame:
    """A seeded uniform sample of ``budget`` images from all of D (score NaN, rank = draw order)."""
    stats = _check_stats(target_stats, classes)
    stats = stats.sort_values("id", kind="stable").reset_index(
        drop=True
    )  # the draw must not depend on row order
    rng = np.random.default_rng(seed)
    draw = rng.choice(len(stats), size=min(budget, len(stats)), replace=False)
    return _baseline_frame("random", stats.iloc[draw], np.full(len(draw), np.nan), classes)


def select_candidates(
    strategy: str,
    *,
    classes: ClassList,
    budget: int | None = None,
    target_stats: pd.DataFrame | None = None,
    seed: int = 0,
    target_shards: Iterable[Shard] | None = None,
    competitor_shards: Mapping[str, Iterable[Shard]] | None = None,
    bands: np.ndarray | None = None,
    n3: int | None = None,
    distance: str = "miou",
    progress: bool = False,
    total: int | None = None,
    exclude: Iterable[str] = (),
) -> pd.DataFrame:
    """One interface for every strategy; all return the same candidate format (see :func:`mine_mad`).

    ``mad`` needs the shard iterators, bands and n3 (its budget is |M|, whatever it comes to); ``entropy`` and
    ``random`` need ``target_stats`` (PredictionStore.stats() of the target) and ``budget`` (MAD's |M| that
    round, so every strategy spends the same human effort); ``random`` draws with ``seed``.

    ``exclude``: images no strategy may propose, e.g. those the target was already fine-tuned on (S^(1..i)).
    After training on their labels the target is right where the competitors are wrong, so MAD re-proposes
    them: in the demo they are a quarter of M^(2) and 43 % of M^(3), rated again for nothing.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {list(STRATEGIES)}")
    if strategy == "mad":
        if target_shards is None or competitor_shards is None or bands is None or n3 is None:
            raise ValueError("strategy 'mad' needs target_shards, competitor_shards, bands and n3")
        excluded = frozenset(exclude)
        return mine_mad(target_shards, competitor_shards, bands, classes, n3=n3, distance=distance,
                        progress=progress, total=total, exclude=excluded)  # fmt: skip
    if target_stats is None or budget is None:
        raise ValueError(f"strategy {strategy!r} needs target_stats and budget")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    stats = _check_stats(target_stats, classes)
    stats = stats[~stats["id"].isin(list(exclude))]
    if strategy == "entropy":
        return entropy_candidates(stats, budget, classes)
    return random_candidates(stats, budget, classes, seed)


# --------------------------------------------------------------------------------------------------- M
def summarize_m(candidates: pd.DataFrame) -> pd.DataFrame:
    """M: the deduplicated union of the candidates, one row per image, sorted by image_id.

    Columns M_COLUMNS: n_groups (how many groups found it), best_distance / best_score (max over its rows),
    and competitor, class, direction, distance, rank of the first group that found it (candidate-table order).
    """
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack columns {missing}; has {list(candidates.columns)}")
    if candidates.empty:
        return pd.DataFrame(columns=list(M_COLUMNS))
    g = candidates.groupby("image_id", sort=True)
    # the first row of each image (groupby.first() would skip NaN fields and could mix rows)
    first = candidates.drop_duplicates("image_id", keep="first").set_index("image_id").sort_index()
    m = pd.DataFrame({
        "image_id": first.index.to_numpy(), "strategy": first["strategy"].to_numpy(),
        "n_groups": g.size().to_numpy(), "best_distance": g["distance"].max().to_numpy(),
        "best_score": g["score"].max().to_numpy(), "competitor": first["competitor"].to_numpy(),
        "class": first["class"].to_numpy(), "direction": first["direction"].to_numpy(),
        "distance": first["distance"].to_numpy(), "rank": first["rank"].to_numpy(),
    })  # fmt: skip
    return m.reset_index(drop=True)


def mining_summary(candidates: pd.DataFrame, m: pd.DataFrame) -> dict:
    """Flat metrics: |M|, candidate rows, non-empty MAD groups, distinct images per competitor, direction."""
    out: dict = {"M_size": len(m), "candidate_rows": len(candidates)}
    mad = candidates[candidates["strategy"] == "mad"]
    out["groups"] = int(mad.groupby(["competitor", "class", "direction"]).ngroups) if len(mad) else 0
    for name, sub in mad.groupby("competitor", sort=True):
        out[f"images_by_competitor.{name}"] = int(sub["image_id"].nunique())
    for d, sub in mad.groupby("direction", sort=True):
        out[f"images_by_direction.{d}"] = int(sub["image_id"].nunique())
    return out


@dataclass(frozen=True)
class Proposal:
    """One round's candidates: the strategy's (rows and M) and MAD's, whose |M| is every strategy's budget."""

    candidates: pd.DataFrame
    m: pd.DataFrame
    mad_candidates: pd.DataFrame
    mad_m: pd.DataFrame

    def summary(self, strategy: str) -> dict:
        """mining_summary of the strategy's candidates, plus MAD's under ``mad.`` when they differ."""
        out = {"mad_M_size": len(self.mad_m), **mining_summary(self.candidates, self.m)}
        if strategy != "mad":
            out.update({f"mad.{k}": v for k, v in mining_summary(self.mad_candidates, self.mad_m).items()})
        return out


def propose(
    strategy: str,
    *,
    target: PredictionStore,
    competitors: Mapping[str, PredictionStore],
    bands: np.ndarray,
    classes: ClassList,
    n3: int,
    distance: str,
    seed: int,
    exclude: Iterable[str] = (),
    backend: str = "local",
    ray_params=None,
) -> Proposal:
    """A round's candidates by ``strategy``: MAD runs first, since its |M| is the budget a baseline spends.
    ``backend`` 'ray' mines MAD as one Ray task per shard (``ray_params``: the ray section), to the same M."""
    exclude = frozenset(exclude)
    if backend == "ray":
        from madseg.cluster import mine_mad_ray

        _check_mad_args(competitors, bands, classes, n3, distance)
        mad = mine_mad_ray(target, competitors, bands, classes, n3=n3, distance=distance, exclude=exclude,
                           ray_params=ray_params)  # fmt: skip
    else:
        mad = select_candidates(
            "mad", classes=classes, target_shards=target.iter_shards(),
            competitor_shards={n: s.iter_shards() for n, s in competitors.items()}, bands=bands, n3=n3,
            distance=distance, progress=True, total=len(target.manifest["shards"]), exclude=exclude,
        )  # fmt: skip
    mad_m = summarize_m(mad)
    if strategy == "mad":
        return Proposal(mad, mad_m, mad, mad_m)
    candidates = select_candidates(strategy, classes=classes, budget=len(mad_m), target_stats=target.stats(),
                                   seed=seed, exclude=exclude)  # fmt: skip
    return Proposal(candidates, summarize_m(candidates), mad, mad_m)
