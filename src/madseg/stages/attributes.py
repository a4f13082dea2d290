"""attributes: cheap per-image attributes of the pool (madseg.slices), once per index -> data/attributes/pool.csv."""

from __future__ import annotations

import logging

from madseg import paths
from madseg.config import Params
from madseg.io.tables import read_csv, write_csv
from madseg.slices import attributes_of_images

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).sort_values("id").reset_index(drop=True)
    table = attributes_of_images(index["path"].tolist(), workers=params.crawl.decode_workers)
    write_csv(paths.POOL_ATTRIBUTES, table.round(6).assign(id=index["id"])[["id", *table.columns]])
    log.info("attributes of %d pool images", len(index))
