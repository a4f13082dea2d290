"""MAD mining with content-aware partitioning, and the entropy / random baselines behind one interface.

Pure: prediction shards, statistics frames and bands in, candidate frames out; no store, manifest or file is
read here (the backends and stages read them, :mod:`madseg.backends`). Mining never sees ground truth of the
pool: only predictions (and S0's truth, through the caller, for the default area bands).

- :mod:`~madseg.mining.bands`: the area bands [p_k, q_k];
- :mod:`~madseg.mining.kernel`: the per-shard statistics (areas of both maps, their distance);
- :mod:`~madseg.mining.mad`: streaming MAD, each group's running top-n3;
- :mod:`~madseg.mining.baselines`: entropy and random candidates with MAD's budget;
- :mod:`~madseg.mining.candidates`: one interface for every strategy, M and its summary;
- :mod:`~madseg.mining.columns`: the candidate table's columns.
"""

from madseg.mining.bands import area_bands, area_matrix, bands_frame, check_bands, class_area_fractions
from madseg.mining.baselines import entropy_candidates, random_candidates
from madseg.mining.candidates import (
    STRATEGIES,
    Proposal,
    check_strategy,
    mining_summary,
    proposal,
    select_candidates,
    summarize_m,
)
from madseg.mining.columns import CANDIDATE_COLUMNS, DIRECTIONS, M_COLUMNS, NONE
from madseg.mining.kernel import (
    DISTANCE_DECIMALS,
    DISTANCES,
    TargetShard,
    check_distance,
    disagreements,
    image_histograms,
    shard_pair_stats,
)
from madseg.mining.mad import GroupTops, check_mad_args, mad_frame, merge_tops, mine_mad, shard_tops

__all__ = [
    "CANDIDATE_COLUMNS",
    "DIRECTIONS",
    "DISTANCES",
    "DISTANCE_DECIMALS",
    "M_COLUMNS",
    "NONE",
    "STRATEGIES",
    "GroupTops",
    "Proposal",
    "TargetShard",
    "area_bands",
    "area_matrix",
    "bands_frame",
    "check_bands",
    "check_distance",
    "check_mad_args",
    "check_strategy",
    "class_area_fractions",
    "disagreements",
    "entropy_candidates",
    "image_histograms",
    "mad_frame",
    "merge_tops",
    "mine_mad",
    "mining_summary",
    "proposal",
    "random_candidates",
    "select_candidates",
    "shard_pair_stats",
    "shard_tops",
    "summarize_m",
]
