"""The candidate table's format, shared by MAD and the baselines (one row per (group, image) it proposes)."""

from __future__ import annotations

DIRECTIONS = ("t", "c")  # t: partition and area filter by the target's map; c: by the competitor's
NONE = "-"  # provenance field that does not apply to a strategy (e.g. the competitor of an entropy pick)

CANDIDATE_COLUMNS = ("strategy", "image_id", "competitor", "class", "direction", "distance", "score", "rank")
M_COLUMNS = (
    "image_id", "strategy", "n_groups", "best_distance", "best_score", "competitor", "class", "direction",
    "distance", "rank",
)  # fmt: skip
