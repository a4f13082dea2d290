"""slices@<round>: the kinds of image M^(i+1) holds, clustered on cheap attributes (and on the pool's ImageNet
features from the embed stage when slices.embedding_weight > 0; never the truth), named in words by the attributes.

Writes data/slices/round_<R>/slices.csv (rule and how well it matches, pool size and share, M size and share,
lift, share of the lowest-rated images, examples, M's images in the slice), metrics/slices/round_<R>.json and,
for `dvc plots`, metrics/slices/round_<R>_top.csv (the top slices' lift and shares by rank).
"""

from __future__ import annotations

import logging

from madseg import paths
from madseg.config import Params
from madseg.io.atomic import write_json
from madseg.io.store import EmbeddingStore, PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.slices import round_slices

log = logging.getLogger(__name__)
PLOTTED = 10  # slices per round in the dvc plots table


def run(params: Params, *, round_key: str) -> None:
    attributes = read_csv(paths.POOL_ATTRIBUTES, required=["id"]).set_index("id")
    m = read_csv(paths.mining_dir(round_key) / "M.csv", required=["image_id"])
    mos = read_csv(paths.annotations_dir(round_key) / "mos.csv", required=["image_id", "mos", "vetoed"])
    stats = PredictionStore(paths.target_predictions(round_key)).stats()
    embedding_ids, embeddings = None, None
    if params.slices.uses_embeddings:  # a million images: 2.5 GB to read
        embedding_ids, embeddings = EmbeddingStore(paths.POOL_EMBEDDINGS).features()
    slices = round_slices(
        attributes,
        stats,
        params.dataset.class_list().names,
        m["image_id"].tolist(),
        mos,
        embedding_ids=embedding_ids,
        embeddings=embeddings,
        embedding_dims=params.slices.embedding_dims,
        embedding_weight=params.slices.embedding_weight,
        clusters=params.slices.clusters,
        seed=params.slices.seed,
    )
    write_csv(paths.slices_dir(round_key) / "slices.csv", slices)
    ranked = slices.head(PLOTTED).reset_index(drop=True).rename_axis("rank").reset_index()
    ranked["rank"] += 1
    write_csv(
        paths.METRICS / "slices" / f"round_{round_key}_top.csv",
        ranked[["rank", "rule", "lift", "group_share", "worst_share"]],
    )
    top = slices.iloc[0] if len(slices) else None
    summary = {
        "slices": len(slices),
        "top_rule": None if top is None else top["rule"],
        "top_lift": None if top is None else float(top["lift"]),
        "top_group_share": None if top is None else float(top["group_share"]),
    }
    write_json(paths.METRICS / "slices" / f"round_{round_key}.json", summary)
    log.info("round %s: %d slices of M; first: %s", round_key, len(slices), None if top is None else top["rule"])
