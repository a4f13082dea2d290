"""From weak labels to the sets people label: mean opinion scores, vetoes, S^(i+1) and T^(i+1).

All functions are pure: they take tables of ids and scores and return tables; the stages read and write files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.rater_model import estimate

SCORE_LEVELS = ("bad", "poor", "fair", "good", "excellent")  # 1..5


def mean_opinion_scores(scores: pd.DataFrame, candidates: Sequence[str]) -> pd.DataFrame:
    """Mean opinion score per candidate image; any out-of-domain vote vetoes the image (MOS = +inf).

    Args:
        scores: one row per (image_id, annotator) with columns image_id, annotator, score (1..5),
            out_of_domain (bool).
        candidates: the image ids that were sent for rating (M); every one must have at least one rating.
    Returns:
        DataFrame indexed 0..n-1 with columns image_id, mos (float, +inf if vetoed), n_ratings, n_vetoes,
        vetoed, sorted by (mos, image_id) — the order in which S is taken.
    """
    required = {"image_id", "annotator", "score", "out_of_domain"}
    missing = required - set(scores.columns)
    if missing:
        raise ValueError(f"scores table lacks columns {sorted(missing)}")
    bad = scores[~scores["score"].isin(range(1, 6))]
    if len(bad):
        raise ValueError(f"scores outside 1..5 for images {bad['image_id'].tolist()[:5]}")
    unknown = sorted(set(scores["image_id"]) - set(candidates))
    if unknown:
        raise ValueError(f"ratings for images that were not candidates: {unknown[:5]}")
    unrated = sorted(set(candidates) - set(scores["image_id"]))
    if unrated:
        raise ValueError(f"{len(unrated)} candidate images have no rating, e.g. {unrated[:5]}")
    ood = scores["out_of_domain"].astype(bool)
    grouped = scores.assign(ood=ood).groupby("image_id", sort=True)
    table = pd.DataFrame(
        {
            "mean_score": grouped["score"].mean(),
            "n_ratings": grouped["score"].size(),
            "n_vetoes": grouped["ood"].sum().astype(int),
        }
    ).reset_index()
    table["vetoed"] = table["n_vetoes"] > 0
    table["mos"] = np.where(table["vetoed"], np.inf, table["mean_score"])
    table = table.sort_values(["mos", "image_id"], kind="stable").reset_index(drop=True)
    return table[["image_id", "mos", "mean_score", "n_ratings", "n_vetoes", "vetoed"]]


def opinion_scores(scores: pd.DataFrame, candidates: Sequence[str], how: str = "mean") -> pd.DataFrame:
    """:func:`mean_opinion_scores`, or with ``how='rater_model'`` the images' quality under the rater model
    (:mod:`madseg.rater_model`: each rater's bias removed, consistent raters weighing more) in the
    ``mos`` column; vetoes and the (mos, image_id) order as before."""
    table = mean_opinion_scores(scores, candidates)
    if how == "mean":
        return table
    if how != "rater_model":
        raise ValueError(f"unknown score aggregation {how!r}; valid: mean, rater_model")
    quality = estimate(scores).quality
    modelled = table["image_id"].astype(str).map(quality).to_numpy(dtype=float)
    table["mos"] = np.where(table["vetoed"], np.inf, modelled)
    return table.sort_values(["mos", "image_id"], kind="stable").reset_index(drop=True)


def select_lowest(mos: pd.DataFrame, n4: int, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """S^(i+1): the ``n4`` lowest-MOS images of M, never a vetoed one, none already in S^(1..i).

    Returns the chosen rows of ``mos`` in MOS order (fewer than n4 if M has too few eligible images).
    """
    if n4 < 0:
        raise ValueError(f"n4 must be >= 0, got {n4}")
    return mos[_may_enter_S(mos, exclude)].head(n4).reset_index(drop=True)


def _may_enter_S(mos: pd.DataFrame, exclude: Iterable[str]) -> pd.Series:
    """Per row of ``mos``: neither vetoed nor already in S^(1..i)."""
    return ~mos["vetoed"] & ~mos["image_id"].isin(set(exclude))


def ratings_left_no_choice(mos: pd.DataFrame, n4: int, exclude: Iterable[str] = ()) -> str | None:
    """Why the ratings chose nothing, when S^(i+1) must take every image of M that it may take.

    Vetoed images and those already in S^(1..i) (``exclude``) cannot enter S. When no more than ``n4`` of M are
    left, S is all of them, the target's successes included, and the round's ratings bought nothing. After a
    fine-tune the target is right on its S images where the fixed competitors are still wrong, so MAD proposes
    them again (measured on the photo world: docs/photo_world.md).

    Returns:
        the warning to give (what M held, and what to change), or None while the ratings still choose.
    """
    vetoed = int(mos["vetoed"].sum())
    eligible = int(_may_enter_S(mos, exclude).sum())
    again = len(mos) - vetoed - eligible
    if n4 == 0 or eligible > n4:
        return None
    short = f", fewer than n4 = {n4}" if eligible < n4 else ""
    free = (
        ", or set mining.exclude_trained_on: true to give new images the places of those fine-tuned on" if again else ""
    )
    return (
        f"S takes all {eligible} images of M ({len(mos)}) that it may take{short}: {again} already fine-tuned on, "
        f"{vetoed} vetoed as out-of-domain, so the ratings chose nothing — raise mining.n3{free}"
    )


def select_round_robin(
    mos: pd.DataFrame,
    candidates: pd.DataFrame,
    n4: int,
    exclude: Iterable[str] = (),
    pool_factor: float = 2.0,
) -> pd.DataFrame:
    """S^(i+1) spread over MAD's groups: among the ``pool_factor * n4`` lowest-MOS eligible images (never
    vetoed, none already in S^(1..i)), each (competitor, class, direction) group in turn gives its lowest-MOS
    image not yet taken, until ``n4``. Taking only the lowest MOS piles S onto the factor the raters find
    worst; the groups are what makes MAD's candidates diverse (see the README's recipe notes).

    Args:
        mos: :func:`opinion_scores`' table.
        candidates: the round's candidate rows (image_id, competitor, class, direction); an image found by
            several groups is eligible in each and taken once.
    Returns:
        the chosen rows of ``mos``, in MOS order.
    """
    if n4 < 0:
        raise ValueError(f"n4 must be >= 0, got {n4}")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    pool = select_lowest(mos, int(np.ceil(pool_factor * n4)), exclude)
    rank = {image: n for n, image in enumerate(pool["image_id"])}  # pool is in (mos, image_id) order
    groups: dict[tuple, list[str]] = {}
    c = candidates[candidates["image_id"].isin(rank)]
    for image, *group in zip(c["image_id"], c["competitor"], c["class"], c["direction"], strict=True):
        groups.setdefault(tuple(group), []).append(image)
    queues = [sorted(set(ids), key=rank.__getitem__) for _, ids in sorted(groups.items())]
    chosen: set[str] = set()
    while len(chosen) < min(n4, len(pool)) and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < n4:
                chosen.add(queue.pop(0))
    return pool[pool["image_id"].isin(chosen)].reset_index(drop=True)


def main_class(area: pd.DataFrame, class_names: Sequence[str]) -> pd.Series:
    """The main foreground class of each image: the class with the largest predicted area (background apart).

    Args:
        area: rows per image with column ``id`` and ``area_<name>`` for every class in ``class_names``
            (index 0 is background).
    Returns:
        Series indexed by image id with a class name; 'background' where nothing foreground was predicted.
    """
    fg = [f"area_{c}" for c in class_names[1:]]
    values = area[fg].to_numpy()
    best = np.argmax(values, axis=1)
    names = np.array(class_names[1:], dtype=object)[best]
    names[values.max(axis=1) <= 0] = class_names[0]
    return pd.Series(names, index=area["id"].to_numpy(), name="main_class")


def build_test_set(
    mos: pd.DataFrame,
    main_classes: pd.Series,
    *,
    size: int,
    t_cap: int,
    seed: int,
    exclude: Iterable[str] = (),
) -> pd.DataFrame:
    """T^(i+1): an unbiased seeded random sample of M, in its drawn order.

    No vetoed image, none of ``exclude`` (the images used to fine-tune f_t^(i)), at most ``t_cap`` images per
    main class. Images are visited in a seeded random permutation of the sorted ids and accepted while their
    class has room, so the stored order is the draw order (the stability check uses its first k images).

    Returns:
        DataFrame with columns order (0..size-1), image_id, main_class, mos.
    Raises:
        ValueError if the eligible images cannot fill ``size`` under the cap.
    """
    excluded = set(exclude)
    eligible = mos[~mos["vetoed"] & ~mos["image_id"].isin(excluded)].sort_values("image_id")
    missing = sorted(set(eligible["image_id"]) - set(main_classes.index))
    if missing:
        raise ValueError(f"no predicted main class for images {missing[:5]}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(eligible))
    taken: list[int] = []
    per_class: dict[str, int] = {}
    for pos in order:
        image = eligible["image_id"].iloc[pos]
        cls = main_classes[image]
        if per_class.get(cls, 0) >= t_cap:
            continue
        per_class[cls] = per_class.get(cls, 0) + 1
        taken.append(pos)
        if len(taken) == size:
            break
    if len(taken) < size:
        raise ValueError(
            f"T needs {size} images but only {len(taken)} of {len(eligible)} eligible candidates fit the "
            f"cap of {t_cap} per main class (per class: {dict(sorted(per_class.items()))}); mine more (n3) "
            "or raise t_cap"
        )
    chosen = eligible.iloc[taken]
    return pd.DataFrame(
        {
            "order": np.arange(size),
            "image_id": chosen["image_id"].to_numpy(),
            "main_class": [main_classes[i] for i in chosen["image_id"]],
            "mos": chosen["mos"].to_numpy(),
        }
    )


def krippendorff_alpha_ordinal(scores: pd.DataFrame) -> float:
    """Krippendorff's alpha for ordinal ratings (1..5) from a table with image_id, annotator, score.

    Images with fewer than two ratings carry no pairable information and are skipped. Returns NaN when no
    image has two ratings or all ratings agree on a single value (no variation to explain).
    """
    pivot = scores.pivot_table(index="image_id", columns="annotator", values="score", aggfunc="first")
    units = [row.dropna().to_numpy() for _, row in pivot.iterrows()]
    units = [u for u in units if len(u) >= 2]
    if not units:
        return float("nan")
    values = np.arange(1, 6)
    # coincidence matrix o[c, k]: pairable values within units, each pair weighted 1 / (m_u - 1)
    o = np.zeros((5, 5))
    for u in units:
        counts = np.array([(u == v).sum() for v in values], dtype=float)
        o += (np.outer(counts, counts) - np.diag(counts)) / (len(u) - 1)
    n_c = o.sum(1)
    n = n_c.sum()
    if n <= 1 or (n_c > 0).sum() < 2:
        return float("nan")
    # ordinal metric: delta(c, k) = (sum of n_g for g between c and k minus (n_c + n_k) / 2) ** 2
    cum = np.cumsum(n_c)
    delta = np.zeros((5, 5))
    for c in range(5):
        for k in range(5):
            lo, hi = min(c, k), max(c, k)
            between = cum[hi] - (cum[lo - 1] if lo > 0 else 0.0)
            delta[c, k] = (between - (n_c[c] + n_c[k]) / 2.0) ** 2
    d_observed = (o * delta).sum() / n
    d_expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return float(1.0 - d_observed / d_expected) if d_expected > 0 else float("nan")


def labelled_set(
    s_all: pd.DataFrame, previous: pd.DataFrame, round_key: str, *, new_masks: Path, previous_masks: Path
) -> pd.DataFrame:
    """S^(1..i+1) as the fine-tune reads it: columns image_id, round, mask (file name), source (its path).

    ``s_all`` (image_id, round) lists every labelled image so far; this round's masks come from ``new_masks``,
    earlier rounds' from the previous labelled set (``previous``: its index.csv, in ``previous_masks``), which
    must be a subset of ``s_all`` (ValueError otherwise).
    """
    if len(previous) and not set(previous["image_id"]) <= set(s_all["image_id"]):
        raise ValueError(
            f"the labelled set of the previous round holds images that S_all.csv of round {round_key} lacks"
        )
    rounds = s_all["round"].astype(str)
    return pd.DataFrame(
        {
            "image_id": s_all["image_id"].tolist(),
            "round": rounds.tolist(),
            "mask": [f"{i}.png" for i in s_all["image_id"]],
            "source": [
                (new_masks if r == round_key else previous_masks) / f"{i}.png"
                for i, r in zip(s_all["image_id"], rounds, strict=True)
            ],
        }
    )
