"""Area bands: the size prior [p_k, q_k] of each class that MAD's content-aware partition filters by.

By default p_k, q_k are quantiles of class k's area fraction over S0's ground truth (the paper: the 1st and 3rd
quartiles); params may override a class's band.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from madseg.io.shard import area_fractions
from madseg.labels import IGNORE_INDEX, ClassList

log = logging.getLogger(__name__)


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
    return area_fractions([mask], num_classes)[0]


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
    check_bands(bands, classes)
    rows = []
    for c in classes.foreground:
        name = classes.names[c]
        n_s0 = int((areas[:, c] > 0).sum()) if areas is not None else -1
        source = "override" if name in (overrides or {}) else ("quantile" if n_s0 != 0 else "default")
        rows.append({"class": name, "p": float(bands[c, 0]), "q": float(bands[c, 1]), "source": source, "n_s0": n_s0})
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


def check_bands(bands: np.ndarray, classes: ClassList) -> None:
    """ValueError unless ``bands`` is (K, 2) with p_k <= q_k for every foreground class."""
    k = classes.num_classes
    if bands.shape != (k, 2):
        raise ValueError(f"bands must be ({k}, 2) for classes {list(classes.names)}, got {bands.shape}")
    fg = bands[1:]
    if np.isnan(fg).any() or (fg[:, 0] > fg[:, 1]).any():
        raise ValueError(f"bands must hold p_k <= q_k for every foreground class, got {bands[1:].tolist()}")
