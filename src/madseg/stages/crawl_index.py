"""crawl_index: build the pool index D (data/index/pool.csv) and its rejects (data/index/rejects.csv)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import fields
from pathlib import Path

from madseg import paths
from madseg.config import Params
from madseg.crawl import FetchConfig, Limits, crawl, iter_url_list
from madseg.io.atomic import write_json

log = logging.getLogger(__name__)


def run(params: Params, **_: object) -> None:
    p = params.crawl
    if not p.folders and p.url_list is None:
        raise ValueError("crawl: give crawl.folders and/or crawl.url_list, got neither")
    url_file = None if p.url_list is None else Path(p.url_list)
    if url_file is not None and not url_file.is_file():
        raise FileNotFoundError(f"crawl.url_list: {url_file} is not a file")
    with (
        url_file.open(encoding="utf-8") if url_file else contextlib.nullcontext(()) as lines,
        crawl(
            folders=p.folders,
            urls=iter_url_list(lines),  # read line by line as the crawl queues them
            store_dir=p.store_dir,
            reference_sets=p.reference_sets,
            limits=Limits(**{f.name: getattr(p, f.name) for f in fields(Limits)}),
            fetch=FetchConfig(**{f.name: getattr(p, f.name) for f in fields(FetchConfig)}),
            threshold=p.near_dup_threshold,
            max_color_diff=p.near_dup_max_color_diff,
            decode_workers=p.decode_workers,
        ) as result,
    ):
        summary = result.summary()
        if not summary["indexed"]:
            raise ValueError(f"crawl: no image was indexed from {list(p.folders)} / {p.url_list}; see the rejects")
        result.write(paths.POOL_INDEX, paths.POOL_REJECTS)
    write_json(paths.INDEX / "summary.json", summary)
    log.info("crawl_index: %s", ", ".join(f"{k} {v}" for k, v in summary.items()))
