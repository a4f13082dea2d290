"""Exact and near-duplicates: collapse to the lexicographically first source, exclude copies of reference
sets."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from madseg.crawl.hashing import color_distance
from madseg.crawl.near_search import near_pairs
from madseg.crawl.records import ImageRecord, Reject
from madseg.crawl.spool import RecordSpool


def deduplicate(
    records: Iterable[ImageRecord],
    *,
    threshold: int,
    max_color_diff: float = 5.0,
    references: Iterable[ImageRecord] = (),
) -> tuple[list[ImageRecord], list[Reject]]:
    """Collapse exact and near duplicates of in-memory records (see :func:`deduplicate_spool`).

    Returns (kept records sorted by id, rejects sorted by (source, reason, detail)).
    """
    spool = RecordSpool()
    try:
        spool.add(records)
        deduplicate_spool(spool, threshold=threshold, max_color_diff=max_color_diff, references=references)
        return spool.records(), spool.rejects()
    finally:
        spool.close()


def deduplicate_spool(
    spool: RecordSpool,
    *,
    threshold: int,
    max_color_diff: float = 5.0,
    references: Iterable[ImageRecord] = (),
    workers: int = 2,
) -> None:
    """Move the spool's exact and near duplicates from its records to its rejects.

    Two images are near duplicates when their pHashes differ in at most ``threshold`` bits AND their colour
    layouts differ by at most ``max_color_diff`` (mean absolute, 0..255): the hash finds candidates fast
    (an exact multi-index join, :func:`near_pairs`), the layout vetoes different scenes whose luminance
    happens to hash alike. A record that is a near duplicate of a ``references`` image (e.g. S0/T0) is
    rejected as ``near_duplicate_of_reference``. Exact duplicates (same id) keep the lexicographically first
    source. Near duplicates: records are visited in order of source, and one that is a near duplicate of an
    already kept record is rejected in favour of it, so every rejected image names the kept one it copies, and
    no chain of small steps can merge two distant images. Why the first source and not, say, the largest copy:
    one rule for exact and near duplicates, predictable from a sorted listing, and an original whose name
    sorts first (as the demo world's do) keeps the ground truth recorded for it.
    """
    if max_color_diff < 0:
        raise ValueError(f"max_color_diff must be >= 0, got {max_color_diff}")
    exact = list(spool.exact_duplicates())
    spool.reject(
        [row for row, *_ in exact],
        [Reject(src, "exact_duplicate", f"same bytes as {first} (id {iid})") for _, src, iid, first in exact],
    )

    refs = sorted(references, key=lambda r: r.source)
    rowids, hashes = spool.hashes()
    if refs:
        ref_hashes = np.array([r.phash for r in refs], dtype=np.uint64)
        pos, k, dist = near_pairs(hashes, threshold, ref_hashes, workers=workers)
        gone, rejects = [], []
        for i, ks, ds in _grouped(pos, k, dist):
            rec = spool.record(rowids[i])
            hit = _first_confirmed(rec, ((refs[k], d) for k, d in zip(ks, ds, strict=True)), max_color_diff)
            if hit is not None:
                ref, d, c = hit
                gone.append(i)
                rejects.append(
                    Reject(
                        rec.source,
                        "near_duplicate_of_reference",
                        f"of {ref.source}, hamming {d}, colour {c:.1f}",
                    )
                )
        spool.reject(rowids[gone], rejects)
        keep = np.ones(len(rowids), dtype=bool)
        keep[gone] = False
        rowids, hashes = rowids[keep], hashes[keep]

    # pairs (i < j) in source order; the greedy pass visits j in order and looks only at earlier, kept i
    first, second, dist = near_pairs(hashes, threshold, workers=workers)
    is_kept = np.ones(len(rowids), dtype=bool)
    gone, rejects = [], []
    for j, earlier, ds in _grouped(second, first, dist):
        rec = spool.record(rowids[j])
        kept = ((spool.record(rowids[i]), d) for i, d in zip(earlier, ds, strict=True) if is_kept[i])
        hit = _first_confirmed(rec, kept, max_color_diff)
        if hit is not None:
            other, d, c = hit
            is_kept[j] = False
            gone.append(j)
            rejects.append(
                Reject(
                    rec.source,
                    "near_duplicate",
                    f"of {other.id} ({other.source}), hamming {d}, colour {c:.1f}",
                )
            )
    spool.reject(rowids[gone], rejects)


def _grouped(query: np.ndarray, other: np.ndarray, dist: np.ndarray) -> Iterable[tuple[int, list[int], list[int]]]:
    """Per query (ascending), its neighbours nearest first (ties by position): (query, others, distances)."""
    order = np.lexsort((other, dist, query))
    query, other, dist = query[order], other[order], dist[order]
    bounds = np.flatnonzero(np.diff(query)) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(query)], strict=True):
        if hi > lo:
            yield int(query[lo]), other[lo:hi].tolist(), dist[lo:hi].tolist()


def _first_confirmed(
    rec: ImageRecord, neighbours: Iterable[tuple[ImageRecord, int]], max_color_diff: float
) -> tuple[ImageRecord, int, float] | None:
    """The first neighbour whose colour layout confirms the hash: (neighbour, hamming, colour distance)."""
    for other, d in neighbours:
        c = color_distance(rec.layout, other.layout)
        if c <= max_color_diff:
            return other, d, c
    return None
