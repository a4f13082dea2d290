"""Indexing throughput of crawl_index on a local folder, beside the raw decode limit measured in the same run.

A seeded folder of N JPEGs (64..256 px a side, photo-like scenes) is written to a temporary directory. Then:
- decode limit: read + ``decode_rgb`` of every file in one plain single-process loop (the baseline: what one
  core does with nothing but decoding; the page cache is warm for it and for the crawls);
- crawl: ``madseg.crawl.crawl`` end to end (listing, reading, sniffing, limits, full decode, EXIF, RGB, pHash,
  content id, exact + near dedup, tables), with ``decode_workers`` = 2 (the default) and = 1 (in-process).
The three run in turn ``--repeats`` times, interleaved: each ratio is the median of the ratios of runs made
next to each other, each throughput the median of its runs (a run of 3,000 images lasts about a second, too
short for a burst of another process on a shared machine not to move it). Also times the near-duplicate
search alone on ``--n-hashes`` random 64-bit hashes at the default threshold (multi-index hashing instead of
N^2/2 comparisons).
Writes metrics/bench/crawl.json (flat).

    python benchmarks/crawl.py [--n 3000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from madseg.config import CrawlParams
from madseg.crawl import ImageRecord, Limits, crawl, deduplicate
from madseg.io.atomic import write_json
from madseg.io.images import decode_rgb, encode_jpeg


def make_folder(root: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(64, 257, 2))
        bg = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        im = Image.fromarray(bg).resize((w, h), Image.BICUBIC)
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            x, y, s = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(8, 64))
            d.ellipse([x - s, y - s, x + s, y + s], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noisy = np.asarray(im, np.int16) + rng.integers(-8, 9, (h, w, 3))
        p = root / f"{i // 500:02d}" / f"img_{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_jpeg(np.clip(noisy, 0, 255).astype(np.uint8), quality=90))
        files.append(p)
    return files


def interleaved(repeats: int, fns: dict[str, Callable[[], object]]) -> tuple[dict[str, list[float]], dict]:
    """Every function of ``fns`` once per repeat, their order rotating by one from repeat to repeat, so that a
    change in the machine's load (other processes on its cores) falls on all of them alike.

    Returns the seconds of each run, name -> list of ``repeats``, and each function's last result.
    """
    names = list(fns)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    out: dict = {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            out[name] = fns[name]()
            seconds[name].append(time.perf_counter() - t0)
    return seconds, out


def median_ratio(num: list[float], den: list[float]) -> float:
    """The median over repeats of ``num[r] / den[r]``: each ratio from runs made next to each other."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def near_dup_search_seconds(n: int, threshold: int, seed: int) -> float:
    hashes = np.random.default_rng(seed).integers(0, 2**63, n, dtype=np.int64) * 2 + 1  # all 64 bits used
    records = [ImageRecord(f"{i:016x}", f"s{i}", "", 64, 64, int(h) % 2**64, 1000) for i, h in enumerate(hashes)]
    t0 = time.perf_counter()
    deduplicate(records, threshold=threshold)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-hashes", type=int, default=20_000)
    ap.add_argument("--out", default="metrics/bench/crawl.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # a progress bar would only add noise to the timing

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_folder(root, args.n, args.seed)
        total_bytes = sum(p.stat().st_size for p in files)

        def decode_loop() -> int:
            return sum(decode_rgb(p.read_bytes(), str(p)).shape[0] > 0 for p in files)

        limits = Limits(min_side=32)
        seconds, last = interleaved(
            args.repeats,
            {
                "decode": decode_loop,
                "crawl2": lambda: crawl(folders=[root], limits=limits, decode_workers=2),
                "crawl1": lambda: crawl(folders=[root], limits=limits, decode_workers=1),
            },
        )
    decoded, res2, res1 = last["decode"], last["crawl2"], last["crawl1"]
    t_decode, t_crawl2, t_crawl1 = (statistics.median(seconds[k]) for k in ("decode", "crawl2", "crawl1"))
    threshold = CrawlParams().near_dup_threshold
    assert decoded == args.n
    assert res1.index.equals(res2.index) and res1.rejects.equals(res2.rejects)  # same tables either way
    indexed, rejected = len(res2.index), len(res2.rejects)
    assert indexed + rejected == args.n

    out = {
        "n_images": args.n,
        "mean_kbytes": round(total_bytes / args.n / 1024, 2),
        "decode_workers": 2,
        "images_per_s": round(args.n / t_crawl2, 1),
        "images_per_s_in_process": round(args.n / t_crawl1, 1),
        "decode_limit_images_per_s": round(args.n / t_decode, 1),
        "ratio_to_decode_limit": round(median_ratio(seconds["decode"], seconds["crawl2"]), 3),
        "ratio_in_process_to_decode_limit": round(median_ratio(seconds["decode"], seconds["crawl1"]), 3),
        "speedup_process_pool": round(median_ratio(seconds["crawl1"], seconds["crawl2"]), 3),
        "repeats": args.repeats,
        "near_dup_search_n": args.n_hashes,
        "near_dup_threshold": threshold,
        "near_dup_search_s": round(near_dup_search_seconds(args.n_hashes, threshold, args.seed), 2),
        "indexed": indexed,
        "rejected": rejected,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    for k, v in out.items():
        print(f"{k:34s} {v}")
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
