"""The Ray backends: pool inference as a Ray Data job and MAD mining as Ray tasks, on an existing cluster or a
Ray started for the stage.

Inference (``infer.backend: ray``): the driver cuts the pending shards into exactly the batches of the local
backend (``infer.batch_size`` consecutive images of a shard); Ray Data decodes and prepares each batch in a task
and predicts it in a pool of actors (one per GPU, or CPU actors); the driver, the only writer, writes a shard
and its sidecar as soon as all its batches are back. So the store has the local backend's bytes, a rerun skips
finished shards, a finished shard is never rewritten, and a killed worker only costs Ray a retry.

Mining (``mining.backend: ray``): one task per shard reads that shard of every store and returns each group's
top-n3 (:func:`madseg.mining.shard_tops`); the driver folds them with :func:`madseg.mining.merge_tops` into
exactly the local M.

Every node reads the pool and the stores at the same paths: a shared filesystem (see the README). Only
:mod:`madseg.backends` calls this module; the library it drives (inference, mining) never imports it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from madseg.config import EmbedParams, InferParams, RayParams
from madseg.embedding import build_embedding_shard, embedding_fingerprint, finalize_embeddings
from madseg.inference import build_shard, check_index, fingerprint, load_pool_predictor, pending_shards
from madseg.io.images import read_rgb
from madseg.io.store import EmbeddingStore, PredictionStore, ShardedStore
from madseg.labels import ClassList
from madseg.mining import GroupTops, mad_frame, merge_tops, shard_tops
from madseg.models.embedders import Embedder, load_embedder
from madseg.models.predictors import Prediction
from madseg.stops import ClusterUnreachable

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ session
def _probe(address: str, timeout_s: float) -> None:
    """Fail in seconds when nothing listens at ``address`` (ray.init would retry for a minute)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"ray.address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterUnreachable(
            f"no Ray cluster answers at {address} within {timeout_s:g} s ({e}). Start its head with "
            "`ray start --head`, fix ray.address / $RAY_ADDRESS, or leave both empty for a Ray of the stage's own"
        ) from None


