"""crawl_index: build the pool index D (data/index/pool.csv) and its rejects (data/index/rejects.csv)."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

from madseg import paths
from madseg.config import Params
from madseg.crawl import FetchConfig, Limits, crawl, parse_url_list
from madseg.io.atomic import write_json
from madseg.io.tables import write_csv

log = logging.getLogger(__name__)


def run(params: Params, **_: object) -> None:
    p = params.crawl
    if not p.folders and p.url_list is None:
        raise ValueError("crawl: give crawl.folders and/or crawl.url_list, got neither")
    urls, url_rejects = [], []
    if p.url_list is not None:
        url_file = Path(p.url_list)
        if not url_file.is_file():
            raise FileNotFoundError(f"crawl.url_list: {url_file} is not a file")
        urls, url_rejects = parse_url_list(url_file.read_text(encoding="utf-8"))

    result = crawl(
        folders=p.folders,
        urls=urls,
        url_rejects=url_rejects,
        store_dir=p.store_dir,
        reference_sets=p.reference_sets,
        limits=Limits(**{f.name: getattr(p, f.name) for f in fields(Limits)}),
        fetch=FetchConfig(**{f.name: getattr(p, f.name) for f in fields(FetchConfig)}),
        threshold=p.near_dup_threshold,
        max_color_diff=p.near_dup_max_color_diff,
        decode_workers=p.decode_workers,
    )
    if result.index.empty:
        raise ValueError(
            f"crawl: no image was indexed from {list(p.folders)} / {p.url_list}; see the rejects"
        )
    write_csv(paths.POOL_INDEX, result.index)
    write_csv(paths.POOL_REJECTS, result.rejects)
    summary = result.summary()
    write_json(paths.INDEX / "summary.json", summary)
    log.info("crawl_index: %s", ", ".join(f"{k} {v}" for k, v in summary.items()))
