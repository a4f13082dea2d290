"""Failure slices: where in the pool the candidates (or the lowest-rated images) concentrate, in plain words.

Each pool image is described by cheap attributes, from its pixels and the target's prediction, never from any
truth: brightness, contrast, colourfulness, sharpness, a noise estimate, size and aspect
(:func:`image_attributes`), the predicted main class, its area and the target's entropy. A slice is a rule of one or
two conditions on them ("contrast < 0.062 and main class disc"). :func:`find_slices` searches them as slice finders
do (a beam over conjunctions of threshold and category conditions) and ranks them by how much more of the group
(e.g. M) than of the pool they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

NUMERIC = ("brightness", "contrast", "colourfulness", "sharpness", "noise", "megapixels", "aspect", "main_area",
           "entropy")  # fmt: skip
CATEGORICAL = ("main_class",)
QUANTILES = (0.1, 0.2, 0.3, 0.7, 0.8, 0.9)  # candidate thresholds: the tails where odd images live


def image_attributes(rgb: np.ndarray) -> dict[str, float]:
    """Cheap attributes of an (H, W, 3) uint8 image, each in a fixed unit so that pools of any size compare.

    brightness: mean luma in [0, 1]; contrast: luma 1st-99th percentile range in [0, 1]; colourfulness:
    Hasler and Suesstrunk's metric / 100; sharpness: mean absolute Laplacian of luma in [0, 1] units; noise:
    Immerkaer's estimate of Gaussian noise sigma in [0, 1] units; megapixels; aspect: width / height.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    img = rgb.astype(np.float32) / 255.0
    luma = img @ np.asarray([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(luma, [1, 99])
    rg, yb = img[..., 0] - img[..., 1], 0.5 * (img[..., 0] + img[..., 1]) - img[..., 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    h, w = luma.shape
    if min(h, w) >= 3:
        lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
        # Immerkaer (1996): the mask [1 -2 1; -2 4 -2; 1 -2 1] cancels image structure, leaves the noise
        m = (luma[:-2, :-2] + luma[:-2, 2:] + luma[2:, :-2] + luma[2:, 2:] - 2 * (luma[:-2, 1:-1] + luma[2:, 1:-1]
             + luma[1:-1, :-2] + luma[1:-1, 2:]) + 4 * luma[1:-1, 1:-1])  # fmt: skip
        sharpness = float(np.abs(lap).mean())
        noise = float(np.sqrt(np.pi / 2) * np.abs(m).sum() / (6 * (w - 2) * (h - 2)))
    else:
        sharpness = noise = 0.0
    return {"brightness": float(luma.mean()), "contrast": float(hi - lo), "colourfulness": float(colourfulness),
            "sharpness": sharpness, "noise": noise, "megapixels": h * w / 1e6, "aspect": w / h}  # fmt: skip


def prediction_attributes(area: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The target's predicted main class (the largest foreground area; 'background' if none) and its area.

    ``area``: columns area_<class> for every class (PredictionStore.stats()); the first class is background.
    """
    fg = area[[f"area_{c}" for c in class_names[1:]]].to_numpy()
    main = fg.argmax(axis=1)
    has = fg.max(axis=1) > 0
    names = np.asarray(class_names[1:], dtype=object)
    return pd.DataFrame({"main_class": np.where(has, names[main], class_names[0]),
                         "main_area": np.where(has, fg.max(axis=1), 0.0)}, index=area.index)  # fmt: skip


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str  # "<", ">=" or "=="
    value: float | str

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        column = table[self.attribute]
        if self.op == "==":
            return (column == self.value).to_numpy()
        values = column.to_numpy(dtype=float)
        return values < self.value if self.op == "<" else values >= self.value

    def words(self) -> str:
        if self.op == "==":
            return f"{self.attribute.replace('_', ' ')} {self.value}"
        return f"{self.attribute} {self.op} {_short(float(self.value))}"


def find_slices(
    table: pd.DataFrame,
    in_group: np.ndarray,
    *,
    worst: np.ndarray | None = None,
    top: int = 20,
    beam: int = 12,
    min_group: int = 5,
    examples: int = 5,
) -> pd.DataFrame:
    """Slices of ``table`` (one row per pool image, index = image id) where the group ``in_group`` concentrates.

    Candidates are single conditions (thresholds at pool quantiles of the NUMERIC attributes, each value of
    the CATEGORICAL ones), then the ``beam`` best extended by a second condition. A slice must hold at least
    ``min_group`` group images. Ranked by excess = share of the group in the slice - share of the pool in the
    slice (support and lift together: a slice with a large lift but few images ranks below a broad one).

    Args:
        in_group: (N,) bool, e.g. membership in M.
        worst: (N,) bool, e.g. among the lowest-rated images of S (optional).
    Returns:
        columns rule, pool_size, pool_share, group_size, group_share, lift, worst_share, excess, examples (the
        first ``examples`` of the slice's group images), group_ids (all of them); ids ';'-joined.
    """
    in_group = np.asarray(in_group, dtype=bool)
    if len(in_group) != len(table):
        raise ValueError(f"in_group has {len(in_group)} entries for {len(table)} images")
    n, n_group = len(table), int(in_group.sum())
    if n == 0 or n_group == 0:
        return pd.DataFrame(columns=["rule", "pool_size", "pool_share", "group_size", "group_share", "lift",
                                     "worst_share", "excess", "examples", "group_ids"])  # fmt: skip
    # a condition that holds for (nearly) every image or none says nothing
    singles = [(c, m) for c in _conditions(table) if 0 < (m := c.mask(table)).sum() <= 0.95 * n]

    def score(mask: np.ndarray) -> float:
        return float(in_group[mask].sum()) / n_group - float(mask.sum()) / n

    ranked = sorted((s for s in singles if in_group[s[1]].sum() >= min_group), key=lambda s: -score(s[1]))
    rules: dict[tuple, np.ndarray] = {(c,): m for c, m in ranked}
    for c1, m1 in ranked[:beam]:
        for c2, m2 in singles:
            if c2.attribute != c1.attribute:
                both = m1 & m2
                if in_group[both].sum() >= min_group and both.sum() < m1.sum():  # it must narrow the slice
                    rules[tuple(sorted((c1, c2), key=lambda c: (c.attribute, c.op)))] = both
    ids = table.index.to_numpy()
    rows = []
    for conditions, mask in _diverse(rules, in_group, score, top):
        size, group_size = int(mask.sum()), int(in_group[mask].sum())
        rows.append({
            "rule": " and ".join(c.words() for c in conditions),
            "pool_size": size,
            "pool_share": size / n,
            "group_size": group_size,
            "group_share": group_size / n_group,
            "lift": (group_size / size) / (n_group / n),
            "worst_share": float(worst[mask].sum() / max(int(worst.sum()), 1)) if worst is not None else None,
            "excess": group_size / n_group - size / n,
            "examples": ";".join(sorted(ids[mask & in_group])[:examples]),
            "group_ids": ";".join(sorted(ids[mask & in_group])),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _diverse(
    rules: dict[tuple, np.ndarray], in_group: np.ndarray, score, top: int, overlap: float = 0.5
) -> list:
    """The best rules by score (positive only), skipping a refinement of a chosen rule and one whose group
    images overlap a chosen one's by more than ``overlap`` (Jaccard): ten thresholds on one attribute, or one
    slice narrowed by a second condition, are one finding, not ten."""
    order = sorted(rules.items(), key=lambda kv: (-score(kv[1]), len(kv[0]), [c.words() for c in kv[0]]))
    chosen: list[tuple[tuple, np.ndarray]] = []
    for conditions, mask in order:
        if score(mask) <= 0:
            break
        members = mask & in_group
        kinds = {(c.attribute, c.op) for c in conditions}  # a refinement at another threshold is one too
        refines = any(
            {(c.attribute, c.op) for c in chosen_conditions} <= kinds for chosen_conditions, _ in chosen
        )
        overlaps = any(
            (members & m).sum() > overlap * (members | m).sum() for m in (k & in_group for _, k in chosen)
        )
        if not (refines or overlaps):
            chosen.append((conditions, mask))
            if len(chosen) == top:
                break
    return chosen


def _conditions(table: pd.DataFrame) -> list[Condition]:
    out = []
    for attribute in NUMERIC:
        if attribute not in table:
            continue
        values = table[attribute].to_numpy(dtype=float)
        for q in QUANTILES:
            t = float(np.quantile(values, q))
            out.append(Condition(attribute, "<" if q < 0.5 else ">=", t))
    for attribute in CATEGORICAL:
        if attribute in table:
            out += [Condition(attribute, "==", v) for v in sorted(table[attribute].unique())]
    return out


def _short(value: float) -> str:
    return f"{value:.3g}"


def attributes_of_images(paths: Sequence[str], workers: int = 1) -> pd.DataFrame:
    """:func:`image_attributes` of every image file, in order: (N, 7) in a frame, decoded in ``workers``
    processes for large pools."""
    if workers > 1 and len(paths) >= 256:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(_attributes_of_file, paths, chunksize=64))
    else:
        rows = [_attributes_of_file(p) for p in paths]
    return pd.DataFrame(rows, columns=["brightness", "contrast", "colourfulness", "sharpness", "noise",
                                       "megapixels", "aspect"])  # fmt: skip


def _attributes_of_file(path: str) -> dict[str, float]:
    from madseg.io.images import read_rgb

    return image_attributes(read_rgb(path))


def round_slices(
    attributes: pd.DataFrame,
    target_stats: pd.DataFrame,
    class_names: Sequence[str],
    m_ids: Sequence[str],
    mos: pd.DataFrame | None = None,
    *,
    top: int = 20,
) -> pd.DataFrame:
    """The slices of one round's M against the pool, with each slice's share of the lowest-rated images.

    Args:
        attributes: index = image id, the :func:`image_attributes` columns.
        target_stats: the target's PredictionStore.stats() (id, area_<class>..., entropy).
        m_ids: the images of M.
        mos: the round's ratings (image_id, mos, vetoed): the lowest-rated quarter of the rated, non-vetoed
            images of M are "worst". None: no ratings yet.
    Returns:
        find_slices' columns.
    """
    stats = target_stats.set_index("id")
    table = attributes.join(prediction_attributes(stats, class_names)).join(stats["entropy"])
    in_m = table.index.isin(list(m_ids))
    worst = None
    if mos is not None and len(mos):
        rated = mos[~mos["vetoed"].astype(bool)]
        cut = rated["mos"].quantile(0.25)
        worst = table.index.isin(rated.loc[rated["mos"] <= cut, "image_id"])
    return find_slices(table, in_m, worst=worst, top=top)


def factors_recovered(
    slices: pd.DataFrame, m_factors: pd.Series, factors: Sequence[str], top: int = 10
) -> list[str]:
    """Which hidden-truth ``factors`` the ``top`` slices recover (for validating slices on a labelled pool).

    A factor is recovered when one slice has at least half of its M images carrying the factor and holds at
    least a fifth of M's images with it. ``m_factors``: image id of M -> ';'-joined factors.
    """
    got = []
    members = [set(str(g).split(";")) - {""} for g in slices["group_ids"].head(top)]
    for factor in factors:
        carrying = {i for i, fs in m_factors.items() if factor in str(fs).split(";")}
        if carrying and any(
            len(s & carrying) >= 0.5 * len(s) and len(s & carrying) >= 0.2 * len(carrying)
            for s in members
            if s
        ):
            got.append(factor)
    return got
