"""What a crawl produces and why a candidate is refused: limits, accepted records, rejects and their
reasons."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
            raise ValueError(f"max_pixels and max_bytes must be >= 1, got {self.max_pixels}, {self.max_bytes}")


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
