"""Failure slices: what kind of images the candidates (or the lowest-rated images) are, in plain words.

Each pool image is described by cheap attributes, from its pixels and the target's prediction, never from any
truth (:mod:`madseg.attributes`). :func:`find_slices` then follows Domino's recipe
(Eyuboglu et al., ICLR 2022) with these attributes in place of embeddings: it clusters the whole pool in
attribute space with membership in the group (e.g. M) as one more coordinate, so that a cluster is both one
kind of image and one fate, keeps the clusters where the group concentrates and describes each by the rule of
one or two conditions ("oblique_edges >= 0.628 and noise < 0.0323") that best matches its group images.

Why clusters rather than a search over rules ranked by lift: MAD's candidates are a mixture of failure kinds,
and the rules on which the mixture as a whole concentrates are the broad ones ("entropy >= 0.114" holds most
of M). A kind of image that is a small, clean part of M (huge objects, blur) is found as a cluster and then
named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from madseg.attributes import IMAGE_ATTRIBUTES, prediction_attributes

NUMERIC = (*IMAGE_ATTRIBUTES, "main_area", "entropy")
CATEGORICAL = ("main_class",)
# candidate thresholds of the rules, at pool quantiles: fine in the tails, where odd images live
QUANTILES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
FIT_ROWS = 100_000  # pool images beside the group that the cluster centres are fitted on
JOIN_F1 = 0.8  # clusters are joined only when one rule names their union this well (F1 over the group images)
# a slice recovers a truth factor when at least RECOVERY_PURITY of its group images carry the factor and it
# holds at least RECOVERY_COVERAGE of the group's images that carry it: mostly the factor, and a fair part
# of it
RECOVERY_PURITY = 0.5
RECOVERY_COVERAGE = 0.2


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
        return f"{self.attribute} {self.op} {float(self.value):.3g}"


COLUMNS = [
    "rule",
    "rule_precision",
    "rule_recall",
    "pool_size",
    "pool_share",
    "group_size",
    "group_share",
    "lift",
    "worst_share",
    "excess",
    "examples",
    "group_ids",
]


def find_slices(
    table: pd.DataFrame,
    in_group: np.ndarray,
    *,
    embedding: np.ndarray | None = None,
    embedding_weight: float = 1.0,
    worst: np.ndarray | None = None,
    top: int = 20,
    clusters: int = 12,
    seed: int = 0,
    min_group: int = 5,
    examples: int = 5,
) -> pd.DataFrame:
    """Slices of ``table`` (one row per pool image, index = image id): the kinds of image ``in_group`` holds.

    1. The NUMERIC attributes in robust units (minus the pool's median, over its interquartile range, clipped
       to +-5: a tail stays far from the bulk without one extreme image stretching the axis), plus membership
       in the group as one more coordinate (Domino's error-aware clustering). With ``embedding`` (what the
       images show, e.g. :func:`embedding_coords`), its coordinates too, scaled so that their total variance
       is ``embedding_weight`` times the attributes': content shapes the clusters, the rules still name them.
    2. k-means (k-means++ seeded by ``seed``, the best of 10 starts) into ``clusters`` clusters of the pool
       (fitted on the group and at most FIT_ROWS other images, so that it scales to any pool).
    3. Each cluster is described by the condition, or pair of conditions on two attributes, whose group images
       best match the cluster's (F1): thresholds at pool quantiles, class values for the CATEGORICAL
       attributes. Clusters that one rule describes together at least as well as each alone are joined (one
       kind of image cut in two by k-means is one finding).
    4. A kind holding at least ``min_group`` group images is a slice, whatever its lift: a kind of image can
       be a clean part of the group without being commoner there than in the pool (the lift column says
       which).
    Ranked by the slice's group size (support), then lift.

    Args:
        in_group: (N,) bool, e.g. membership in M.
        embedding: (N, E) float, the images' content coordinates in ``table``'s row order (optional).
        worst: (N,) bool, e.g. among the lowest-rated images of S (optional).
    Returns:
        COLUMNS: rule, how well it matches the slice's group images (rule_precision, rule_recall), pool_size
        and pool_share (the cluster), group_size, group_share, lift, worst_share, excess (group share - pool
        share), examples (the first ``examples`` of the slice's group images) and group_ids (all of them); ids
        ';'-joined.
    """
    in_group = np.asarray(in_group, dtype=bool)
    if len(in_group) != len(table):
        raise ValueError(f"in_group has {len(in_group)} entries for {len(table)} images")
    n, n_group = len(table), int(in_group.sum())
    if n == 0 or n_group == 0:
        return pd.DataFrame(columns=COLUMNS)
    if clusters < 1:
        raise ValueError(f"clusters must be at least 1, got {clusters}")
    attributes = robust_units(table[[a for a in NUMERIC if a in table]])
    parts = [attributes, in_group[:, None]]
    if embedding is not None and embedding_weight > 0:
        parts.append(scaled_to(np.asarray(embedding, np.float64), attributes, embedding_weight, len(table)))
    coords = np.hstack(parts)
    # the centres are fitted on the group and a seeded sample of the rest, then every image joins its nearest:
    # a pool of a million images costs one pass more than one of FIT_ROWS
    rest = np.flatnonzero(~in_group)
    if len(rest) > FIT_ROWS:
        rest = np.sort(np.random.default_rng(seed).choice(rest, FIT_ROWS, replace=False))
    fit = np.sort(np.concatenate([np.flatnonzero(in_group), rest]))
    labels, _ = nearest(coords, kmeans(coords[fit], min(clusters, len(fit)), seed))
    group = table[in_group]
    singles = [(c, c.mask(group)) for c in _conditions(table)]
    kinds = [labels == c for c in range(labels.max() + 1) if (in_group & (labels == c)).any()]
    ids = table.index.to_numpy()
    rows = []
    for members, (conditions, precision, recall) in _merge_alike(kinds, in_group, singles):
        size, group_size = int(members.sum()), int((members & in_group).sum())
        if group_size < min_group:
            continue
        slice_ids = sorted(ids[members & in_group])
        rows.append(
            {
                "rule": " and ".join(c.words() for c in conditions) or "(no rule separates it)",
                "rule_precision": precision,
                "rule_recall": recall,
                "pool_size": size,
                "pool_share": size / n,
                "group_size": group_size,
                "group_share": group_size / n_group,
                "lift": (group_size / size) / (n_group / n),
                "worst_share": float(worst[members].sum() / max(int(worst.sum()), 1)) if worst is not None else None,
                "excess": group_size / n_group - size / n,
                "examples": ";".join(slice_ids[:examples]),
                "group_ids": ";".join(slice_ids),
            }
        )
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    ranked = pd.DataFrame(rows, columns=COLUMNS).sort_values(
        ["group_size", "lift", "rule"], ascending=[False, False, True]
    )
    return ranked.head(top).reset_index(drop=True)


def _merge_alike(kinds: list[np.ndarray], in_group: np.ndarray, singles: list) -> list:
    """Join clusters that one rule describes together well (F1 >= JOIN_F1) and at least as well as each alone:
    k-means cuts a large kind of image into parts ("contrast < 0.3 and noise >= 0.02", "contrast < 0.3 and
    noise < 0.02") that are one finding. Greedy, the best join first. Returns each kind's pool mask with its
    description (see _describe)."""
    described = [(kind, _describe(singles, kind[in_group])) for kind in kinds]
    joints: dict[tuple[int, int], tuple] = {}  # a pair's joint description, by the kinds' ids
    ids = list(range(len(kinds)))
    while True:
        best = None
        for i, (a, (*_, fa)) in enumerate(described):
            for j in range(i + 1, len(described)):
                b, (*_, fb) = described[j]
                key = (ids[i], ids[j])
                if key not in joints:
                    joints[key] = _describe(singles, (a | b)[in_group])
                joint = joints[key]
                if joint[3] >= max(fa, fb, JOIN_F1) and (best is None or joint[3] > best[2][3]):
                    best = (i, j, joint)
        if best is None:
            return [(kind, description[:3]) for kind, description in described]
        i, j, joint = best
        described[i] = (described[i][0] | described[j][0], joint)
        ids[i] = len(kinds) + len(joints)  # a new id: the joined kind's pairs are described afresh
        del described[j], ids[j]


def scaled_to(x: np.ndarray, reference: np.ndarray, weight: float, n: int) -> np.ndarray:
    """(N, E) ``x`` scaled so that its total variance is ``weight`` times the (N, A) ``reference``'s (the two
    then pull on k-means' distances in that ratio, whatever their dimensions); ValueError unless it has ``n``
    rows."""
    if x.ndim != 2 or len(x) != n:
        raise ValueError(f"embedding must be (N, E) for {n} images, got {x.shape}")
    spread = float(x.var(axis=0).sum())
    return x * np.sqrt(weight * float(reference.var(axis=0).sum()) / spread) if spread > 0 else x * 0.0


def embedding_coords(features: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """(N, D) image features -> their first ``dims`` principal components (N, min(dims, D, N)) float64.

    Fitted on at most FIT_ROWS images drawn with ``seed`` (a million-image pool costs one projection more);
    each component's sign is fixed (its largest loading positive), so the same features give the same numbers.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got {x.shape}")
    fit = x
    if len(x) > FIT_ROWS:
        fit = x[np.sort(np.random.default_rng(seed).choice(len(x), FIT_ROWS, replace=False))]
    centre = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - centre, full_matrices=False)
    vt = vt[: max(0, min(dims, len(vt)))]
    vt *= np.where(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    return (x - centre) @ vt.T


def robust_units(values: pd.DataFrame, clip: float = 5.0) -> np.ndarray:
    """(N, A) attributes -> (N, A') float64: each minus its median over its interquartile range (the standard
    deviation where that is 0), clipped to +-``clip``; constant attributes are dropped."""
    x = values.to_numpy(dtype=np.float64)
    centre = np.median(x, axis=0)
    q1, q3 = np.quantile(x, [0.25, 0.75], axis=0)
    scale = np.where(q3 > q1, q3 - q1, x.std(axis=0))
    keep = scale > 0
    return np.clip((x[:, keep] - centre[keep]) / scale[keep], -clip, clip)


def kmeans(x: np.ndarray, k: int, seed: int, starts: int = 10, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means of (N, D) points from k-means++ starts drawn with ``seed``: the (k, D) centres of the
    start with the least inertia. Deterministic for the same input and seed; distances are taken in chunks of
    rows."""
    rng = np.random.default_rng(seed)
    best_inertia, best = np.inf, np.zeros((k, x.shape[1]))
    for _ in range(starts):
        centres = _kmeans_plus_plus(x, k, rng)
        labels = None
        for _ in range(iterations):
            new, distance = nearest(x, centres)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            sums = np.stack([np.bincount(labels, weights=x[:, d], minlength=k) for d in range(x.shape[1])], 1)
            filled = counts > 0  # an emptied cluster keeps its centre
            centres[filled] = sums[filled] / counts[filled, None]
        inertia = float(distance.sum())
        if inertia < best_inertia:
            best_inertia, best = inertia, centres
    return best


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    distance = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = distance.sum()
        pick = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        distance = np.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    return np.array(centres)


def nearest(x: np.ndarray, centres: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Each of the (N, D) points' nearest of the (k, D) centres: labels (N,) int64 and squared distances
    (N,)."""
    labels, distance = np.empty(len(x), np.int64), np.empty(len(x))
    c2 = (centres**2).sum(1)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        d = (part**2).sum(1)[:, None] - 2 * part @ centres.T + c2[None, :]
        labels[start : start + chunk] = d.argmin(1)
        distance[start : start + chunk] = d.min(1)
    return labels, np.maximum(distance, 0)


def _describe(singles: list[tuple[Condition, np.ndarray]], target: np.ndarray, beam: int = 8):
    """The condition, or pair on two attributes, whose group images best match ``target`` (F1), with its
    precision, recall and F1. ``singles``: each condition with its mask over the group images."""

    def f1(mask: np.ndarray) -> float:
        return 2 * float((mask & target).sum()) / (float(mask.sum()) + float(target.sum()))

    if not singles:  # a pool too small or too uniform for any condition to separate images
        return (), 0.0, 0.0, 0.0
    ranked = sorted(singles, key=lambda s: (-f1(s[1]), s[0].words()))
    (best_condition, best_mask), best_score = ranked[0], f1(ranked[0][1])
    best = (best_condition,)
    for c1, m1 in ranked[:beam]:
        for c2, m2 in singles:
            if c2.attribute != c1.attribute and (score := f1(m1 & m2)) > best_score:
                best, best_mask, best_score = (
                    tuple(sorted((c1, c2), key=lambda c: c.attribute)),
                    m1 & m2,
                    score,
                )
    hits = float((best_mask & target).sum())
    return best, hits / max(float(best_mask.sum()), 1.0), hits / max(float(target.sum()), 1.0), best_score


def _conditions(table: pd.DataFrame) -> list[Condition]:
    """Threshold conditions at the pool's quantiles of the NUMERIC attributes and the values of the
    CATEGORICAL ones; a condition that holds for (nearly) every pool image or none says nothing."""
    out = []
    for attribute in NUMERIC:
        if attribute not in table:
            continue
        values = table[attribute].to_numpy(dtype=float)
        for q in QUANTILES:
            out.append(Condition(attribute, "<" if q < 0.5 else ">=", float(np.quantile(values, q))))
    for attribute in CATEGORICAL:
        if attribute in table:
            out += [Condition(attribute, "==", v) for v in sorted(table[attribute].unique())]
    n = len(table)
    return [c for c in dict.fromkeys(out) if 0 < c.mask(table).sum() <= 0.95 * n]


def slice_table(attributes: pd.DataFrame, target_stats: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The pool's attributes (index = image id) joined with the target's predicted main class, its area and
    the target's entropy (from PredictionStore.stats(): id, area_<class>..., entropy): what slices are found
    in."""
    stats = target_stats.set_index("id")
    return attributes.join(prediction_attributes(stats, class_names)).join(stats["entropy"])


def round_slices(
    attributes: pd.DataFrame,
    target_stats: pd.DataFrame,
    class_names: Sequence[str],
    m_ids: Sequence[str],
    mos: pd.DataFrame | None = None,
    *,
    embedding_ids: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    embedding_dims: int = 32,
    embedding_weight: float = 1.0,
    top: int = 20,
    clusters: int = 15,
    seed: int = 0,
) -> pd.DataFrame:
    """The slices of one round's M in the pool, with each slice's share of the lowest-rated images.

    Args:
        attributes: index = image id, the :func:`madseg.attributes.image_attributes` columns.
        target_stats: the target's PredictionStore.stats() (id, area_<class>..., entropy).
        m_ids: the images of M.
        mos: the round's ratings (image_id, mos, vetoed): the lowest-rated quarter of the rated, non-vetoed
            images of M are "worst". None: no ratings yet.
        embedding_ids, embeddings: the pool's image features (N, D) and whose they are (the embed stage's
            store), reduced to ``embedding_dims`` principal components and clustered beside the attributes with
            ``embedding_weight`` (:func:`find_slices`). None, or a weight of 0: the attributes alone.
    Returns:
        find_slices' columns.
    """
    table = slice_table(attributes, target_stats, class_names)
    embedding = None
    if embeddings is not None and embedding_dims > 0 and embedding_weight > 0:
        rows = pd.Index(list(embedding_ids if embedding_ids is not None else [])).get_indexer(table.index)
        if (rows < 0).any():
            raise ValueError(f"no embedding for {int((rows < 0).sum())} of the {len(table)} pool images")
        embedding = embedding_coords(np.asarray(embeddings)[rows], embedding_dims, seed)
    in_m = table.index.isin(list(m_ids))
    worst = None
    if mos is not None and len(mos):
        rated = mos[~mos["vetoed"].astype(bool)]
        cut = rated["mos"].quantile(0.25)
        worst = table.index.isin(rated.loc[rated["mos"] <= cut, "image_id"])
    return find_slices(
        table,
        in_m,
        embedding=embedding,
        embedding_weight=embedding_weight,
        worst=worst,
        top=top,
        clusters=clusters,
        seed=seed,
    )


def factors_recovered(slices: pd.DataFrame, m_factors: pd.Series, factors: Sequence[str], top: int = 10) -> list[str]:
    """Which hidden-truth ``factors`` the ``top`` slices recover (for validating slices on a labelled pool).

    A factor is recovered when one slice has at least half (RECOVERY_PURITY) of its M images carrying the
    factor and holds at least a fifth (RECOVERY_COVERAGE) of M's images with it. ``m_factors``: image id of M
    -> ';'-joined factors.
    """
    got = []
    members = [set(str(g).split(";")) - {""} for g in slices["group_ids"].head(top)]
    for factor in factors:
        carrying = {i for i, fs in m_factors.items() if factor in str(fs).split(";")}
        if carrying and any(_recovers(len(s & carrying), len(s), len(carrying)) for s in members if s):
            got.append(factor)
    return got


def _recovers(hits: int | np.ndarray, size: int | np.ndarray, carrying: int) -> bool | np.ndarray:
    """Whether a slice of ``size`` group images, ``hits`` of them carrying a factor that ``carrying`` group
    images carry, recovers it (ints, or arrays of them elementwise): the one test of :func:`factors_recovered`
    and :func:`hindsight_rules`."""
    return (hits >= RECOVERY_PURITY * size) & (hits >= RECOVERY_COVERAGE * carrying)


def hindsight_rules(
    table: pd.DataFrame,
    in_group: np.ndarray,
    group_factors: pd.Series,
    factors: Sequence[str],
    min_group: int = 5,
) -> dict[str, str | None]:
    """For each hidden-truth factor, the rule of one or two conditions, from the vocabulary
    :func:`find_slices` names its slices with, whose group images would recover the factor
    (:func:`factors_recovered`'s test), or None. Found by searching with the truth, so it is no finding: it
    bounds what a finder whose slices such rules describe could recover. The purest single condition wins,
    else the purest pair (then the largest).

    Args:
        table: one row per pool image (index = image id), as for find_slices.
        in_group: (N,) bool, e.g. membership in M.
        group_factors: image id of the group -> ';'-joined factors.
    """
    in_group = np.asarray(in_group, dtype=bool)
    conditions, group = _conditions(table), table[in_group]
    if not conditions or group.empty:
        return dict.fromkeys(factors)
    masks = np.array([c.mask(group) for c in conditions])  # (C, |group|)
    attribute = np.array([c.attribute for c in conditions])
    carried = group_factors.reindex(group.index).fillna("").astype(str).str.split(";")
    found: dict[str, str | None] = {}
    for factor in factors:
        y = carried.apply(lambda fs, f=factor: f in fs).to_numpy()

        def purest(candidates: np.ndarray, rules: list[tuple], y: np.ndarray = y) -> tuple | None:
            """(purity, size, rule) of the purest recovering candidate (then the largest), or None."""
            size, hits = candidates.sum(1), (candidates & y).sum(1)
            ok = (size >= min_group) & _recovers(hits, size, y.sum()) & (hits > 0)
            return max(
                ((hits[i] / size[i], int(size[i]), rules[i]) for i in np.flatnonzero(ok)),
                key=lambda t: t[:2],
                default=None,
            )

        best = purest(masks, [(c,) for c in conditions])
        for first in range(len(conditions) if best is None else 0):  # pairs on two attributes, each once
            others = np.flatnonzero(attribute[first + 1 :] != attribute[first]) + first + 1
            pair = purest(masks[first] & masks[others], [(conditions[first], conditions[j]) for j in others])
            if pair is not None and (best is None or pair[:2] > best[:2]):
                best = pair
        found[factor] = (
            None if best is None else " and ".join(c.words() for c in sorted(best[2], key=lambda c: c.attribute))
        )
    return found


def hindsight_bound(
    table: pd.DataFrame,
    in_group: np.ndarray,
    group_factors: pd.Series,
    factors: Sequence[str],
    *,
    shuffles: int = 3,
    seed: int = 0,
) -> dict:
    """What a finder whose slices are named by rules could recover at best, and its chance level.

    Returns ``hindsight_rules`` (:func:`hindsight_rules`' rule per factor),
    ``factors_describable_in_hindsight`` (how many have one) and ``factors_describable_shuffled``: the mean of
    that count with the factors shuffled among the group's images (``shuffles`` permutations seeded by
    ``seed``), since among thousands of rules some small slice fits even labels that mean nothing.
    """
    rules = hindsight_rules(table, in_group, group_factors, factors)
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(shuffles):
        permuted = pd.Series(rng.permutation(group_factors.to_numpy()), index=group_factors.index)
        shuffled.append(sum(r is not None for r in hindsight_rules(table, in_group, permuted, factors).values()))
    return {
        "factors_describable_in_hindsight": sum(r is not None for r in rules.values()),
        "factors_describable_shuffled": float(np.mean(shuffled)),
        "hindsight_rules": rules,
    }
