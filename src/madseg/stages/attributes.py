"""attributes: cheap per-image attributes of the pool (madseg.attributes), once per index -> data/attributes/pool.csv.

The images are decoded here, not in the library: the stage depends on madseg.attributes alone, so editing the
slice finder does not decode the pool again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from madseg import paths
from madseg.attributes import IMAGE_ATTRIBUTES, image_attributes
from madseg.config import Params
from madseg.io.images import read_rgb
from madseg.io.tables import read_csv, write_csv

log = logging.getLogger(__name__)
PARALLEL_FROM = 256  # images: below this, starting worker processes costs more than it saves


def run(params: Params) -> None:
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).sort_values("id").reset_index(drop=True)
    table = attributes_of_images(index["path"].tolist(), workers=params.crawl.decode_workers)
    write_csv(paths.POOL_ATTRIBUTES, table.round(6).assign(id=index["id"])[["id", *table.columns]])
    log.info("attributes of %d pool images", len(index))


def attributes_of_images(paths_: Sequence[str], workers: int = 1) -> pd.DataFrame:
    """:func:`madseg.attributes.image_attributes` of every image file, in order: (N, len(IMAGE_ATTRIBUTES)) in a
    frame, decoded in ``workers`` processes for large pools."""
    if workers > 1 and len(paths_) >= PARALLEL_FROM:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        from madseg.workers import stop_with_parent

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=stop_with_parent) as pool:
            rows = list(pool.map(_attributes_of_file, paths_, chunksize=64))
    else:
        rows = [_attributes_of_file(p) for p in paths_]
    return pd.DataFrame(rows, columns=list(IMAGE_ATTRIBUTES))


def _attributes_of_file(path: str) -> dict[str, float]:
    return image_attributes(read_rgb(path))