@contextmanager
def ray_session(address: str | None = None, connect_timeout_s: float = 5.0) -> Iterator:
    """Ray, joined to the cluster at ``address`` (else $RAY_ADDRESS), or started on this machine for the stage
    and shut down after it. Yields the ``ray`` module."""
    # no usage telemetry from a pipeline stage (as DVC's analytics are off): Ray would report home and query a
    # Prometheus on localhost:9090 after every dataset
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray backends need Ray: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto"):
        _probe(address, connect_timeout_s)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError) as e:
        raise ClusterUnreachable(f"cannot join the Ray cluster at {address}: {e}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_data_context(ray) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # shards complete in order: the driver holds few at a time
    ctx.raise_original_map_exception = True  # a corrupt image's own error, naming the file


def actor_plan(ray, *, actors: int, threads: int, cpus_per_actor: float, use_gpus: bool) -> tuple[int, float]:
    """(number of predicting actors, GPUs per actor) for this cluster: ``actors`` if set, else one per GPU when
    GPUs may be used and the cluster has some, else one per ``threads`` CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if use_gpus else 0
    if actors:
        return actors, (1.0 if gpus else 0.0)
    if gpus:
        return gpus, 1.0
    return max(1, int(resources.get("CPU", 1) // max(threads, cpus_per_actor, 1))), 0.0


# ---------------------------------------------------------------------------------------------- inference
def _ragged(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of any shapes (one rank) as one flat array and their shapes: Ray Data rows hold no lists of arrays."""
    return np.concatenate([a.reshape(-1) for a in arrays]), np.array([a.shape for a in arrays], np.int64)


def _unragged(flat: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(shapes.prod(1))
    return [part.reshape(shape) for part, shape in zip(np.split(flat, ends[:-1]), shapes, strict=True)]


def _decode_batch(row: dict, *, policy, mean, std, view: str | None = None) -> dict:
    """Ray Data task: read a batch's images and prepare them (seen through ``view``, if any) with the model's
    input policy."""
    from madseg.models.views import apply_view

    images = [read_rgb(p) for p in row["paths"]]
    seen = images if view is None else [apply_view(view, im) for im in images]
    pixels, dims = _ragged([policy.prepare(im, mean, std).numpy() for im in seen])
    return {
        "shard": row["shard"],
        "batch": row["batch"],
        "pixels": pixels,
        "dims": dims,
        "shapes": np.array([im.shape[:2] for im in images], np.int64),
    }


def _pack_prediction(pred: Prediction) -> dict:
    maps, map_shapes = _ragged(pred.maps)
    return {"maps": maps, "map_shapes": map_shapes, "entropy": pred.entropy, "maxprob": pred.maxprob}


def _unpack_prediction(row: dict) -> Prediction:
    return Prediction(_unragged(row["maps"], row["map_shapes"]), row["entropy"], row["maxprob"])


def _pack_features(features: np.ndarray) -> dict:
    return {"features": features}


def _unpack_features(row: dict) -> np.ndarray:
    return row["features"]


class _PredictBatch:
    """Ray Data actor: the predictor (a model, or an embedder), loaded once per actor by ``load(device=...)``,
    turning prepared batches into what ``pack`` makes of its ``infer`` result."""

    def __init__(self, load: Callable[..., Any], device: str, threads: int, pack: Callable[[Any], dict]):
        import torch

        from madseg.device import resolve_device

        torch.set_num_threads(threads)  # the local backend's threads, so the two give the same bytes
        self.predictor, self.pack = load(device=resolve_device(device)), pack

    def __call__(self, row: dict) -> dict:
        import torch

        tensors = [torch.from_numpy(t) for t in _unragged(row["pixels"], row["dims"])]
        same = all(t.shape == tensors[0].shape for t in tensors)
        result = self.predictor.infer(torch.stack(tensors) if same else tensors, [tuple(s) for s in row["shapes"]])
        return {"shard": row["shard"], "batch": row["batch"], **self.pack(result)}


def predict_pool_ray(
    probe,
    source: str | Path,
    index: pd.DataFrame,
    store: PredictionStore,
    *,
    model_name: str,
    classes: ClassList,
    infer_params: InferParams,
    ray_params: RayParams | None = None,
    device: str = "auto",
    view: str | None = None,
    policy: Mapping[str, Any] | None = None,
) -> int:
    """:func:`madseg.inference.predict_pool` as a Ray Data job: the same store, byte for byte.

    ``probe`` is the model's predictor on the driver (its input policy and normalisation prepare the images);
    each actor loads the model from ``source`` and resolves ``device`` (the params' string) on its own node.
    ``view``: every image seen through it (:mod:`madseg.models.views`); ``policy``: params' input policy, which
    the actors apply too. Returns the shards computed.
    """
    ids = check_index(index)
    fp = fingerprint(source, ids, probe.policy, view)
    load = partial(
        load_pool_predictor,
        os.path.abspath(source),
        classes=classes,
        batch_size=infer_params.batch_size,
        view=view,
        policy=policy,
    )
    computed = pool_pass_ray(
        probe,
        load,
        index,
        store,
        fingerprint=fp,
        build=lambda shard_ids, predictions: build_shard(shard_ids, predictions, classes),
        pack=(_pack_prediction, _unpack_prediction),
        name=f"infer {model_name}",
        shard_size=infer_params.shard_size,
        batch_size=infer_params.batch_size,
        threads=infer_params.threads,
        ray_params=ray_params,
        device=device,
        view=view,
    )
    store.finalize(model=model_name, classes=classes.names, shard_size=infer_params.shard_size, ids=ids, fingerprint=fp)
    return computed


def embed_pool_ray(
    probe: Embedder,
    index: pd.DataFrame,
    store: EmbeddingStore,
    *,
    embed_params: EmbedParams,
    ray_params: RayParams | None = None,
    device: str = "auto",
) -> int:
    """:func:`madseg.embedding.embed_pool` as a Ray Data job (the same store, byte for byte): the pool pass
    of the predictions with an embedder in the actors. Returns the shards computed."""
    fp = embedding_fingerprint(probe, check_index(index))
    load = partial(load_embedder, probe.name, image_size=embed_params.image_size)
    computed = pool_pass_ray(
        probe,
        load,
        index,
        store,
        fingerprint=fp,
        build=build_embedding_shard,
        pack=(_pack_features, _unpack_features),
        name=f"embed {probe.name}",
        shard_size=embed_params.shard_size,
        batch_size=embed_params.batch_size,
        threads=embed_params.threads,
        ray_params=ray_params,
        device=device,
    )
    finalize_embeddings(store, probe, index, embed_params.shard_size, fp)
    return computed


def pool_pass_ray(
    probe,
    load: Callable[..., Any],
    index: pd.DataFrame,
    store: ShardedStore,
    *,
    fingerprint: str,
    build: Callable[[list[str], list], Any],
    pack: tuple[Callable[[Any], dict], Callable[[dict], Any]],
    name: str,
    shard_size: int,
    batch_size: int,
    threads: int,
    ray_params: RayParams | None = None,
    device: str = "auto",
    view: str | None = None,
) -> int:
    """:func:`madseg.inference.pool_pass` as a Ray Data job: the pending shards cut into the local batches,
    decoded and prepared in tasks with ``probe``'s input policy (seen through ``view``), turned into results in
    actors that ``load(device=...)`` their predictor, packed into rows and back (``pack``: to a row, from a row);
    the driver writes ``build(shard ids, results)`` as soon as a shard's batches are back. Returns the shards
    computed; the caller finalizes the store."""
    ray_params = ray_params or RayParams()
    ids = check_index(index)
    size, batch = shard_size, batch_size
    todo = pending_shards(store, index, fingerprint, size)
    paths = [os.path.abspath(p) for p in index["path"]]  # workers do not share the driver's folder
    rows, batches_of = [], {}
    for s in todo:
        stop = min((s + 1) * size, len(ids))
        starts = range(s * size, stop, batch)
        batches_of[s] = len(starts)
        rows += [{"shard": s, "batch": b, "paths": paths[i : min(i + batch, stop)]} for b, i in enumerate(starts)]
    if not rows:
        return 0
    to_row, from_row = pack
    with ray_session(ray_params.address, ray_params.connect_timeout_s) as ray:
        _quiet_data_context(ray)
        n_actors, gpus = actor_plan(
            ray,
            actors=ray_params.actors,
            threads=threads,
            cpus_per_actor=ray_params.cpus_per_actor,
            use_gpus=device != "cpu",
        )
        log.info(
            "%s: %d shards in %d batches on %d Ray actors (%g GPU each)", name, len(todo), len(rows), n_actors, gpus
        )
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        # decoding asks for half a CPU: it mostly waits on reads, and resources unlike the actors' keep Ray
        # Data from fusing it into them (decoding then runs in tasks, in parallel, on any node)
        ds = ds.map(
            _decode_batch,
            fn_kwargs={"policy": probe.policy, "mean": probe.mean, "std": probe.std, "view": view},
            num_cpus=0.5 if ray_params.cpus_per_actor != 0.5 else 0.25,
        )
        ds = ds.map(
            _PredictBatch,
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_gpus=gpus,
            num_cpus=ray_params.cpus_per_actor,
            fn_constructor_args=(load, device, threads, to_row),
        )
        done: dict[int, dict[int, Any]] = {}
        for row in tqdm(_rows_or_cause(ds), total=len(rows), desc=f"{name} (ray)", unit="batch"):
            s = int(row["shard"])
            done.setdefault(s, {})[int(row["batch"])] = from_row(row)
            if len(done[s]) == batches_of[s]:
                parts = done.pop(s)
                results = [parts[b] for b in range(batches_of[s])]
                store.write_shard(s, build(ids[s * size : (s + 1) * size].tolist(), results), fingerprint)
    return len(todo)


def _rows_or_cause(ds) -> Iterator[dict]:
    """The dataset's rows; a failure in a task re-raised as its own exception (a corrupt image's ValueError
    names the file), not as Ray's wrapper."""
    import ray

    try:
        yield from ds.iter_rows()
    except ray.exceptions.RayError as e:
        raise _cause(e) from None


def _cause(error: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (a task's error, Ray Data's UDF error)."""
    import ray

    while isinstance(error, ray.exceptions.RayError):
        inner = getattr(error, "cause", None) or error.__cause__
        if inner is None:
            break
        error = inner
    return error


# ------------------------------------------------------------------------------------------------- mining
def check_aligned(target: PredictionStore, competitors: Mapping[str, PredictionStore]) -> int:
    """The shard count of stores that line up shard by shard; ValueError naming a store that does not."""
    n = len(target.manifest["shards"])
    for name, store in competitors.items():
        m = len(store.manifest["shards"])
        if m != n:
            raise ValueError(
                f"competitor {name!r} has {'fewer' if m < n else 'more'} shards than the target "
                f"({m} vs {n}): its predictions are over another pool"
            )
    return n


def mine_store_shard(
    target_root: str,
    competitor_roots: Mapping[str, str],
    shard_index: int,
    bands: np.ndarray,
    classes: ClassList,
    *,
    n3: int,
    distance: str = "miou",
    exclude: frozenset[str] = frozenset(),
    rank_by: str = "pair",
) -> GroupTops:
    """:func:`madseg.mining.shard_tops` of shard ``shard_index`` read from stores by path (a Ray task's work)."""
    target = PredictionStore(target_root).read_shard(shard_index)
    competitors = ((name, PredictionStore(root).read_shard(shard_index)) for name, root in competitor_roots.items())
    return shard_tops(
        target,
        competitors,
        bands,
        classes,
        n3=n3,
        distance=distance,
        exclude=exclude,
        shard_index=shard_index,
        rank_by=rank_by,
    )


def mine_mad_ray(
    target: PredictionStore,
    competitors: Mapping[str, PredictionStore],
    bands: np.ndarray,
    classes: ClassList,
    *,
    n3: int,
    distance: str,
    exclude: frozenset[str],
    rank_by: str = "pair",
    ray_params: RayParams | None = None,
) -> pd.DataFrame:
    """:func:`madseg.mining.mine_mad` over whole stores as one Ray task per shard; the same candidate table."""
    ray_params = ray_params or RayParams()
    n_shards = check_aligned(target, competitors)
    roots = {name: str(store.root) for name, store in competitors.items()}
    tops: GroupTops = {}
    with ray_session(ray_params.address, ray_params.connect_timeout_s) as ray:
        task = ray.remote(mine_store_shard)
        excluded = ray.put(exclude)
        pending = [
            task.remote(
                str(target.root), roots, s, bands, classes, n3=n3, distance=distance, exclude=excluded, rank_by=rank_by
            )
            for s in range(n_shards)
        ]
        with tqdm(total=n_shards, desc="mine (ray)", unit="shard") as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    merge_tops(tops, ray.get(ready[0]), n3)
                except ray.exceptions.RayTaskError as e:
                    raise _cause(e) from None
                bar.update(1)
    return mad_frame(tops, list(competitors), classes)
