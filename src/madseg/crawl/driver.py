"""The whole crawl: sources -> inspection -> deduplication -> the index and rejects tables."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from madseg.crawl.dedup import deduplicate_spool
from madseg.crawl.inspection import inspect_files, iter_inspect
from madseg.crawl.records import ImageRecord, Limits, Reject
from madseg.crawl.sources import FetchConfig, Journal, fetch_urls, iter_local, list_local
from madseg.crawl.spool import RecordSpool
from madseg.io.tables import write_csv_chunks

log = logging.getLogger(__name__)


class CrawlResult:
    """A finished crawl: its index and rejects, held in the crawl's spool until :meth:`close` (or
    ``with``)."""

    def __init__(self, spool: RecordSpool, references: int, reference_failures: int) -> None:
        self._spool = spool
        self.references = references  # reference images hashed
        self.reference_failures = reference_failures  # reference files not hashed (logged, not in rejects)

    @property
    def index(self) -> pd.DataFrame:
        """pool.csv's rows (INDEX_COLUMNS, sorted by id), in memory: for small crawls; see :meth:`write`."""
        return pd.concat(list(self._spool.index_frames()), ignore_index=True)

    @property
    def rejects(self) -> pd.DataFrame:
        """rejects.csv's rows (REJECT_COLUMNS, sorted)."""
        return pd.concat(list(self._spool.reject_frames()), ignore_index=True)

    def write(self, index_path: str | Path, rejects_path: str | Path) -> None:
        """Write pool.csv and rejects.csv in chunks, each atomically."""
        write_csv_chunks(index_path, self._spool.index_frames())
        write_csv_chunks(rejects_path, self._spool.reject_frames())

    def summary(self) -> dict[str, int]:
        counts = self._spool.reason_counts()
        out = {
            "indexed": len(self._spool),
            "rejected": sum(counts.values()),
            "references": self.references,
            "reference_failures": self.reference_failures,
        }
        out.update({f"rejected_{k}": v for k, v in counts.items()})
        return out

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> CrawlResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def crawl(
    *,
    folders: Sequence[str | Path] = (),
    urls: Iterable[str | Reject] = (),
    store_dir: str | Path = "data/crawl_store",
    reference_sets: Sequence[str | Path] = (),
    limits: Limits = Limits(),  # frozen, so a shared default is safe
    fetch: FetchConfig = FetchConfig(),
    threshold: int = 12,
    max_color_diff: float = 5.0,
    decode_workers: int = 2,
    client=None,
    on_fetched: Callable[[dict], None] | None = None,
    spool_dir: str | Path | None = None,
) -> CrawlResult:
    """Index local ``folders`` and ``urls`` (a URL list's items, see :func:`iter_url_list`) into pool D.

    Downloads first (threads; ``on_fetched`` is called with each outcome), then decodes every local file,
    stored download and reference image (a process pool of ``decode_workers``), then deduplicates. Every
    candidate lands in exactly one of the result's two tables. The work is spooled to a scratch SQLite file
    under ``spool_dir`` (the system's temporary folder if None): memory grows by a few dozen bytes an image
    (a row id, a pHash, the near-duplicate join's band tables).
    """
    spool = RecordSpool(spool_dir)
    try:
        with spool.transaction():
            for item in iter_local(folders):
                if isinstance(item, Reject):
                    spool.add([item])
                elif not spool.list(item, item):
                    spool.add([Reject(item, "duplicate_source", "listed by two folders")])
            for item in urls:
                if isinstance(item, Reject):
                    spool.add([item])
                elif not spool.add_url(item):
                    spool.add([Reject(item, "duplicate_source", "listed twice in the URL list")])
        n_urls, queued = spool.urls()
        if n_urls:
            spool.load_journal(Journal(Path(store_dir) / "journal.jsonl").entries())
            fetched = fetch_urls(
                queued,
                store_dir=store_dir,
                limits=limits,
                config=fetch,
                client=client,
                done=spool.journal_entry,
                total=n_urls,
            )
            with contextlib.closing(fetched):
                for url, e in fetched:
                    if on_fetched is not None:
                        on_fetched(e)
                    if e["status"] == "ok":
                        spool.list(url, e["path"])
                    else:
                        spool.add([Reject(url, e["reason"], e["detail"])])
        ref_items, ref_missing = list_local(reference_sets)
        for r in ref_missing:
            log.warning("reference set: %s: %s (%s)", r.source, r.reason, r.detail)
        ref_results = inspect_files(ref_items, limits, workers=decode_workers, desc="decode references")
        references = [r for r in ref_results if isinstance(r, ImageRecord)]
        failures = [r for r in ref_results if isinstance(r, Reject)]
        if failures:
            log.warning(
                "%d reference files could not be hashed, e.g. %s: %s",
                len(failures),
                failures[0].source,
                failures[0].reason,
            )

        total, listed = spool.listed()
        for batch in iter_inspect(listed, limits, workers=decode_workers, total=total):
            spool.add(batch)
        deduplicate_spool(
            spool,
            threshold=threshold,
            max_color_diff=max_color_diff,
            references=references,
            workers=decode_workers,
        )
    except BaseException:
        spool.close()
        raise
    result = CrawlResult(spool, len(references), len(failures))
    summary = result.summary()
    log.info(
        "crawl: %d indexed, %d rejected, %d reference images",
        summary["indexed"],
        summary["rejected"],
        len(references),
    )
    return result
