"""The whole crawl: sources -> inspection -> deduplication -> the index and rejects tables."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from madseg.crawl.dedup import deduplicate
from madseg.crawl.hashing import phash_hex
from madseg.crawl.inspection import inspect_files
from madseg.crawl.records import ImageRecord, Limits, Reject
from madseg.crawl.sources import FetchConfig, fetch_urls, list_local

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["id", "source", "path", "width", "height", "phash", "bytes"]
REJECT_COLUMNS = ["source", "reason", "detail"]


def index_table(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """pool.csv's rows, sorted by id; ``phash`` as 16 hex characters."""
    rows = [(r.id, r.source, r.path, r.width, r.height, phash_hex(r.phash), r.bytes) for r in records]
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def rejects_table(rejects: Iterable[Reject]) -> pd.DataFrame:
    """rejects.csv's rows, sorted by (source, reason, detail)."""
    df = pd.DataFrame([(r.source, r.reason, r.detail) for r in rejects], columns=REJECT_COLUMNS)
    return df.sort_values(REJECT_COLUMNS, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------- the whole crawl
@dataclass(frozen=True)
class CrawlResult:
    index: pd.DataFrame  # INDEX_COLUMNS, sorted by id
    rejects: pd.DataFrame  # REJECT_COLUMNS, sorted
    references: int  # reference images hashed
    reference_failures: int  # reference files that could not be hashed (logged, not in rejects: not in D)

    def summary(self) -> dict[str, int]:
        counts = self.rejects["reason"].value_counts()
        out = {"indexed": len(self.index), "rejected": len(self.rejects), "references": self.references,
               "reference_failures": self.reference_failures}  # fmt: skip
        out.update({f"rejected_{k}": int(counts[k]) for k in sorted(counts.index)})
        return out


def crawl(
    *,
    folders: Sequence[str | Path] = (),
    urls: Sequence[str] = (),
    url_rejects: Sequence[Reject] = (),
    store_dir: str | Path = "data/crawl_store",
    reference_sets: Sequence[str | Path] = (),
    limits: Limits = Limits(),  # frozen, so a shared default is safe
    fetch: FetchConfig = FetchConfig(),
    threshold: int = 12,
    max_color_diff: float = 5.0,
    decode_workers: int = 2,
    client=None,
    on_fetched: Callable[[dict], None] | None = None,
) -> CrawlResult:
    """Index local ``folders`` and ``urls`` (already parsed, see :func:`parse_url_list`) into pool D.

    Downloads first (threads), then decodes every local file, stored download and reference image (a
    process pool of ``decode_workers``), then deduplicates. Every candidate lands in exactly one of the
    two returned tables.
    """
    rejects: list[Reject] = list(url_rejects)
    items, local_rejects = list_local(folders)
    rejects += local_rejects
    if urls:
        outcomes = fetch_urls(urls, store_dir=store_dir, limits=limits, config=fetch, client=client,
                              on_fetched=on_fetched)  # fmt: skip
        for url in urls:
            e = outcomes[url]
            if e["status"] == "ok":
                items.append((url, e["path"]))
            else:
                rejects.append(Reject(url, e["reason"], e["detail"]))
    ref_items, ref_missing = list_local(reference_sets)
    for r in ref_missing:
        log.warning("reference set: %s: %s (%s)", r.source, r.reason, r.detail)

    results = inspect_files(ref_items + items, limits, workers=decode_workers)
    ref_results, results = results[: len(ref_items)], results[len(ref_items) :]
    references = [r for r in ref_results if isinstance(r, ImageRecord)]
    failures = [r for r in ref_results if isinstance(r, Reject)]
    if failures:
        log.warning("%d reference files could not be hashed, e.g. %s: %s", len(failures), failures[0].source,
                    failures[0].reason)  # fmt: skip

    records = [r for r in results if isinstance(r, ImageRecord)]
    rejects += [r for r in results if isinstance(r, Reject)]
    kept, dup_rejects = deduplicate(
        records, threshold=threshold, max_color_diff=max_color_diff, references=references
    )
    rejects += dup_rejects
    log.info("crawl: %d indexed, %d rejected, %d reference images", len(kept), len(rejects), len(references))
    return CrawlResult(index_table(kept), rejects_table(rejects), len(references), len(failures))
