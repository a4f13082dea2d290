"""Build the pool index D from local folders and/or a list of image URLs.

Every candidate goes through the same checks, whatever its origin:

1. its bytes are obtained: a local file is read (only regular files; a FIFO or a broken link is refused, never
   opened), a URL is downloaded by a pool of threads (timeouts, bounded retries with exponential backoff, a
   byte cap, bounded redirects) into a content-addressed store, with an fsynced append-only journal so that an
   interrupted crawl resumes without fetching again what it already has;
2. the format is sniffed from the magic bytes by PIL (the extension and the content-type are never trusted),
   the header's size is checked against the decompression-bomb guard and the side limits BEFORE decoding, then
   the image is decoded fully (a truncated file fails here), EXIF orientation applied and converted to RGB;
3. the id is the content hash (:func:`madseg.io.images.image_id`) and a 64-bit DCT perceptual hash computed;
4. exact duplicates collapse to the lexicographically first source; near-duplicates (pHash within a Hamming
   threshold, confirmed by an 8x8 colour layout, since pHash sees luminance only) of a reference set (e.g.
   S0/T0: web crawls do contain benchmark images) are excluded; near-duplicates inside D keep one
   representative, the lexicographically first source (the same rule as for exact duplicates).

Nothing is dropped silently: every candidate ends either in the index or in the rejects with a reason from
:data:`REASONS`. Near-duplicate search uses multi-index hashing (4 bands of 16 bits), so it is not quadratic.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from madseg.io.atomic import write_bytes
from madseg.io.images import image_id, to_rgb_image

log = logging.getLogger(__name__)

# Why a candidate is not in the index. Transient network failures (timeout, connection_error, http_5xx/429)
# are not journaled, so a later crawl retries them; every other outcome is final for that URL.
REASONS = (
    "unreadable",  # not a readable regular file (broken link, FIFO, permission, I/O error)
    "empty_file",  # zero bytes
    "too_many_bytes",  # over crawl.max_bytes (checked before reading/downloading the rest)
    "not_an_image",  # magic bytes of no accepted image format
    "decompression_bomb",  # header's width*height over crawl.max_pixels (checked before decoding)
    "too_small",  # shorter side under crawl.min_side
    "too_large",  # longer side over crawl.max_side
    "truncated",  # header fine, pixel data ends early
    "corrupt",  # header fine, pixel data undecodable for another reason
    "bad_url",  # not an http(s) URL, or a redirect to one
    "duplicate_source",  # the same file or URL listed twice
    "timeout",
    "connection_error",
    "too_many_redirects",
    # plus "http_<status>" for any final answer other than 200 (after redirects), e.g. http_404, http_500
    "exact_duplicate",
    "near_duplicate",
    "near_duplicate_of_reference",
)

# Formats PIL may sniff (JPEG covers MPO). PIL opens more (EPS needs Ghostscript, PSD...); we want photos.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
_STORE_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
              "TIFF": "tif", "PPM": "ppm"}  # fmt: skip
_SNIFF_BYTES = 1 << 16  # enough for PIL to read any accepted header (large EXIF blocks included)
_MIN_POOL_ITEMS = 256  # below this a process pool costs more to start than it saves


@dataclass(frozen=True)
class Limits:
    """Acceptance limits for one image (pixels, sides and file bytes)."""

    min_side: int = 32
    max_side: int = 8192
    max_pixels: int = 40_000_000
    max_bytes: int = 30_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.min_side <= self.max_side:
            raise ValueError(f"need 1 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise ValueError(
                f"max_pixels and max_bytes must be >= 1, got {self.max_pixels}, {self.max_bytes}"
            )


@dataclass(frozen=True)
class ImageRecord:
    """One accepted image. ``phash`` is the 64-bit perceptual hash as an unsigned int; ``layout`` the
    8x8 RGB colour layout (192 bytes, see :func:`color_layout`; empty = unknown, pHash alone decides)."""

    id: str
    source: str
    path: str
    width: int
    height: int
    phash: int
    bytes: int
    layout: bytes = b""


@dataclass(frozen=True)
class Reject:
    source: str
    reason: str
    detail: str = ""


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------------------------------------ perceptual hash
def _dct_rows(n: int, k: int) -> np.ndarray:
    """The first k rows of the orthonormal DCT-II matrix of size n: (k, n) float64."""
    return scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)[:k]


_DCT_32_8 = _dct_rows(32, 8)  # a constant: the 8 lowest frequencies of a 32-point DCT


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image (H, W, 3) or (H, W) uint8.

    The image is resized to 32x32 (antialiased bilinear), its luminance transformed by an orthonormal 2-D
    DCT-II, of which only the 8x8 lowest frequencies are computed (two small matrix products). Each of those
    64 coefficients is compared with the median of the 63 non-DC ones (the DC term only measures brightness):
    bit = coefficient > median, row-major, first bit most significant. Re-encoding, resizing and light
    cropping flip few of these bits; different scenes differ in about half of them.
    """
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3):
        raise ValueError(f"phash needs (H, W, 3) or (H, W) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    return _phash_of_thumb(_thumb(Image.fromarray(rgb)))


def color_layout(rgb: np.ndarray) -> bytes:
    """The image's colours averaged over an 8x8 grid: 192 bytes (8, 8, 3) uint8, row-major.

    pHash sees luminance only, so two different scenes with one big blob each (a blue disc, a red one of
    the same brightness) can hash alike; their colour layouts cannot. Copies (re-encoded, resized, lightly
    cropped) keep it.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"color_layout needs (H, W, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    return _layout_of_thumb(_thumb(Image.fromarray(rgb)))


def _thumb(im: Image.Image) -> Image.Image:
    # one 32x32 thumbnail feeds both signatures: the only pass over the full-resolution pixels
    # reducing_gap: an integer box reduction first, then bilinear over >= 2x the target (same look, faster)
    return im.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _phash_of_thumb(thumb: Image.Image) -> int:
    lum = np.asarray(thumb if thumb.mode == "L" else thumb.convert("L"), dtype=np.float64)
    low = (_DCT_32_8 @ lum @ _DCT_32_8.T).ravel()
    median = np.partition(low[1:], 31)[31]  # the median of 63 values, without a full sort
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def _layout_of_thumb(thumb: Image.Image) -> bytes:
    return thumb.resize((8, 8), Image.Resampling.BOX).tobytes()  # 4x4 block means of the thumbnail


def color_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference (0..255) between two colour layouts; 0.0 if either is unknown (empty)."""
    if not a or not b:
        return 0.0
    if len(a) != len(b):
        raise ValueError(f"colour layouts differ in length: {len(a)} vs {len(b)}")
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


def phash_hex(h: int) -> str:
    """A 64-bit hash as 16 lowercase hex characters (the form stored in pool.csv)."""
    return f"{h:016x}"


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


class HashIndex:
    """Multi-index hashing over a fixed set of 64-bit hashes: 4 bands of 16 bits, one bucket table per band.

    If two hashes are within Hamming distance t, one of the 4 bands differs by at most t // 4 bits
    (pigeonhole), so a query probes each band's buckets within that radius (4 * C(16, <= t//4) buckets: 68
    for t < 8, 548 for t < 12, 2788 for t < 16) and verifies the candidates' distances, instead of scanning
    every stored hash. Buckets are a CSR table (hashes sorted by band value + 65,537 offsets), so a whole
    query is a few numpy operations. Expected candidates per query: probes * N / 65,536.

    hashes: (N,) ints in [0, 2**64); entry i is reported as index i.
    """

    BANDS = 4
    BAND_BITS = 16

    def __init__(self, hashes: Sequence[int], threshold: int) -> None:
        if not 0 <= threshold <= 64:
            raise ValueError(f"threshold must be in 0..64 bits, got {threshold}")
        self.threshold = threshold
        radius = threshold // self.BANDS
        flips = [
            sum(1 << b for b in bits)
            for r in range(radius + 1)
            for bits in itertools.combinations(range(self.BAND_BITS), r)
        ]
        self._flips = np.array(flips, dtype=np.int64)
        self._hashes = np.array([int(h) for h in hashes], dtype=np.uint64).reshape(-1)
        self._tables = []
        for b in range(self.BANDS):
            sub = ((self._hashes >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)
            order = np.argsort(sub, kind="stable")
            offsets = np.zeros(65537, dtype=np.int64)
            np.cumsum(np.bincount(sub, minlength=65536), out=offsets[1:])
            self._tables.append((order, offsets))

    def __len__(self) -> int:
        return len(self._hashes)

    def query(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Entries within the threshold of ``h``: (indices (M,) int64, distances (M,) int64), sorted by
        (distance, index)."""
        _, indices, dists = self.query_many([h])
        return indices, dists

    def query_many(
        self, hashes: Sequence[int], chunk: int = 512
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, entry) pairs within the threshold, for many queries at once (vectorised over chunks).

        Returns (query positions (M,), entry indices (M,), distances (M,)), int64, sorted by
        (query, distance, entry).
        """
        qs = np.array([int(h) for h in hashes], dtype=np.uint64).reshape(-1)
        out_q, out_i, out_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if not len(self._hashes) or not len(qs):
            return out_q[0], out_i[0], out_d[0]
        for lo in range(0, len(qs), chunk):
            q = qs[lo : lo + chunk]
            found_q, found_i = [], []
            for b, (order, offsets) in enumerate(self._tables):
                sub = ((q >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)
                keys = (sub[:, None] ^ self._flips[None, :]).ravel()  # (chunk * probes,)
                starts, lens = offsets[keys], offsets[keys + 1] - offsets[keys]
                hit = np.flatnonzero(lens)
                if not len(hit):
                    continue
                starts, lens = starts[hit], lens[hit]
                # concatenated ranges [start, start + len) without a Python loop
                firsts = np.cumsum(lens) - lens
                pos = np.arange(lens.sum()) - np.repeat(firsts, lens) + np.repeat(starts, lens)
                found_q.append(np.repeat(hit // len(self._flips), lens) + lo)
                found_i.append(order[pos])
            if not found_q:
                continue
            pq, pi = np.concatenate(found_q), np.concatenate(found_i)
            dist = np.bitwise_count(self._hashes[pi] ^ qs[pq]).astype(np.int64)
            close = dist <= self.threshold  # filter before de-duplicating: most candidates are far
            pq, pi, dist = pq[close], pi[close], dist[close]
            # the same pair can be found through several bands
            _, first = np.unique(pq * len(self._hashes) + pi, return_index=True)
            out_q.append(pq[first])
            out_i.append(pi[first])
            out_d.append(dist[first])
        pq, pi, dist = np.concatenate(out_q), np.concatenate(out_i), np.concatenate(out_d)
        order = np.lexsort((pi, dist, pq))
        return pq[order], pi[order], dist[order]


# --------------------------------------------------------------------------------------- one image's checks
def inspect_bytes(data: bytes, *, source: str, path: str, limits: Limits) -> ImageRecord | Reject:
    """Validate, decode and hash one candidate's bytes (pure: no file IO).

    Order matters: the byte cap, then the sniffed header (format, size) against the bomb guard and the side
    limits, and only then the full decode, so that a hostile header never makes us allocate its pixels.
    """
    try:
        width, height, thumb = _decode(data, limits)
    except _Rejected as r:
        return Reject(source, r.reason, r.detail)
    return ImageRecord(
        image_id(data),
        source,
        path,
        width,
        height,
        _phash_of_thumb(thumb),
        len(data),
        _layout_of_thumb(thumb),
    )


def _decode(data: bytes, limits: Limits) -> tuple[int, int, Image.Image]:
    """Decode fully, apply EXIF orientation, convert to RGB; return (width, height, 32x32 RGB thumbnail).

    Stays in PIL (no array copies) since only the thumbnail is kept: the hashes need nothing else.
    """
    if not data:
        raise _Rejected("empty_file", "0 bytes")
    if len(data) > limits.max_bytes:
        raise _Rejected("too_many_bytes", f"{len(data)} bytes > max_bytes {limits.max_bytes}")
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise _Rejected("not_an_image", f"magic bytes {data[:8].hex()}") from None
    except Image.DecompressionBombError as e:
        raise _Rejected("decompression_bomb", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _Rejected("corrupt", f"header: {e}") from None
    with im:
        w, h = im.size
        if w * h > limits.max_pixels:
            raise _Rejected("decompression_bomb", f"{w}x{h} = {w * h} px > max_pixels {limits.max_pixels}")
        if min(w, h) < limits.min_side:
            raise _Rejected("too_small", f"{w}x{h}: shorter side < min_side {limits.min_side}")
        if max(w, h) > limits.max_side:
            raise _Rejected("too_large", f"{w}x{h}: longer side > max_side {limits.max_side}")
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # in place: no copy when nothing is to be turned
            rgb = im if im.mode == "RGB" else to_rgb_image(im)
            width, height, thumb = rgb.width, rgb.height, _thumb(rgb)
        except Image.DecompressionBombError as e:
            raise _Rejected("decompression_bomb", str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            msg = str(e)
            reason = "truncated" if ("truncated" in msg or "broken data stream" in msg) else "corrupt"
            raise _Rejected(reason, f"{im.format}: {msg}") from None
    return width, height, thumb


def read_candidate(path: str | Path, limits: Limits) -> bytes:
    """Read a local candidate's bytes, refusing what must not be opened (FIFOs, devices) or is too big.

    Raises _Rejected (internal) with the reason; only regular files are read, so a FIFO can never block.
    """
    try:
        st = os.stat(path)  # follows links: a broken link fails here
    except OSError as e:
        raise _Rejected("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode) else "special"
        raise _Rejected("unreadable", f"not a regular file ({kind})")
    if st.st_size > limits.max_bytes:
        raise _Rejected("too_many_bytes", f"{st.st_size} bytes > max_bytes {limits.max_bytes}")
    try:
        with open(path, "rb") as f:
            return f.read(limits.max_bytes + 1)
    except OSError as e:
        raise _Rejected("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None


def inspect_file(source: str, path: str, limits: Limits) -> ImageRecord | Reject:
    """Read and inspect one local file (see :func:`inspect_bytes`)."""
    try:
        data = read_candidate(path, limits)
    except _Rejected as r:
        return Reject(source, r.reason, r.detail)
    return inspect_bytes(data, source=source, path=path, limits=limits)


def _inspect_task(task: tuple[str, str, Limits]) -> ImageRecord | Reject:
    return inspect_file(*task)


def inspect_files(
    items: Sequence[tuple[str, str]], limits: Limits, *, workers: int = 2, desc: str = "decode"
) -> list[ImageRecord | Reject]:
    """Inspect (source, path) pairs, in a pool of ``workers`` processes when that pays; input order kept."""
    tasks = [(s, p, limits) for s, p in items]
    bar = dict(total=len(tasks), desc=desc, unit="img", mininterval=1.0, disable=None)
    if workers <= 1 or len(tasks) < _MIN_POOL_ITEMS:
        return list(tqdm(map(_inspect_task, tasks), **bar))
    # fork: workers inherit the imported modules (no re-import, ~ms start). This runs after the download
    # threads have ended, and the workers take no lock of the parent's (no logging, no tqdm)
    ctx = multiprocessing.get_context("fork")
    chunk = max(8, min(256, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return list(tqdm(ex.map(_inspect_task, tasks, chunksize=chunk), **bar))


# -------------------------------------------------------------------------------------------- local folders
def list_local(folders: Iterable[str | Path]) -> tuple[list[tuple[str, str]], list[Reject]]:
    """Every file under ``folders`` (recursive, sorted), whatever its extension, as (source, path) pairs.

    Symbolic links to directories are not followed (they could loop) and are reported as rejects, as are a
    folder that does not exist or cannot be listed; the same file reached twice is a ``duplicate_source``.
    """
    found: dict[str, str] = {}
    rejects: list[Reject] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            rejects.append(Reject(root.as_posix(), "unreadable", "no such folder"))
            continue

        def unreadable_dir(e: OSError) -> None:
            rejects.append(Reject(Path(e.filename).as_posix(), "unreadable", f"folder: {e.strerror or e}"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_dir):
            dirnames.sort()
            for name in list(dirnames):
                p = Path(dirpath, name)
                if p.is_symlink():
                    dirnames.remove(name)
                    rejects.append(
                        Reject(p.as_posix(), "unreadable", "symlink to a directory (not followed)")
                    )
            for name in sorted(filenames):
                p = Path(dirpath, name).as_posix()
                if p in found:
                    rejects.append(Reject(p, "duplicate_source", "listed by two folders"))
                else:
                    found[p] = p
    return sorted(found.items()), rejects


# ------------------------------------------------------------------------------------------------- URLs
def parse_url_list(text: str) -> tuple[list[str], list[Reject]]:
    """URLs from a text file: one per line, blank lines and ``#`` comments ignored; first occurrence kept."""
    urls: list[str] = []
    seen: set[str] = set()
    rejects: list[Reject] = []
    for line in text.splitlines():
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        if not url.lower().startswith(("http://", "https://")):
            rejects.append(Reject(url, "bad_url", "only http(s) URLs are fetched"))
        elif url in seen:
            rejects.append(Reject(url, "duplicate_source", "listed twice in the URL list"))
        else:
            seen.add(url)
            urls.append(url)
    return urls, rejects


class Journal:
    """Append-only JSON-lines record of every final fetch outcome, fsynced per line.

    A crash can tear at most the last line, which :meth:`load` ignores. Later lines win over earlier ones.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict]:
        entries: dict[str, dict] = {}
        if not self.path.exists():
            return entries
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    log.warning("%s: ignoring a torn line (interrupted write)", self.path)
                    continue
                entries[entry["url"]] = entry
        return entries

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
    if not data:
        raise _Rejected("empty_file", "0 bytes")
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as im:
            return str(im.format)
    except UnidentifiedImageError:
        raise _Rejected("not_an_image", f"magic bytes {data[:8].hex()}") from None
    except Image.DecompressionBombError as e:
        raise _Rejected("decompression_bomb", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _Rejected("corrupt", f"header: {e}") from None


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
    urls: Sequence[str],
    *,
    store_dir: str | Path,
    limits: Limits,
    config: FetchConfig,
    client=None,
    on_fetched: Callable[[dict], None] | None = None,
) -> dict[str, dict]:
    """Download ``urls`` into the content-addressed store; return url -> outcome entry.

    Outcomes already in the store's journal (``<store_dir>/journal.jsonl``) are reused and not fetched again,
    unless the stored file has vanished. Each worker thread journals its own outcome as soon as it has one, so
    an exception in the caller (or in ``on_fetched``, called in this thread after each fetch) loses nothing
    already downloaded. ``client`` is an ``httpx.Client`` (one is made from ``config`` if None).
    """
    import httpx

    store_dir = Path(store_dir)
    journal = Journal(store_dir / "journal.jsonl")
    done = journal.load()
    outcomes: dict[str, dict] = {}
    todo = []
    for url in urls:
        entry = done.get(url)
        # a byte-cap reject is final only under the same cap; an image is reused only while its file exists
        reusable = entry is not None and (
            Path(entry["path"]).is_file()
            if entry["status"] == "ok"
            else entry.get("max_bytes", limits.max_bytes) == limits.max_bytes
        )
        if reusable:
            outcomes[url] = entry
        else:
            todo.append(url)
    if len(todo) < len(urls):
        log.info(
            "resume: %d of %d URLs already fetched (journal %s)",
            len(urls) - len(todo),
            len(urls),
            journal.path,
        )
    if not todo:
        return outcomes

    own_client = client is None
    if own_client:
        client = httpx.Client(
            follow_redirects=True,
            max_redirects=config.max_redirects,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.workers, max_keepalive_connections=config.workers),
            headers={"User-Agent": "madseg-crawl/0.1"},
        )
    ex = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="crawl")
    try:
        # submit lazily (at most 4 per worker in flight) so that an interruption leaves little half-done
        it = iter(todo)
        pending = {ex.submit(_fetch_one, client, u, store_dir, limits, config, journal): u
                   for u in itertools.islice(it, 4 * config.workers)}  # fmt: skip
        with tqdm(total=len(todo), desc="fetch", unit="url", mininterval=1.0, disable=None) as bar:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: pending[f]):
                    url = pending.pop(fut)
                    outcomes[url] = fut.result()
                    bar.update()
                    if on_fetched is not None:
                        on_fetched(outcomes[url])
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[ex.submit(_fetch_one, client, nxt, store_dir, limits, config, journal)] = nxt
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if own_client:
            client.close()
    return outcomes


# ------------------------------------------------------------------------------------------- deduplication
def deduplicate(
    records: Iterable[ImageRecord],
    *,
    threshold: int,
    max_color_diff: float = 5.0,
    references: Iterable[ImageRecord] = (),
) -> tuple[list[ImageRecord], list[Reject]]:
    """Collapse exact and near duplicates (pure).

    Two images are near duplicates when their pHashes differ in at most ``threshold`` bits AND their colour
    layouts differ by at most ``max_color_diff`` (mean absolute, 0..255): the hash finds candidates fast
    (multi-index hashing), the layout vetoes different scenes whose luminance happens to hash alike.
    A record that is a near duplicate of a ``references`` image (e.g. S0/T0) is rejected as
    ``near_duplicate_of_reference``. Exact duplicates (same id) keep the lexicographically first source.
    Near duplicates: records are visited in order of source, and one that is a near duplicate of an already
    kept record is rejected in favour of it, so every rejected image names the kept one it copies, and no
    chain of small steps can merge two distant images. Why the first source and not, say, the largest copy:
    one rule for exact and near duplicates, predictable from a sorted listing, and an original whose name
    sorts first (as the demo world's do) keeps the ground truth recorded for it.
    Returns (kept records sorted by id, rejects).
    """
    if max_color_diff < 0:
        raise ValueError(f"max_color_diff must be >= 0, got {max_color_diff}")
    by_id: dict[str, list[ImageRecord]] = {}
    for rec in records:
        by_id.setdefault(rec.id, []).append(rec)
    rejects: list[Reject] = []
    unique: list[ImageRecord] = []
    for iid in sorted(by_id):
        group = sorted(by_id[iid], key=lambda r: r.source)
        unique.append(group[0])
        rejects += [Reject(r.source, "exact_duplicate", f"same bytes as {group[0].source} (id {iid})")
                    for r in group[1:]]  # fmt: skip

    def neighbours(index: HashIndex, recs: Sequence[ImageRecord]) -> list[list[tuple[int, int]]]:
        # per record, its (entry, distance) pairs nearest first; one vectorised pass for all records
        pq, pi, dist = index.query_many([r.phash for r in recs])
        lists: list[list[tuple[int, int]]] = [[] for _ in recs]
        for q, k, d in zip(pq.tolist(), pi.tolist(), dist.tolist(), strict=True):
            lists[q].append((k, d))
        return lists

    def first_match(
        pairs: list[tuple[int, int]],
        pool: Sequence[ImageRecord],
        rec: ImageRecord,
        allowed: Callable[[int], bool],
    ) -> tuple[int, float, ImageRecord] | None:
        for k, d in pairs:
            if allowed(k):
                c = color_distance(rec.layout, pool[k].layout)
                if c <= max_color_diff:
                    return d, c, pool[k]
        return None

    refs = sorted(references, key=lambda r: r.source)
    ref_pairs = neighbours(HashIndex([r.phash for r in refs], threshold), unique)
    candidates = []
    for rec, pairs in zip(unique, ref_pairs, strict=True):
        hit = first_match(pairs, refs, rec, lambda k: True)
        if hit is not None:
            d, c, ref = hit
            detail = f"of {ref.source}, hamming {d}, colour {c:.1f}"
            rejects.append(Reject(rec.source, "near_duplicate_of_reference", detail))
        else:
            candidates.append(rec)

    # one static index over all candidates; the greedy pass looks only at earlier, kept neighbours
    candidates.sort(key=lambda r: (r.source, r.id))
    cand_pairs = neighbours(HashIndex([r.phash for r in candidates], threshold), candidates)
    is_kept = np.zeros(len(candidates), dtype=bool)
    kept: list[ImageRecord] = []
    for i, rec in enumerate(candidates):
        hit = first_match(cand_pairs[i], candidates, rec, lambda k, i=i: k < i and is_kept[k])
        if hit is not None:
            d, c, other = hit
            detail = f"of {other.id} ({other.source}), hamming {d}, colour {c:.1f}"
            rejects.append(Reject(rec.source, "near_duplicate", detail))
        else:
            is_kept[i] = True
            kept.append(rec)
    kept.sort(key=lambda r: r.id)
    return kept, rejects


# ------------------------------------------------------------------------------------------------ tables
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
