"""ImageNet features of every pool image, stored like predictions, for the failure slices to see content.

A frozen encoder (:mod:`madseg.models.embedders`) runs over the pool in the prediction pass of
:mod:`madseg.inference` (shards of the index sorted by id, batches of consecutive images, finished shards kept
on a rerun), so the local and Ray backends (:mod:`madseg.backends`) give the same bytes. Each image keeps its
full global-average-pooled feature vector as float16 (1280 numbers for mobilenet_v2): a reduction such as a
PCA depends on the whole pool, which would make one shard's bytes depend on the others and break resuming by
shard; the slices reduce the features when they read them (:func:`madseg.slices.embedding_coords`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from madseg.inference import check_index, fingerprint, pool_pass
from madseg.io.shard import EmbeddingShard
from madseg.io.store import EmbeddingStore
from madseg.models.embedders import Embedder, weights_file

FORMAT = "gap-float16-v1"  # what a stored vector is: the encoder's pooled features, as float16


def build_embedding_shard(ids: Sequence[str], batches: Sequence[np.ndarray]) -> EmbeddingShard:
    """One shard from its batches' (n, D) float16 features, in order."""
    return EmbeddingShard(ids=list(ids), features=np.concatenate(list(batches)).astype(np.float16))


def embedding_fingerprint(embedder: Embedder, ids: Sequence[str]) -> str:
    """Identifies an embedding run: the weight file's bytes, the pool's ids, the input size and the format."""
    base = fingerprint(weights_file(embedder.name), ids, embedder.policy)
    return hashlib.sha256(f"{base}|{embedder.name}|{embedder.policy.size}|{FORMAT}".encode()).hexdigest()


def finalize_embeddings(store: EmbeddingStore, embedder: Embedder, index: pd.DataFrame, shard_size: int, fp: str):
    """The manifest of a finished embedding store: no classes; ``extra`` holds the feature count, input size
    and format."""
    store.finalize(
        model=embedder.name,
        classes=[],
        shard_size=shard_size,
        ids=check_index(index),
        fingerprint=fp,
        extra={"dim": embedder.dim, "image_size": list(embedder.policy.size), "format": FORMAT},
    )


def embed_pool(
    embedder: Embedder,
    index: pd.DataFrame,
    store: EmbeddingStore,
    *,
    shard_size: int,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> int:
    """Embed every image of ``index`` (columns id, path; sorted by id) into ``store``, shard by shard, keeping
    finished shards (see :func:`madseg.inference.predict_pool`). Returns the shards computed."""
    fp = embedding_fingerprint(embedder, check_index(index))
    computed = pool_pass(
        embedder,
        index,
        store,
        build=build_embedding_shard,
        desc=f"embed {embedder.name}",
        fingerprint=fp,
        shard_size=shard_size,
        batch_size=batch_size,
        workers=workers,
        pin_memory=pin_memory,
    )
    finalize_embeddings(store, embedder, index, shard_size, fp)
    return computed
