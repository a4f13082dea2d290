"""The crawl's working set on disk: candidates, accepted records and rejects in a scratch SQLite file.

A crawl of 10^6 images would hold ~3 KB of Python objects per image in lists; here only what deduplication
needs at once (a hash and a row id per image, 16 bytes) is in memory. SQLite sorts (by source, by id) and
groups (exact duplicates) on disk with a bounded cache, and the index and the rejects are written from it in
chunks.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.crawl.hashing import phash_hex
from madseg.crawl.records import ImageRecord, Reject

INDEX_COLUMNS = ["id", "source", "path", "width", "height", "phash", "bytes"]
REJECT_COLUMNS = ["source", "reason", "detail"]

_SIGN = np.uint64(1 << 63)
_CHUNK = 65_536  # rows per read or write


def _to_sql(h: int) -> int:
    """A uint64 as SQLite's signed 64-bit INTEGER (two's complement)."""
    return h - (1 << 64) if h >= 1 << 63 else h


def _from_sql(v: int) -> int:
    return v + (1 << 64) if v < 0 else v


class RecordSpool:
    """Listed candidates, accepted records and rejects of one crawl, in a SQLite file under ``directory``
    (the system's temporary folder if None), deleted by :meth:`close`.

    Row order never matters: every read sorts (strings by code point, as Python sorts them).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="madseg-crawl-", dir=directory)
        self._db = sqlite3.connect(Path(self._dir.name) / "spool.sqlite", isolation_level=None)
        # scratch data: no journal, no fsync; a bounded page cache, sorts spill to files
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-32000", "temp_store=FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript("""
            CREATE TABLE urls (url TEXT PRIMARY KEY);
            CREATE TABLE journal (url TEXT PRIMARY KEY, entry TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE listed (source TEXT PRIMARY KEY, path TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE rec (source TEXT NOT NULL, id TEXT NOT NULL, path TEXT NOT NULL, width INTEGER,
                              height INTEGER, phash INTEGER, bytes INTEGER, layout BLOB);
            CREATE TABLE rej (source TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL);
        """)

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction (a write outside one is a transaction of its own); nestable."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_url(self, url: str) -> bool:
        """Queue a URL to fetch; False (and nothing queued) if it is queued already."""
        return self._db.execute("INSERT OR IGNORE INTO urls VALUES (?)", (url,)).rowcount == 1

    def load_journal(self, entries: Iterable[dict]) -> None:
        """Index a fetch journal's entries by URL (a later entry replaces an earlier one)."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO journal VALUES (?, ?)", ((e["url"], json.dumps(e)) for e in entries)
            )

    def list(self, source: str, path: str) -> bool:
        """List a candidate; False (and nothing listed) if ``source`` is listed already."""
        cur = self._db.execute("INSERT OR IGNORE INTO listed VALUES (?, ?)", (source, path))
        return cur.rowcount == 1

    def add(self, results: Iterable[ImageRecord | Reject]) -> None:
        """Store inspection results: records as candidates of the index, rejects as rejects."""
        recs, rejs = [], []
        for r in results:
            if isinstance(r, ImageRecord):
                recs.append((r.source, r.id, r.path, r.width, r.height, _to_sql(r.phash), r.bytes, r.layout))
            else:
                rejs.append((r.source, r.reason, r.detail))
        with self.transaction():
            self._db.executemany("INSERT INTO rec VALUES (?, ?, ?, ?, ?, ?, ?, ?)", recs)
            self._db.executemany("INSERT INTO rej VALUES (?, ?, ?)", rejs)

    def reject(self, rowids: Iterable[int], rejects: Iterable[Reject]) -> None:
        """Move records (by row id) out of the index, into the rejects."""
        with self.transaction():
            self._db.executemany("DELETE FROM rec WHERE rowid = ?", ((int(r),) for r in rowids))
            self._db.executemany("INSERT INTO rej VALUES (?, ?, ?)", ((r.source, r.reason, r.detail) for r in rejects))

    # ------------------------------------------------------------------------------------------ reading
    def urls(self) -> tuple[int, Iterator[str]]:
        """(how many, the queued URLs in the order they were queued, streamed)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM urls").fetchone()
        return n, (url for (url,) in self._rows("SELECT url FROM urls ORDER BY rowid"))

    def journal_entry(self, url: str) -> dict | None:
        """The journal's latest entry for ``url``, if any (see :meth:`load_journal`)."""
        row = self._db.execute("SELECT entry FROM journal WHERE url = ?", (url,)).fetchone()
        return None if row is None else json.loads(row[0])

    def listed(self) -> tuple[int, Iterator[tuple[str, str]]]:
        """(how many, the listed (source, path) pairs sorted by source, streamed)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM listed").fetchone()
        return n, self._rows("SELECT source, path FROM listed ORDER BY source")

    def exact_duplicates(self) -> Iterator[tuple[int, str, str, str]]:
        """(row id, source, id, first source) of every record whose bytes an earlier source has."""
        return self._rows("""
            SELECT rowid, source, id, first FROM (
                SELECT rowid, source, id, MIN(source) OVER (PARTITION BY id) AS first FROM rec)
            WHERE source != first""")

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """The records in (source, id) order: (row ids (N,) int64, pHashes (N,) uint64)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM rec").fetchone()
        rows = self._db.execute("SELECT rowid, phash FROM rec ORDER BY source, id")
        flat = np.fromiter((v for row in rows for v in row), dtype=np.int64, count=2 * n).reshape(n, 2)
        return flat[:, 0].copy(), flat[:, 1].view(np.uint64)

    def record(self, rowid: int) -> ImageRecord:
        row = self._db.execute(
            "SELECT id, source, path, width, height, phash, bytes, layout FROM rec WHERE rowid = ?",
            (int(rowid),),
        ).fetchone()
        if row is None:
            raise KeyError(f"no record with row id {rowid}")
        return ImageRecord(*row[:5], _from_sql(row[5]), row[6], row[7])  # type: ignore[arg-type]

    def records(self) -> list[ImageRecord]:
        """Every record in the index, sorted by id (for small crawls and tests)."""
        rows = self._db.execute("SELECT id, source, path, width, height, phash, bytes, layout FROM rec ORDER BY id")
        return [ImageRecord(*r[:5], _from_sql(r[5]), r[6], r[7]) for r in rows]  # type: ignore[arg-type]

    def rejects(self) -> list[Reject]:
        return [Reject(*r) for r in self._db.execute("SELECT * FROM rej ORDER BY source, reason, detail")]

    def reason_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT reason, COUNT(*) FROM rej GROUP BY reason ORDER BY reason"))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM rec").fetchone()[0]

    # ------------------------------------------------------------------------------------------- tables
    def index_frames(self) -> Iterator[pd.DataFrame]:
        """pool.csv's rows (INDEX_COLUMNS, sorted by id, ``phash`` as 16 hex characters), in chunks."""
        cur = self._db.execute("SELECT id, source, path, width, height, phash, bytes FROM rec ORDER BY id")
        yield from self._frames(
            cur, INDEX_COLUMNS, lambda df: df.assign(phash=df["phash"].map(lambda v: phash_hex(_from_sql(v))))
        )

    def reject_frames(self) -> Iterator[pd.DataFrame]:
        """rejects.csv's rows (REJECT_COLUMNS, sorted by all three), in chunks."""
        cur = self._db.execute("SELECT source, reason, detail FROM rej ORDER BY source, reason, detail")
        yield from self._frames(cur, REJECT_COLUMNS, lambda df: df)

    @staticmethod
    def _frames(cur: sqlite3.Cursor, columns: list[str], finish) -> Iterator[pd.DataFrame]:
        first = True
        while rows := cur.fetchmany(_CHUNK):
            first = False
            yield finish(pd.DataFrame(rows, columns=columns))
        if first:
            yield pd.DataFrame({c: pd.Series(dtype=object) for c in columns})

    def _rows(self, sql: str) -> Iterator[tuple]:
        cur = self._db.execute(sql)
        while rows := cur.fetchmany(_CHUNK):
            yield from rows
