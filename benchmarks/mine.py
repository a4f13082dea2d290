"""Benchmark of MAD mining on a synthetic prediction store (by default 5,120 maps of 500x375, 6 models).

Prints and writes metrics/bench/mine.json:
- mine_s: streaming MAD mining over the whole store (a fresh subprocess, so its peak RSS is its own);
- read_floor_s: reading (and checksum-verifying) every shard of every model once, nothing else: the I/O floor;
- ratio_to_read_floor: the median over ``--repeats`` interleaved pairs of mine_s / read_floor_s (mine_s and
  read_floor_s are the medians of their runs);
- speedup_vs_naive: a naive reference (the store read once + one bincount confusion matrix per image pair and
  per-image areas in a Python loop) measured on a subsample and scaled to the pool, divided by mine_s;
- speedup_vs_paper_code: the same with the paper's released code's per-pair ``sklearn.metrics.confusion_matrix``;
- peak_mem_mb_small / peak_mem_mb_large: peak RSS of the mining subprocess over the first ``--small`` images
  and over all of them (bounded memory: they should be about equal).

The store is made fast: a few hundred base maps with blobs, each image a base map, each competitor the
target's map shifted by up to two pixels (models disagree along every boundary) with a random blob of another
base map pasted in for some images.

    .venv/bin/python benchmarks/mine.py [--images 5120] [--models 6] [--height 375 --width 500] [--small 1024]
    .venv/bin/python benchmarks/mine.py --images 100000 --height 32 --width 32 --small 10000  # many small maps
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from madseg.io.atomic import write_json
from madseg.io.store import PredictionStore, Shard
from madseg.labels import make_class_list
from madseg.metrics import confusion_matrix, mean_iou
from madseg.mining import area_bands, mine_mad

ROOT = Path(__file__).resolve().parents[1]
CLASSES = make_class_list("demo")
K = CLASSES.num_classes


def base_maps(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """(n, height, width) uint8 maps with 1-3 discs/rectangles of random foreground classes."""
    yy, xx = np.mgrid[:height, :width]
    out = np.zeros((n, height, width), np.uint8)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cls = rng.integers(1, K)
            cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
            r = int(rng.integers(2, max(3, min(height, width) // 3)))
            shape = (
                (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                if rng.random() < 0.5
                else ((abs(yy - cy) <= r) & (abs(xx - cx) <= r))
            )
            out[i][shape] = cls
    return out


def build_store(
    root: Path, n_images: int, n_models: int, height: int, width: int, shard_size: int, seed: int = 0
) -> list[str]:
    """Write ``n_models`` stores (target + competitors c1..) over ``n_images`` ids; return the names."""
    rng = np.random.default_rng(seed)
    bases = base_maps(rng, 512 if height * width <= 4096 else 64, height, width)
    blobs = base_maps(rng, 64 if height * width <= 4096 else 16, height, width) > 0  # paste masks
    ids = [f"{v:016x}" for v in np.unique(rng.integers(0, 2**63, n_images + 100))[:n_images]]
    names = ["target", *[f"c{j}" for j in range(1, n_models)]]
    stores = {m: PredictionStore(root / m) for m in names}
    for s in range(-(-n_images // shard_size)):
        sl = slice(s * shard_size, min((s + 1) * shard_size, n_images))
        n = sl.stop - sl.start
        target = bases[rng.integers(0, len(bases), n)]
        for m in names:
            if m == "target":
                maps = target
            else:
                changed = rng.random(n) < 0.4
                paste = blobs[rng.integers(0, len(blobs), n)] & changed[:, None, None]
                maps = np.where(paste, bases[rng.integers(0, len(bases), n)], target)
                if height * width > 4096:
                    shifts = rng.integers(-2, 3, (n, 2))
                    maps = np.stack([np.roll(m, tuple(d), (0, 1)) for m, d in zip(maps, shifts, strict=True)])
            # approximate area fractions (subsampled): mining computes its own from the maps
            sub = maps[:, ::4, ::4]
            area = np.stack([np.bincount(x.ravel(), minlength=K) for x in sub]) / sub[0].size
            entropy = rng.random(n).astype(np.float32)
            shard = Shard(list(ids[sl]), list(maps), area.astype(np.float32), entropy, np.ones(n, np.float32))
            stores[m].write_shard(s, shard, "bench")
    for m in names:
        stores[m].finalize(model=m, classes=CLASSES.names, shard_size=shard_size, ids=ids, fingerprint="bench")
    return names


def read_floor(root: Path, names: list[str]) -> float:
    t0 = time.perf_counter()
    for m in names:
        for _ in PredictionStore(root / m).iter_shards():
            pass
    return time.perf_counter() - t0


def sklearn_confusion(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The paper's released code: one ``sklearn.metrics.confusion_matrix`` per image pair."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    return sk_confusion(a.ravel(), b.ravel(), labels=list(range(k)))


def naive_per_image(root: Path, names: list[str], images: int, confusion=confusion_matrix) -> tuple[float, int]:
    """The per-image loop on the first ``images`` images: per image and competitor, one ``confusion`` matrix and
    its mIoU, per-image areas, then plain sorted lists per group. Returns (seconds for the compute, images)."""
    target = PredictionStore(root / "target").read_shard(0)
    comps = {m: PredictionStore(root / m).read_shard(0) for m in names[1:]}
    t0 = time.perf_counter()
    groups: dict[tuple[str, int, str], list[tuple[float, str]]] = {}
    n = 0
    for i, image in enumerate(target.ids[:images]):
        n += 1
        a = target.maps[i]
        a_area = np.bincount(a.ravel(), minlength=K)[:K] / a.size
        for m in names[1:]:
            b = comps[m].maps[i]
            d = 1.0 - mean_iou(confusion(a, b, K))
            b_area = np.bincount(b.ravel(), minlength=K)[:K] / b.size
            for k in range(1, K):
                if a_area[k] > 0:
                    groups.setdefault((m, k, "t"), []).append((-d, image))
                if b_area[k] > 0:
                    groups.setdefault((m, k, "c"), []).append((-d, image))
    for v in groups.values():
        v.sort()
    return time.perf_counter() - t0, n


def child(store: Path, n_shards: int) -> None:
    """Mine the first ``n_shards`` shards; print seconds, peak RSS (MB) and rows as JSON."""
    from itertools import islice

    names = sorted(p.name for p in store.iterdir() if (p / "manifest.json").exists())
    names.remove("target")
    # quartile bands from the target's first shard stand in for S0's ground truth
    bands = area_bands(PredictionStore(store / "target").read_shard(0).maps, CLASSES)
    t0 = time.perf_counter()
    cands = mine_mad(
        islice(PredictionStore(store / "target").iter_shards(), n_shards),
        {m: islice(PredictionStore(store / m).iter_shards(), n_shards) for m in names},
        bands,
        CLASSES,
        n3=6,
    )
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"mine_s": dt, "peak_mb": peak, "rows": len(cands), "M": int(cands["image_id"].nunique())}))


def run_child(store: Path, n_shards: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(store), "--child-shards", str(n_shards)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5120)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--small", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-images", type=int, default=200)
    ap.add_argument("--paper-images", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "mine.json")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-shards", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.child_shards)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="madseg-bench-mine-"))
    try:
        t0 = time.perf_counter()
        names = build_store(work, args.images, args.models, args.height, args.width, args.shard_size)
        build_s = time.perf_counter() - t0
        n_shards = -(-args.images // args.shard_size)
        print(
            f"store: {args.images} images x {len(names)} models, {args.height}x{args.width} maps, "
            f"{n_shards} shards each, built in {build_s:.1f} s"
        )
        # the floor and the mining in turn, --repeats times (the order swapped each time): a burst of another
        # process on a shared machine slows one pair, whose ratio the median then leaves out
        floors, runs = [], []
        for r in range(args.repeats):
            if r % 2 == 0:
                floors.append(read_floor(work, names))
                runs.append(run_child(work, n_shards))
            else:
                runs.append(run_child(work, n_shards))
                floors.append(read_floor(work, names))
        floor = statistics.median(floors)
        ratio = statistics.median(run["mine_s"] / f for run, f in zip(runs, floors, strict=True))
        # the peak RSS of the first run, as the small run's (one each): they compare like with like
        large = {**runs[0], "mine_s": statistics.median(run["mine_s"] for run in runs)}
        print(f"read floor (every shard of every model once): {floor:.2f} s (median of {args.repeats})")
        small_shards = max(1, args.small // args.shard_size)
        small = run_child(work, small_shards)
        print(
            f"mining: {large['mine_s']:.2f} s ({ratio:.2f}x the read floor), "
            f"{large['rows']} candidate rows, |M| = {large['M']}"
        )
        scaled = {}
        for key, confusion, images in (
            ("naive", confusion_matrix, args.naive_images),
            ("paper_code", sklearn_confusion, args.paper_images),
        ):
            seconds, n = naive_per_image(work, names, images, confusion)
            scaled[key] = floor + seconds * args.images / n
            print(
                f"{key} loop: {seconds:.2f} s for {n} images -> {scaled[key]:.1f} s for the pool "
                f"(with the read floor); speedup {scaled[key] / large['mine_s']:.1f}x"
            )
        print(
            f"peak RSS of mining: {small['peak_mb']:.0f} MB over {small_shards * args.shard_size} images, "
            f"{large['peak_mb']:.0f} MB over {args.images}"
        )
        result = {
            "images": args.images,
            "models": len(names),
            "map_height": args.height,
            "map_width": args.width,
            "shard_size": args.shard_size,
            "mine_s": round(large["mine_s"], 3),
            "read_floor_s": round(floor, 3),
            "ratio_to_read_floor": round(ratio, 3),
            "repeats": args.repeats,
            "naive_s_scaled": round(scaled["naive"], 3),
            "naive_subsample_images": min(args.naive_images, args.shard_size),
            "speedup_vs_naive": round(scaled["naive"] / large["mine_s"], 2),
            "paper_code_s_scaled": round(scaled["paper_code"], 3),
            "paper_code_subsample_images": min(args.paper_images, args.shard_size),
            "speedup_vs_paper_code": round(scaled["paper_code"] / large["mine_s"], 2),
            "peak_mem_mb_small": round(small["peak_mb"], 1),
            "peak_mem_mb_large": round(large["peak_mb"], 1),
            "small_images": small_shards * args.shard_size,
            "store_build_s": round(build_s, 2),
        }
        write_json(args.out, result)
        print(json.dumps(result, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
