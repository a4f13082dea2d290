"""The one place that chooses the local or the Ray backend, for pool prediction (and embedding) and MAD mining.

Above the library: stages and commands call this module; :mod:`madseg.inference` and :mod:`madseg.mining` never
import :mod:`madseg.cluster`. It also reads what the pure mining library takes as arrays: the prediction stores
(shards, statistics) and S0's ground truth for the default area bands. Both backends give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from madseg import paths
from madseg.cluster import embed_pool_ray, mine_mad_ray, predict_pool_ray
from madseg.config import DatasetParams, EmbedParams, InferParams, MiningParams, RayParams
from madseg.device import resolve_device
from madseg.embedding import embed_pool
from madseg.inference import check_index, fingerprint, load_pool_predictor, predict_pool
from madseg.io.store import EmbeddingStore, PredictionStore
from madseg.io.voc import iter_masks
from madseg.labels import ClassList
from madseg.mining import (
    Proposal,
    area_bands,
    area_matrix,
    check_mad_args,
    check_strategy,
    mine_mad,
    proposal,
)
from madseg.models.embedders import load_embedder
from madseg.models.views import competitor_name


def _predict_local(predictor, source, index, store, *, model_name, classes, infer_params, view, pin_memory, **_) -> int:
    policy = getattr(predictor, "policy", None)  # precomputed predictions have none
    return predict_pool(
        predictor,
        index,
        store,
        model_name=model_name,
        classes=classes,
        fingerprint=fingerprint(source, check_index(index), policy, view),
        shard_size=infer_params.shard_size,
        batch_size=infer_params.batch_size,
        workers=infer_params.workers,
        pin_memory=pin_memory,
    )


def _predict_ray(predictor, source, index, store, *, pin_memory: bool, **kw) -> int:
    return predict_pool_ray(predictor, source, index, store, **kw)  # actors pin memory on their own nodes


def _mine_local(
    target, competitors, bands, classes, *, n3, distance, exclude, rank_by="pair", ray_params=None
) -> pd.DataFrame:
    target_shards, total = target.iter_shards(), len(target.manifest["shards"])
    competitor_shards = {name: store.iter_shards() for name, store in competitors.items()}
    return mine_mad(
        target_shards,
        competitor_shards,
        bands,
        classes,
        n3=n3,
        distance=distance,
        progress=True,
        total=total,
        exclude=exclude,
        rank_by=rank_by,
    )


# backend name -> how it predicts a pool / mines MAD over stores; every entry gives the same bytes
PREDICT: dict[str, Callable[..., int]] = {"local": _predict_local, "ray": _predict_ray}
MINE: dict[str, Callable[..., pd.DataFrame]] = {"local": _mine_local, "ray": mine_mad_ray}


def _backend(table: dict, name: str, what: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {what} backend {name!r}; valid: {list(table)}")
    return table[name]


def predict_model(
    source: str | Path,
    index: pd.DataFrame,
    store: PredictionStore,
    *,
    model_name: str,
    classes: ClassList,
    infer_params: InferParams,
    device: str = "auto",
    ray_params: RayParams | None = None,
    view: str | None = None,
    policy: Mapping[str, Any] | None = None,
) -> int:
    """Predict the pool ``index`` (columns id, path; sorted by id) with the model at ``source`` (a checkpoint or
    a competitor folder) into ``store``, resuming finished shards, on the backend ``infer_params.backend`` names
    (``ray_params``: the ray section). ``device`` is the params' string: Ray actors resolve it on their own
    nodes. ``view``: see every image through it (:mod:`madseg.models.views`). ``policy``: params' input policy,
    over the one the model recorded (:meth:`madseg.models.input_policy.InputPolicy.overridden`). Returns shards
    computed."""
    backend = infer_params.backend
    here = resolve_device("cpu" if backend == "ray" else device)  # a Ray driver only reads the model's policy
    predictor = load_pool_predictor(
        source, classes=classes, device=here, batch_size=infer_params.batch_size, view=view, policy=policy
    )
    if not predictor.needs_pixels:  # precomputed predictions are read, not predicted: no cluster needed
        backend = "local"
    return _backend(PREDICT, backend, "infer")(
        predictor,
        source,
        index,
        store,
        model_name=model_name,
        classes=classes,
        infer_params=infer_params,
        ray_params=ray_params,
        device=device,
        view=view,
        policy=policy,
        pin_memory=here.type == "cuda",
    )


def _embed_local(embedder, index, store, *, embed_params: EmbedParams, pin_memory: bool, **_) -> int:
    return embed_pool(
        embedder,
        index,
        store,
        shard_size=embed_params.shard_size,
        batch_size=embed_params.batch_size,
        workers=embed_params.workers,
        pin_memory=pin_memory,
    )


def _embed_ray(embedder, index, store, *, pin_memory: bool, **kw) -> int:
    return embed_pool_ray(embedder, index, store, **kw)


EMBED: dict[str, Callable[..., int]] = {"local": _embed_local, "ray": _embed_ray}


def embed_images(
    index: pd.DataFrame,
    store: EmbeddingStore,
    *,
    embed_params: EmbedParams,
    device: str = "auto",
    ray_params: RayParams | None = None,
) -> int:
    """Embed the pool ``index`` (columns id, path; sorted by id) into ``store`` with ``embed_params.model``,
    resuming finished shards, on the backend ``embed_params.backend`` names (the same bytes on either). A missing
    weight file stops here, before any image is read. Returns shards computed."""
    backend = embed_params.backend
    here = resolve_device("cpu" if backend == "ray" else device)  # a Ray driver only reads the input policy
    embedder = load_embedder(embed_params.model, device=here, image_size=embed_params.image_size)
    return _backend(EMBED, backend, "embed")(
        embedder,
        index,
        store,
        embed_params=embed_params,
        ray_params=ray_params,
        device=device,
        pin_memory=here.type == "cuda",
    )


def propose(
    strategy: str,
    *,
    target: PredictionStore,
    competitors: Mapping[str, PredictionStore],
    bands: np.ndarray,
    classes: ClassList,
    n3: int,
    distance: str,
    seed: int,
    exclude: Iterable[str] = (),
    backend: str = "local",
    ray_params: RayParams | None = None,
    rank_by: str = "pair",
) -> Proposal:
    """A round's candidates by ``strategy`` (:func:`madseg.mining.proposal`): MAD mined from the stores on
    ``backend`` ('local', or 'ray': one Ray task per shard, ``ray_params`` the ray section, the same M) first,
    since its |M| is the budget a baseline spends; a baseline reads the target's statistics."""
    check_strategy(strategy)
    mine = _backend(MINE, backend, "mining")
    exclude = frozenset(exclude)
    check_mad_args(competitors, bands, classes, n3, distance, rank_by)
    mad = mine(
        target,
        competitors,
        bands,
        classes,
        n3=n3,
        distance=distance,
        exclude=exclude,
        rank_by=rank_by,
        ray_params=ray_params,
    )
    stats = None if strategy == "mad" else target.stats()
    return proposal(strategy, mad, classes=classes, target_stats=stats, seed=seed, exclude=exclude)


def round_stores(
    round_key: str, competitors: Iterable[str], views: Iterable[str] = ()
) -> tuple[PredictionStore, dict[str, PredictionStore]]:
    """What MAD mines in round ``round_key``: the target's prediction store, and by name every competitor's, the
    target seen through each of ``views`` among them (as ``self_<view>``: it competes with the target itself)."""
    stores = {name: PredictionStore(paths.competitor_predictions(name)) for name in competitors}
    for view in views:
        stores[competitor_name(view)] = PredictionStore(paths.target_view_predictions(round_key, view))
    return PredictionStore(paths.target_predictions(round_key)), stores


def s0_area_bands(dataset: DatasetParams, mining: MiningParams, classes: ClassList) -> tuple[np.ndarray, np.ndarray]:
    """The area bands of mining and of `madseg compare`: quantiles of S0's ground-truth area fractions with the
    params' overrides. Returns bands (K, 2) float64 and S0's area fractions (N, K) float64."""
    areas = area_matrix(iter_masks(dataset.voc_root, dataset.train_split, classes), classes.num_classes)
    return area_bands(areas, classes, mining.area_quantiles, mining.area_overrides), areas
