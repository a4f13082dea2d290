"""Where candidates come from: local folders, and URL lists fetched by a pool of threads into a
content-addressed store with a resumable journal."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from madseg.crawl.inspection import open_header
from madseg.crawl.records import Limits, Reject, _Rejected
from madseg.io.atomic import write_bytes
from madseg.io.images import image_id

log = logging.getLogger(__name__)

_STORE_EXT = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "PPM": "ppm",
}


def iter_local(folders: Iterable[str | Path]) -> Iterator[str | Reject]:
    """Every file under ``folders`` (recursive, each folder's entries sorted), whatever its extension, as its
    posix path, streamed; a folder that does not exist or cannot be listed, and a symbolic link to a directory
    (not followed: it could loop), as a Reject. A file under two of the folders comes twice."""
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            yield Reject(root.as_posix(), "unreadable", "no such folder")
            continue
        errors: list[Reject] = []

        def unreadable_dir(e: OSError, errors: list[Reject] = errors) -> None:
            errors.append(Reject(Path(e.filename).as_posix(), "unreadable", f"folder: {e.strerror or e}"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_dir):
            yield from errors
            errors.clear()
            dirnames.sort()
            for name in list(dirnames):
                p = Path(dirpath, name)
                if p.is_symlink():
                    dirnames.remove(name)
                    yield Reject(p.as_posix(), "unreadable", "symlink to a directory (not followed)")
            for name in sorted(filenames):
                yield Path(dirpath, name).as_posix()
        yield from errors


def list_local(folders: Iterable[str | Path]) -> tuple[list[tuple[str, str]], list[Reject]]:
    """Every file under ``folders`` as sorted (source, path) pairs, and the rejects of :func:`iter_local`; the
    same file reached twice is a ``duplicate_source``. In memory: for small sets (references)."""
    found: set[str] = set()
    rejects: list[Reject] = []
    for item in iter_local(folders):
        if isinstance(item, Reject):
            rejects.append(item)
        elif item in found:
            rejects.append(Reject(item, "duplicate_source", "listed by two folders"))
        else:
            found.add(item)
    return [(p, p) for p in sorted(found)], rejects


# ------------------------------------------------------------------------------------------------- URLs
def iter_url_list(lines: str | Iterable[str]) -> Iterator[str | Reject]:
    """URLs from a text (or its lines, e.g. an open file, read as they come), streamed: one per line, blank
    lines and ``#`` comments skipped, a line that is not an http(s) URL as a ``bad_url`` Reject. A URL listed
    twice comes twice: the crawl's spool rejects the second as a ``duplicate_source``."""
    for line in lines.splitlines() if isinstance(lines, str) else lines:
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        if url.lower().startswith(("http://", "https://")):
            yield url
        else:
            yield Reject(url, "bad_url", "only http(s) URLs are fetched")


class Journal:
    """Append-only JSON-lines record of every final fetch outcome, fsynced per line.

    A crash can tear at most the last line, which :meth:`load` ignores. Later lines win over earlier ones.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def entries(self) -> Iterator[dict]:
        """Every intact line's entry, in order (streamed)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    yield json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    log.warning("%s: ignoring a torn line (interrupted write)", self.path)

    def load(self) -> dict[str, dict]:
        """url -> its latest entry (in memory: for small journals; the crawl looks them up in its spool)."""
        return {entry["url"]: entry for entry in self.entries()}

    def append(self, entry: dict) -> None:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


@dataclass(frozen=True)
class FetchConfig:
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    workers: int = 8
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0 or self.workers < 1:
            raise ValueError(f"bad fetch settings: {self}")


_TRANSIENT = ("timeout", "connection_error")


def _transient(reason: str) -> bool:
    return reason in _TRANSIENT or reason in ("http_429",) or reason.startswith("http_5")


def _download(client, url: str, limits: Limits, timeout_s: float) -> bytes:
    """One GET with a byte cap and a total deadline (a server dripping bytes cannot hold a thread forever)."""
    import httpx  # imported here: local-only crawls and worker processes need not load it

    deadline = time.monotonic() + 3 * timeout_s
    try:
        with client.stream("GET", url) as r:
            if r.status_code != 200:
                raise _Rejected(f"http_{r.status_code}", f"status {r.status_code} {r.reason_phrase}".strip())
            declared = r.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
                raise _Rejected("too_many_bytes", f"content-length {declared} > max_bytes {limits.max_bytes}")
            buf = bytearray()
            for chunk in r.iter_bytes(1 << 16):
                buf += chunk
                if len(buf) > limits.max_bytes:
                    raise _Rejected("too_many_bytes", f"> max_bytes {limits.max_bytes} (stream cut)")
                if time.monotonic() > deadline:
                    raise _Rejected("timeout", f"body not complete within {3 * timeout_s:g} s")
            return bytes(buf)
    except httpx.TooManyRedirects as e:
        raise _Rejected("too_many_redirects", str(e)) from None
    except httpx.TimeoutException as e:
        raise _Rejected("timeout", f"{type(e).__name__} after {timeout_s:g} s") from None
    except httpx.UnsupportedProtocol as e:
        raise _Rejected("bad_url", str(e)) from None
    except (httpx.TransportError, httpx.DecodingError) as e:
        raise _Rejected("connection_error", f"{type(e).__name__}: {e}") from None


def _sniff(data: bytes) -> str:
    """The accepted format named by the magic bytes, or raise _Rejected (the content-type is not trusted)."""
    with open_header(data) as im:
        return str(im.format)


def store_path(store_dir: str | Path, iid: str, fmt: str) -> Path:
    """Where the store keeps an image: ``<store>/<id[:2]>/<id>.<ext>`` (two-level so no folder gets huge)."""
    return Path(store_dir) / iid[:2] / f"{iid}.{_STORE_EXT.get(fmt, 'img')}"


def _fetch_one(client, url: str, store_dir: Path, limits: Limits, cfg: FetchConfig, journal: Journal) -> dict:
    """Download one URL with retries; store an image, journal a final outcome; return the outcome entry."""
    attempt = 0
    while True:
        try:
            data = _download(client, url, limits, cfg.timeout_s)
            fmt = _sniff(data)
            iid = image_id(data)
            dest = store_path(store_dir, iid, fmt)
            if not (dest.exists() and dest.stat().st_size == len(data)):
                write_bytes(dest, data)
            entry = {"url": url, "status": "ok", "id": iid, "path": dest.as_posix(), "bytes": len(data)}
            break
        except _Rejected as r:
            entry = {"url": url, "status": "reject", "reason": r.reason, "detail": r.detail}
            if r.reason == "too_many_bytes":
                entry["max_bytes"] = limits.max_bytes
            if not _transient(r.reason):
                break
            if attempt >= cfg.retries:
                entry["detail"] += f" ({attempt + 1} attempts)"
                return entry  # transient: not journaled, so the next crawl tries again
            time.sleep(cfg.backoff_s * 2**attempt)
            attempt += 1
    journal.append(entry)
    return entry


def fetch_urls(
    urls: Iterable[str],
    *,
    store_dir: str | Path,
    limits: Limits,
    config: FetchConfig,
    client=None,
    done: Callable[[str], dict | None] | None = None,
    total: int | None = None,
) -> Iterator[tuple[str, dict]]:
    """Download ``urls`` into the content-addressed store; yield (url, outcome entry) for each, streamed.

    An outcome already in the store's journal (``<store_dir>/journal.jsonl``; ``done`` looks one up, by
    default in the journal loaded into memory) is reused and not fetched again, unless the stored file has
    vanished. Each worker thread journals its own outcome as soon as it has one, so an exception in the caller
    while it consumes the outcomes loses nothing already downloaded. Fetched outcomes come in the order they
    finish. ``client`` is an ``httpx.Client`` (one is made from ``config`` if None).
    """
    import httpx

    store_dir = Path(store_dir)
    journal = Journal(store_dir / "journal.jsonl")
    done = done if done is not None else journal.load().get
    own_client = client is None
    if own_client:
        client = httpx.Client(
            follow_redirects=True,
            max_redirects=config.max_redirects,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.workers, max_keepalive_connections=config.workers),
            headers={"User-Agent": "madseg-crawl/0.1"},
        )
    reused = 0
    ex = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="crawl")
    pending: dict = {}
    try:
        with tqdm(total=total, desc="fetch", unit="url", mininterval=1.0, disable=None) as bar:
            for url in itertools.chain(urls, [None]):
                if url is not None:
                    entry = done(url)
                    # a byte-cap reject is final only under the same cap; an image only while its file exists
                    if entry is not None and (
                        Path(entry["path"]).is_file()
                        if entry["status"] == "ok"
                        else entry.get("max_bytes", limits.max_bytes) == limits.max_bytes
                    ):
                        reused += 1
                        bar.update()
                        yield url, entry
                        continue
                    # submit lazily (at most 4 per worker in flight): an interruption leaves little half-done
                    pending[ex.submit(_fetch_one, client, url, store_dir, limits, config, journal)] = url
                while pending and (url is None or len(pending) >= 4 * config.workers):
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: pending[f]):
                        bar.update()
                        yield pending.pop(fut), fut.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if own_client:
            client.close()
    if reused:
        log.info("resume: %d URLs already fetched (journal %s)", reused, journal.path)
