"""Streaming MAD (the source paper's Eq. 1 and 2): per (competitor, class, direction) the top-n3 images by
distance, over prediction shards read one at a time.

For each competitor g_j, each foreground class k and each direction, the pool is partitioned by one model's
predicted map (direction ``t``: the target's, ``c``: the competitor's): an image belongs to D_k if at least one
pixel is predicted k, and is kept if its predicted area fraction of k lies in [p_k, q_k]. The top-n3 images by
distance d(f_t(x), g_j(x)) form the group (j, k, direction).

Beyond the paper, ``rank_by='committee'`` ranks every group by the target's mean distance to all competitors
instead of to g_j alone: an image where one competitor disagrees with the target is often that competitor's
failure, one where all of them disagree is more often the target's. The groups (and so the per-class coverage and
the size filter) stay the paper's; groups of one class and direction ``t`` then hold the same images, so M is
smaller for the same n3.

Scale: shards are streamed in lockstep; each group keeps only its running top-n3, so memory is bounded by the
shard size and the number of groups, not by the pool. Time is linear in pool size x competitors. Wherever the
shards are mined (this process, Ray tasks), :func:`shard_tops` and :func:`merge_tops` give the same M.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from madseg.io.shard import Shard
from madseg.labels import ClassList
from madseg.mining.bands import check_bands
from madseg.mining.columns import CANDIDATE_COLUMNS, DIRECTIONS
from madseg.mining.kernel import DISTANCE_DECIMALS, TargetShard, check_distance

log = logging.getLogger(__name__)

# pair: the paper's (distance to the group's competitor); committee: the mean distance to all competitors
RANKINGS = ("pair", "committee")
# (competitor, class index, direction) -> the group's best images as (-score, image id, target's areas,
# distance to the group's competitor), sorted; score descending, then id ascending
GroupTops = dict[tuple[str, int, str], list[tuple[float, str, np.ndarray, float]]]


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
    rank_by: str = "pair",
) -> GroupTops:
    """Each MAD group's top-n3 within one shard: the partial result that :func:`merge_tops` folds together,
    wherever the shards were mined (this process, a pool of processes, Ray tasks).

    ``competitors`` yields (name, shard) pairs and is consumed one pair at a time, so only the target's shard
    and one competitor's are in memory together. ``rank_by``: one of RANKINGS (see the module's docstring).
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
    versus = {}  # competitor -> (its areas (N, K), its distance to the target (N,)); the shard itself is let go
    for name, other in competitors:
        versus[name] = side.versus(other, name, distance)
        del other
    if rank_by == "committee":
        committee = np.round(np.mean([dist for _, dist in versus.values()], axis=0), DISTANCE_DECIMALS)
    for name, (c_area, dist) in versus.items():
        score = committee if rank_by == "committee" else dist
        c_ok = (c_area[:, fg] > 0) & (c_area[:, fg] >= lo) & (c_area[:, fg] <= hi) & eligible
        for d, ok in (("t", t_ok), ("c", c_ok)):
            for col in np.flatnonzero(ok.any(0)):
                idx = np.flatnonzero(ok[:, col])
                idx = idx[np.lexsort((id_arr[idx], -score[idx]))[:n3]]
                tops[(name, int(fg[col]), d)] = [
                    (-float(score[i]), side.ids[i], t_area[i], float(dist[i])) for i in idx
                ]
    return tops


def merge_tops(into: GroupTops, part: GroupTops, n3: int) -> None:
    """Fold one shard's tops into the running ones (in place); the result does not depend on shard order."""
    for key, group in part.items():
        merged = into.setdefault(key, [])
        merged.extend(group)
        merged.sort(key=lambda e: (e[0], e[1]))
        del merged[n3:]


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
                raise ValueError(
                    f"competitor {name!r} has fewer shards than the target: missing shard {s} "
                    f"(images from {t.ids[0] if t.ids else '?'})"
                )
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
    rank_by: str = "pair",
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
        rank_by: 'pair' (the paper's) or 'committee' (see the module's docstring).
    Returns:
        candidates: one row per (group, image) with columns CANDIDATE_COLUMNS (strategy 'mad', distance to the
        group's competitor, score = what the group is ranked by: that distance, or the mean distance to all
        competitors; rank 1-based within the group) plus area_<class> for every class (the target's predicted
        area fractions).
        Groups in order competitor, class index, direction (t, c); within a group rows are ordered by score
        descending, then image_id ascending (ties are deterministic).
    """
    check_mad_args(competitor_shards, bands, classes, n3, distance, rank_by)
    tops: GroupTops = {}
    seen = 0
    shards = _lockstep(target_shards, competitor_shards)
    for s, t, competitors in tqdm(shards, total=total, disable=not progress, desc="mine", unit="shard"):
        seen += len(t.ids)
        part = shard_tops(
            t, competitors, bands, classes, n3=n3, distance=distance, exclude=exclude, shard_index=s, rank_by=rank_by
        )
        merge_tops(tops, part, n3)
        del t, competitors  # before the next shard is read, so one shard's maps are in memory at a time
    log.info("mined %d images x %d competitors", seen, len(competitor_shards))
    return mad_frame(tops, list(competitor_shards), classes)


def check_mad_args(
    competitors: Mapping | Sequence,
    bands: np.ndarray,
    classes: ClassList,
    n3: int,
    distance: str,
    rank_by: str = "pair",
) -> None:
    """ValueError for MAD arguments no backend can mine: n3 < 1, an unknown distance or ranking, no competitor,
    bad bands."""
    if n3 < 1:
        raise ValueError(f"n3 must be >= 1, got {n3}")
    check_distance(distance)
    if rank_by not in RANKINGS:
        raise ValueError(f"unknown mining.rank_by {rank_by!r}; valid: {list(RANKINGS)}")
    if not competitors:
        raise ValueError("MAD needs at least one competitor, got none")
    check_bands(bands, classes)


def mad_frame(tops: GroupTops, competitors: Sequence[str], classes: ClassList) -> pd.DataFrame:
    """The candidate table of merged tops (see :func:`mine_mad`); groups in order competitor (as given), class
    index, direction."""
    keys = [(j, c, d) for j in competitors for c in range(1, classes.num_classes) for d in DIRECTIONS]
    area_cols = [f"area_{c}" for c in classes.names]
    records, areas = [], []
    for j, c, d in keys:
        for rank, (neg_score, image, area, dist) in enumerate(tops.get((j, c, d), ()), start=1):
            records.append(("mad", image, j, classes.names[c], d, dist, -neg_score, rank))
            areas.append(area)
    df = pd.DataFrame.from_records(records, columns=list(CANDIDATE_COLUMNS))
    area_df = pd.DataFrame(np.stack(areas) if areas else np.zeros((0, len(area_cols))), columns=area_cols)
    return pd.concat([df, area_df], axis=1)
