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
:data:`REASONS`. Near-duplicate search is an exact multi-index-hashing join (4 bands of 16 bits) in compiled
code, and the crawl's working set is spooled to a scratch SQLite file, so a pool of 10^6 images fits in little
memory.

The package, one module per concept: :mod:`~madseg.crawl.records` (limits, records, rejects and their
reasons), :mod:`~madseg.crawl.hashing` (perceptual hashes), :mod:`~madseg.crawl.near_search` (all pairs within
a Hamming threshold), :mod:`~madseg.crawl.spool` (the working set on disk), :mod:`~madseg.crawl.inspection`
(one candidate's checks), :mod:`~madseg.crawl.sources` (local folders, URL fetching),
:mod:`~madseg.crawl.dedup` and :mod:`~madseg.crawl.driver` (the whole crawl). The names below are its public
interface.
"""

from madseg.crawl.dedup import deduplicate, deduplicate_spool
from madseg.crawl.driver import CrawlResult, crawl
from madseg.crawl.hashing import color_distance, color_layout, hamming, phash, phash_hex
from madseg.crawl.inspection import inspect_bytes, inspect_file, inspect_files, iter_inspect, read_candidate
from madseg.crawl.near_search import near_pairs
from madseg.crawl.records import ACCEPTED_FORMATS, REASONS, ImageRecord, Limits, Reject
from madseg.crawl.sources import (
    FetchConfig,
    Journal,
    fetch_urls,
    iter_local,
    iter_url_list,
    list_local,
    store_path,
)
from madseg.crawl.spool import INDEX_COLUMNS, REJECT_COLUMNS, RecordSpool

__all__ = [
    "ACCEPTED_FORMATS",
    "INDEX_COLUMNS",
    "REASONS",
    "REJECT_COLUMNS",
    "CrawlResult",
    "FetchConfig",
    "ImageRecord",
    "Journal",
    "Limits",
    "RecordSpool",
    "Reject",
    "color_distance",
    "color_layout",
    "crawl",
    "deduplicate",
    "deduplicate_spool",
    "fetch_urls",
    "hamming",
    "inspect_bytes",
    "inspect_file",
    "inspect_files",
    "iter_inspect",
    "iter_local",
    "iter_url_list",
    "list_local",
    "near_pairs",
    "phash",
    "phash_hex",
    "read_candidate",
    "store_path",
]
