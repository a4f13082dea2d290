"""Scoring models on a labelled set (T0, T^(i+1)) and the paper's Table 1 across rounds.

Everything derives from per-image confusion matrices (madseg.metrics): the dataset mIoU sums them, the
per-image view averages per-image mIoUs, and the bootstrap resamples images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from madseg.metrics import confusion_matrix, iou_per_class, mean_iou, miou_from_batch, srcc


def per_image_confusions(
    predictions: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    ids: Sequence[str],
    num_classes: int,
) -> np.ndarray:
    """Confusion matrices of ``predictions`` against ``truth`` for ``ids``: (N, K, K) int64.

    Both mappings hold (H, W) uint8 label maps keyed by image id; a missing id or a shape mismatch is an
    error naming the image.
    """
    out = np.zeros((len(ids), num_classes, num_classes), dtype=np.int64)
    for n, image in enumerate(ids):
        if image not in predictions:
            raise ValueError(f"no prediction for image {image}")
        if image not in truth:
            raise ValueError(f"no ground truth for image {image}")
        if predictions[image].shape != truth[image].shape:
            raise ValueError(
                f"image {image}: prediction {predictions[image].shape} and truth {truth[image].shape} differ in shape"
            )
        out[n] = confusion_matrix(truth[image], predictions[image], num_classes)
    return out


def _resampled_miou(cms: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Dataset mIoU of each resample: ``draws`` (B, N) image indices into ``cms`` (N, K, K) -> (B,)."""
    return miou_from_batch(np.stack([cms[d].sum(0) for d in draws]))


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(scores: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(scores, alpha)), float(np.quantile(scores, 1.0 - alpha))


def bootstrap_miou(cms: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the dataset mIoU, resampling images.

    Args:
        cms: (N, K, K) per-image confusion matrices.
    Returns:
        (low, high) at ``level``.
    """
    if cms.shape[0] == 0:
        return float("nan"), float("nan")
    return _interval(_resampled_miou(cms, _draws(cms.shape[0], n_boot, seed)), level)


def bootstrap_miou_difference(
    cms_a: np.ndarray, cms_b: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Paired percentile interval of mIoU(a) - mIoU(b) over the same images.

    Both models are resampled with the same draws, so the difficulty of the images they share cancels.

    Args:
        cms_a, cms_b: (N, K, K) per-image confusion matrices of the two models against the same labels.
    Returns:
        (low, high) at ``level``, in mIoU units (not points).
    """
    if cms_a.shape != cms_b.shape:
        raise ValueError(f"the two models were scored on different sets: {cms_a.shape} vs {cms_b.shape}")
    draws = _draws(cms_a.shape[0], n_boot, seed)
    return _interval(_resampled_miou(cms_a, draws) - _resampled_miou(cms_b, draws), level)


def score_set(cms: np.ndarray, class_names: Sequence[str], *, n_boot: int, seed: int) -> dict[str, float]:
    """Flat scores of one model on one labelled set from its (N, K, K) per-image confusion matrices.

    Keys: miou (pixels pooled over the set), image_miou (mean of per-image mIoUs), miou_ci_low/high (95 %
    bootstrap over images), n_images, iou.<class> for every class present in truth or prediction.
    """
    total = cms.sum(0)
    scores: dict[str, float] = {
        "miou": mean_iou(total),
        "image_miou": float(miou_from_batch(cms).mean()) if len(cms) else float("nan"),
        "n_images": len(cms),
    }
    scores["miou_ci_low"], scores["miou_ci_high"] = bootstrap_miou(cms, n_boot, seed)
    for name, iou in zip(class_names, iou_per_class(total), strict=True):
        if not np.isnan(iou):
            scores[f"iou.{name}"] = float(iou)
    return scores


def flatten(prefix: str, scores: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": v for k, v in scores.items()}


def table1(rounds: Mapping[str, Mapping[str, float]], models: Sequence[str]) -> pd.DataFrame:
    """The paper's Table 1: rows = models, columns = each round's T0 and T^(i+1) mIoU.

    Args:
        rounds: round key -> that round's flat metrics (keys ``<model>.T0.miou`` and ``<model>.T.miou``).
        models: row order; the target first.
    """
    columns: dict[str, list[float]] = {}
    for key in sorted(rounds, key=int):
        metrics = rounds[key]
        columns[f"round {key} T0"] = [metrics.get(f"{m}.T0.miou", float("nan")) for m in models]
        columns[f"round {key} T{int(key) + 1}"] = [metrics.get(f"{m}.T.miou", float("nan")) for m in models]
    return pd.DataFrame(columns, index=pd.Index(models, name="model")).reset_index()


def table_markdown(table: pd.DataFrame) -> str:
    """A Markdown rendering of a Table-1 frame (mIoU in points, one decimal)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if c == "model" else "---:" for c in table.columns) + "|"
    rows = [
        "| " + " | ".join(str(v) if c == "model" else f"{100 * v:.1f}" for c, v in row.items()) + " |"
        for _, row in table.iterrows()
    ]
    return "\n".join([header, rule, *rows]) + "\n"


def ranking_stability(cms_by_model: Mapping[str, np.ndarray], k_min: int) -> pd.DataFrame:
    """Appendix C: SRCC between the models' ranking on the first k images of T and on all of T.

    Args:
        cms_by_model: model -> (N, K, K) per-image confusion matrices over T in its stored (drawn) order.
        k_min: the smallest prefix (the paper: 20 of 40).
    Returns:
        DataFrame with columns k (k_min..N) and srcc (scipy.stats.spearmanr of the per-model mIoUs).
    """
    models = list(cms_by_model)
    n = {len(c) for c in cms_by_model.values()}
    if len(n) != 1:
        raise ValueError(f"every model must be scored on the same T, got sizes {sorted(n)}")
    (n_images,) = n
    if not 1 <= k_min <= n_images:
        raise ValueError(f"k_min must lie in 1..{n_images}, got {k_min}")
    prefix = {m: np.cumsum(cms_by_model[m], axis=0) for m in models}  # (N, K, K) running totals
    full = np.array([mean_iou(prefix[m][-1]) for m in models])
    rows = []
    for k in range(k_min, n_images + 1):
        top_k = np.array([mean_iou(prefix[m][k - 1]) for m in models])
        rows.append({"k": k, "srcc": srcc(top_k, full)})
    return pd.DataFrame(rows)


def stable_from(stability: pd.DataFrame, threshold: float) -> int | None:
    """The smallest k from which SRCC stays at or above ``threshold`` (None if it never does)."""
    ok = (stability["srcc"] >= threshold).to_numpy()
    for i in range(len(ok)):
        if ok[i:].all():
            return int(stability["k"].iloc[i])
    return None
