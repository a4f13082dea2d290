"""Exact and near-duplicates: collapse to the lexicographically first source, exclude copies of reference sets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from madseg.crawl.hashing import HashIndex, color_distance
from madseg.crawl.records import ImageRecord, Reject


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
    unique, rejects = _collapse_exact(records)

    refs = sorted(references, key=lambda r: r.source)
    ref_pairs = _neighbours(HashIndex([r.phash for r in refs], threshold), unique)
    candidates = []
    for rec, pairs in zip(unique, ref_pairs, strict=True):
        hit = _first_match(pairs, refs, rec, lambda k: True, max_color_diff)
        if hit is not None:
            d, c, ref = hit
            detail = f"of {ref.source}, hamming {d}, colour {c:.1f}"
            rejects.append(Reject(rec.source, "near_duplicate_of_reference", detail))
        else:
            candidates.append(rec)

    # one static index over all candidates; the greedy pass looks only at earlier, kept neighbours
    candidates.sort(key=lambda r: (r.source, r.id))
    cand_pairs = _neighbours(HashIndex([r.phash for r in candidates], threshold), candidates)
    is_kept = np.zeros(len(candidates), dtype=bool)
    kept: list[ImageRecord] = []
    for i, rec in enumerate(candidates):
        hit = _first_match(
            cand_pairs[i], candidates, rec, lambda k, i=i: k < i and is_kept[k], max_color_diff
        )
        if hit is not None:
            d, c, other = hit
            detail = f"of {other.id} ({other.source}), hamming {d}, colour {c:.1f}"
            rejects.append(Reject(rec.source, "near_duplicate", detail))
        else:
            is_kept[i] = True
            kept.append(rec)
    kept.sort(key=lambda r: r.id)
    return kept, rejects


def _collapse_exact(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], list[Reject]]:
    """One record per id (its lexicographically first source), sorted by id; the others as rejects."""
    by_id: dict[str, list[ImageRecord]] = {}
    for rec in records:
        by_id.setdefault(rec.id, []).append(rec)
    unique, rejects = [], []
    for iid in sorted(by_id):
        group = sorted(by_id[iid], key=lambda r: r.source)
        unique.append(group[0])
        rejects += [Reject(r.source, "exact_duplicate", f"same bytes as {group[0].source} (id {iid})")
                    for r in group[1:]]  # fmt: skip
    return unique, rejects


def _neighbours(index: HashIndex, recs: Sequence[ImageRecord]) -> list[list[tuple[int, int]]]:
    """Per record, its (entry, Hamming distance) pairs in ``index``, nearest first; one vectorised pass."""
    pq, pi, dist = index.query_many([r.phash for r in recs])
    lists: list[list[tuple[int, int]]] = [[] for _ in recs]
    for q, k, d in zip(pq.tolist(), pi.tolist(), dist.tolist(), strict=True):
        lists[q].append((k, d))
    return lists


def _first_match(
    pairs: list[tuple[int, int]],
    pool: Sequence[ImageRecord],
    rec: ImageRecord,
    allowed: Callable[[int], bool],
    max_color_diff: float,
) -> tuple[int, float, ImageRecord] | None:
    """The nearest allowed neighbour whose colour layout confirms the hash: (hamming, colour distance, record)."""
    for k, d in pairs:
        if allowed(k):
            c = color_distance(rec.layout, pool[k].layout)
            if c <= max_color_diff:
                return d, c, pool[k]
    return None
