"""embed: ImageNet features of every pool image (madseg.embedding) -> data/embeddings/pool, an EmbeddingStore.

Once per index, like the attributes: the slices of every round cluster on them. Sharded and resumable like the
predictions (a killed run keeps its finished shards), on ``embed.backend`` (local or Ray, the same bytes). The
encoder's ImageNet weights come from the torch hub cache (`madseg weights fetch`), never from the network.

Computed only when the slices use them (``slices.embedding_weight`` > 0), since a pass over the pool costs as much
as a competitor's inference (2 core-minutes on the demo's 4,000 images). Otherwise the stage writes only a note
saying so (DVC warns at every read of an empty folder) and keeps the shards an earlier run finished, to be resumed
when the weight is raised.
"""

from __future__ import annotations

import logging

import torch

from madseg import paths
from madseg.backends import embed_images
from madseg.config import Params
from madseg.io.atomic import write_text
from madseg.io.store import EmbeddingStore
from madseg.io.tables import read_csv

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    note = paths.POOL_EMBEDDINGS / "NOT_COMPUTED"
    if not params.slices.uses_embeddings:
        reason = "slices.embedding_weight (or slices.embedding_dims) is 0: the slices do not use the embeddings"
        write_text(note, reason + "\n")
        log.info("none computed: %s", reason)
        return
    note.unlink(missing_ok=True)
    torch.set_num_threads(params.embed.threads)
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).sort_values("id").reset_index(drop=True)
    computed = embed_images(
        index,
        EmbeddingStore(paths.POOL_EMBEDDINGS),
        embed_params=params.embed,
        device=params.device,
        ray_params=params.ray,
    )
    log.info(
        "embeddings of %d pool images by %s: %d shards computed (the rest resumed)",
        len(index),
        params.embed.model,
        computed,
    )
