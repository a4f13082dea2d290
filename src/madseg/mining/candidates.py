"""A round's candidates: one interface for every strategy, their deduplicated union M, and its summary.

Every strategy returns the same candidate table (:data:`CANDIDATE_COLUMNS` plus area_<class>); MAD runs first,
since its |M| is the budget a baseline spends, so every strategy costs the raters the same effort.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from madseg.io.shard import Shard
from madseg.labels import ClassList
from madseg.mining.baselines import check_stats, entropy_candidates, random_candidates
from madseg.mining.columns import CANDIDATE_COLUMNS, M_COLUMNS
from madseg.mining.mad import mine_mad

STRATEGIES = ("mad", "entropy", "random")


def check_strategy(strategy: str) -> None:
    """ValueError unless ``strategy`` is one of STRATEGIES."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {list(STRATEGIES)}")


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
    rank_by: str = "pair",
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
    check_strategy(strategy)
    if strategy == "mad":
        if target_shards is None or competitor_shards is None or bands is None or n3 is None:
            raise ValueError("strategy 'mad' needs target_shards, competitor_shards, bands and n3")
        excluded = frozenset(exclude)
        return mine_mad(
            target_shards,
            competitor_shards,
            bands,
            classes,
            n3=n3,
            distance=distance,
            rank_by=rank_by,
            progress=progress,
            total=total,
            exclude=excluded,
        )
    if target_stats is None or budget is None:
        raise ValueError(f"strategy {strategy!r} needs target_stats and budget")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    stats = check_stats(target_stats, classes)
    stats = stats[~stats["id"].isin(list(exclude))]
    if strategy == "entropy":
        return entropy_candidates(stats, budget, classes)
    return random_candidates(stats, budget, classes, seed)


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
    m = pd.DataFrame(
        {
            "image_id": first.index.to_numpy(),
            "strategy": first["strategy"].to_numpy(),
            "n_groups": g.size().to_numpy(),
            "best_distance": g["distance"].max().to_numpy(),
            "best_score": g["score"].max().to_numpy(),
            "competitor": first["competitor"].to_numpy(),
            "class": first["class"].to_numpy(),
            "direction": first["direction"].to_numpy(),
            "distance": first["distance"].to_numpy(),
            "rank": first["rank"].to_numpy(),
        }
    )
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


def proposal(
    strategy: str,
    mad: pd.DataFrame,
    *,
    classes: ClassList,
    target_stats: pd.DataFrame | None,
    seed: int,
    exclude: Iterable[str] = (),
) -> Proposal:
    """A round's candidates by ``strategy``, given MAD's candidate table ``mad`` (mined with the same
    ``exclude``): MAD's own, or a baseline's spending MAD's |M| (``target_stats``: the target's per-image
    statistics, see :func:`select_candidates`; unused for 'mad')."""
    check_strategy(strategy)
    mad_m = summarize_m(mad)
    if strategy == "mad":
        return Proposal(mad, mad_m, mad, mad_m)
    candidates = select_candidates(
        strategy, classes=classes, budget=len(mad_m), target_stats=target_stats, seed=seed, exclude=exclude
    )
    return Proposal(candidates, summarize_m(candidates), mad, mad_m)
