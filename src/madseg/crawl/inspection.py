"""One candidate's checks: read the bytes, sniff the format, guard the header, decode fully, hash."""

from __future__ import annotations

import collections
import io
import itertools
import multiprocessing
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from madseg.crawl.hashing import _layout_of_thumb, _phash_of_thumb, _thumb
from madseg.crawl.records import ACCEPTED_FORMATS, ImageRecord, Limits, Reject, _Rejected
from madseg.io.images import image_id, to_rgb_image
from madseg.workers import stop_with_parent

_MIN_POOL_ITEMS = 256  # below this a process pool costs more to start than it saves


def open_header(data: bytes) -> Image.Image:
    """Open image bytes lazily (the header only) if their magic bytes name an accepted format; else _Rejected
    with the reason (the extension and the content-type are never trusted)."""
    if not data:
        raise _Rejected("empty_file", "0 bytes")
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise _Rejected("not_an_image", f"magic bytes {data[:8].hex()}") from None
    except Image.DecompressionBombError as e:
        raise _Rejected("decompression_bomb", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _Rejected("corrupt", f"header: {e}") from None


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
    if len(data) > limits.max_bytes:
        raise _Rejected("too_many_bytes", f"{len(data)} bytes > max_bytes {limits.max_bytes}")
    with open_header(data) as im:
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


def inspect_files(
    items: Sequence[tuple[str, str]], limits: Limits, *, workers: int = 2, desc: str = "decode"
) -> list[ImageRecord | Reject]:
    """Inspect (source, path) pairs, in a pool of ``workers`` processes when that pays; input order kept."""
    return [r for batch in iter_inspect(items, limits, workers=workers, total=len(items), desc=desc) for r in batch]


def iter_inspect(
    items: Iterable[tuple[str, str]], limits: Limits, *, workers: int = 2, total: int, desc: str = "decode"
) -> Iterator[list[ImageRecord | Reject]]:
    """Inspect a stream of ``total`` (source, path) pairs; yield the results in input order, in batches.

    At most 4 batches per worker are in flight, so a pool of 10^6 images is never held in memory.
    """
    bar = tqdm(total=total, desc=desc, unit="img", mininterval=1.0, disable=None)
    batch = max(8, min(256, total // (max(workers, 1) * 8)))
    stream = iter(items)
    tasks = iter(lambda: [(s, p, limits) for s, p in itertools.islice(stream, batch)], [])
    with bar:
        if workers <= 1 or total < _MIN_POOL_ITEMS:
            for chunk in tasks:
                yield _inspect_batch(chunk)
                bar.update(len(chunk))
            return
        # fork: workers inherit the imported modules (no re-import, ~ms start). This runs after the download
        # threads have ended, and the workers take no lock of the parent's (no logging, no tqdm)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=stop_with_parent) as ex:
            pending = collections.deque(ex.submit(_inspect_batch, c) for c in itertools.islice(tasks, 4 * workers))
            while pending:
                results = pending.popleft().result()
                nxt = next(tasks, None)
                if nxt is not None:
                    pending.append(ex.submit(_inspect_batch, nxt))
                yield results
                bar.update(len(results))


def _inspect_batch(tasks: list[tuple[str, str, Limits]]) -> list[ImageRecord | Reject]:
    return [inspect_file(*task) for task in tasks]
