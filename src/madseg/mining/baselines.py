"""The baselines that spend MAD's budget: the target's most uncertain images (entropy) and a seeded random draw.

Both read only the target's per-image statistics (a frame of id, area_<class>..., entropy), never its maps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from madseg.labels import ClassList
from madseg.mining.columns import NONE


def check_stats(target_stats: pd.DataFrame, classes: ClassList) -> pd.DataFrame:
    """The target's statistics, refused (ValueError) without the columns id, entropy and area_<class>, or with
    repeated ids."""
    cols = [f"area_{c}" for c in classes.names]
    missing = [c for c in ["id", "entropy", *cols] if c not in target_stats.columns]
    if missing:
        raise ValueError(f"target stats lack columns {missing}; has {list(target_stats.columns)}")
    dup = target_stats["id"].duplicated()
    if dup.any():
        raise ValueError(f"target stats repeat image ids, e.g. {target_stats['id'][dup].iloc[0]}")
    return target_stats


def _baseline_frame(strategy: str, picked: pd.DataFrame, score: np.ndarray, classes: ClassList) -> pd.DataFrame:
    cols = [f"area_{c}" for c in classes.names]
    df = pd.DataFrame(
        {
            "strategy": strategy,
            "image_id": picked["id"].to_numpy(),
            "competitor": NONE,
            "class": NONE,
            "direction": NONE,
            "distance": np.nan,
            "score": score,
            "rank": np.arange(1, len(picked) + 1),
        }
    )
    return pd.concat([df, picked[cols].reset_index(drop=True).astype(np.float64)], axis=1)


def entropy_candidates(target_stats: pd.DataFrame, budget: int, classes: ClassList) -> pd.DataFrame:
    """The ``budget`` images with the highest mean pixel entropy of the target's prediction (ties: id asc).

    Args:
        target_stats: PredictionStore.stats() of the target: columns id, area_<class>..., entropy.
    Returns:
        candidates (CANDIDATE_COLUMNS + area_*), score = mean entropy (nats), rank 1 = most uncertain.
    """
    stats = check_stats(target_stats, classes)
    order = np.lexsort((stats["id"].to_numpy(), -stats["entropy"].to_numpy(np.float64)))[:budget]
    picked = stats.iloc[order]
    return _baseline_frame("entropy", picked, picked["entropy"].to_numpy(np.float64), classes)


def random_candidates(target_stats: pd.DataFrame, budget: int, classes: ClassList, seed: int) -> pd.DataFrame:
    """A seeded uniform sample of ``budget`` images from all of D (score NaN, rank = draw order)."""
    stats = check_stats(target_stats, classes)
    stats = stats.sort_values("id", kind="stable").reset_index(drop=True)  # the draw must not follow row order
    rng = np.random.default_rng(seed)
    draw = rng.choice(len(stats), size=min(budget, len(stats)), replace=False)
    return _baseline_frame("random", stats.iloc[draw], np.full(len(draw), np.nan), classes)
