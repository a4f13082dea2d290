"""Rating aggregation that models the raters: each rater's bias and inconsistency and each image's quality,
estimated jointly by maximum likelihood (ITU-T P.910 Annex E; Netflix sureal's MLE model, solved by
alternating projections as in sureal's ``MaximumLikelihoodEstimationModel``).

The model: rater i's score of image j is ``u_ij = psi_j + delta_i + nu_i * X``, X ~ N(0, 1). psi_j is the
image's quality, delta_i the rater's bias (a lenient rater scores above the others), nu_i > 0 their
inconsistency (the spread of their scores around psi_j + delta_i). The biases sum to zero (the scale's origin
is the raters' average). Every image need not be rated by every rater: missing scores are simply absent.

Plain maximum likelihood degenerates: it can explain the most consistent rater's scores exactly (nu_i -> 0,
likelihood -> infinity, psi_j = that rater's scores; sureal's estimate collapses the same way). So each
rater's inconsistency is measured against the quality the *other* raters give the image, less that estimate's
own variance: a rater cannot vouch for themself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_INCONSISTENCY = 0.05  # a rater who agrees perfectly with the estimate would get infinite weight


@dataclass(frozen=True)
class RaterModel:
    """The estimate: ``quality`` per image (index image_id), ``bias`` and ``inconsistency`` per rater
    (index annotator), the iterations taken."""

    quality: pd.Series
    bias: pd.Series
    inconsistency: pd.Series
    iterations: int


def estimate(scores: pd.DataFrame, *, max_iterations: int = 500, tolerance: float = 1e-8) -> RaterModel:
    """Maximum-likelihood quality, bias and inconsistency from ratings.

    Args:
        scores: one row per rating, columns image_id, annotator, score (NaN rows, e.g. out-of-domain vetoes,
            are ignored). A rater needs at least two ratings, an image at least one.
    Returns:
        the :class:`RaterModel`.
    Raises:
        ValueError on a missing column or when no rating is left.
    """
    missing = [c for c in ("image_id", "annotator", "score") if c not in scores.columns]
    if missing:
        raise ValueError(f"ratings lack columns {missing}; have {list(scores.columns)}")
    s = scores.dropna(subset=["score"])
    if s.empty:
        raise ValueError("no rating to aggregate")
    images, img = np.unique(s["image_id"].astype(str).to_numpy(), return_inverse=True)
    raters, rat = np.unique(s["annotator"].astype(str).to_numpy(), return_inverse=True)
    u = s["score"].to_numpy(dtype=np.float64)
    n_img, n_rat = len(images), len(raters)

    def per_image(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(img, values * weights, n_img) / np.bincount(img, weights, n_img)

    bias = np.zeros(n_rat)
    spread = np.ones(n_rat)
    quality = per_image(u, np.ones_like(u))
    rated_by = np.bincount(rat, minlength=n_rat)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        weight = 1.0 / spread[rat] ** 2
        new_quality = per_image(u - bias[rat], weight)
        new_bias = np.bincount(rat, u - new_quality[img], n_rat) / rated_by
        new_bias -= new_bias.mean()
        # the image's quality from the other raters (leave this rating out) and that estimate's variance
        w_sum = np.bincount(img, weight, n_img)[img] - weight
        others = np.bincount(img, (u - new_bias[rat]) * weight, n_img)[img] - (u - new_bias[rat]) * weight
        alone = w_sum <= 0  # nobody else rated the image: it says nothing about this rater's consistency
        loo = np.where(alone, 0.0, others / np.where(alone, 1.0, w_sum))
        excess = np.where(alone, 0.0, (u - new_bias[rat] - loo) ** 2 - 1.0 / np.where(alone, 1.0, w_sum))
        counted = np.bincount(rat, ~alone, n_rat)
        variance = np.bincount(rat, excess, n_rat) / np.maximum(counted, 1)
        new_spread = np.where(counted > 0, np.sqrt(np.maximum(variance, MIN_INCONSISTENCY**2)), spread)
        change = max(
            np.abs(new_quality - quality).max(),
            np.abs(new_bias - bias).max(),
            np.abs(new_spread - spread).max(),
        )
        quality, bias, spread = new_quality, new_bias, new_spread
        if change < tolerance:
            break
    return RaterModel(
        quality=pd.Series(quality, index=pd.Index(images, name="image_id"), name="quality"),
        bias=pd.Series(bias, index=pd.Index(raters, name="annotator"), name="bias"),
        inconsistency=pd.Series(spread, index=pd.Index(raters, name="annotator"), name="inconsistency"),
        iterations=iterations,
    )
