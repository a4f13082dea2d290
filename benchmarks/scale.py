"""Scale: the crawl index, the prediction store and mining at 10^5 and 10^6 images, and Ray against local
inference on this machine.

Each step runs in a fresh subprocess (so its peak RSS is its own) importing what its stage imports:
- crawl_index: :func:`madseg.crawl.crawl` over a folder of generated 32x32 PNGs (a thousand per subfolder) with
  the default near-duplicate threshold, the index and rejects written as the stage writes them;
- store: writing a one-model store of 16x16 maps shard by shard over an id column (as the infer stage holds the
  pool index), its manifest, then reading its per-image table (``PredictionStore.stats``);
- mine: MAD mining over six such stores (the stores are built beforehand, untimed).

Keys: ``<step>_time_s_<size>`` and ``<step>_peak_mem_mb_<size>`` at both sizes, their ratios
``<step>_time_ratio`` (goal <= 11 for 10x the images) and ``<step>_mem_ratio`` (goal <= 1.25), and
``ray_over_local``: images/s of ``infer.backend: ray`` (a local Ray already started, as a cluster would be)
over the local backend on the same 500x375 photos (goal >= 0.8), the median of ``--ray-repeats`` interleaved
pairs. Writes metrics/bench/scale.json.

    .venv/bin/python benchmarks/scale.py [--sizes 100000 1000000] [--ray-images 320] [--skip crawl ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _label(n: int) -> str:
    return f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else str(n)


# --------------------------------------------------------------------------------------------- the steps
def step_crawl(work: Path) -> None:
    from madseg.config import Params  # noqa: F401  (the stage's imports)
    from madseg.crawl import crawl

    with crawl(folders=[work / "images"], decode_workers=2) as result:
        result.write(work / "pool.csv", work / "rejects.csv")


def step_store(work: Path, n: int) -> None:
    import pandas as pd

    from madseg.config import Params  # noqa: F401
    from madseg.io.store import PredictionStore, Shard

    rng = np.random.default_rng(0)
    # the id column as the infer stage holds it (the pool index read from pool.csv)
    ids = pd.concat(
        [pd.Series([f"{v:016x}" for v in range(a, min(a + 65536, n))], dtype="str") for a in range(0, n, 65536)],
        ignore_index=True,
    )
    store = PredictionStore(work / "store")
    size, k = 1024, 7
    for s in range(-(-n // size)):
        part = ids.iloc[s * size : (s + 1) * size].tolist()
        maps = rng.integers(0, k, (len(part), 4, 4), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
        area = np.stack([np.bincount(m.ravel(), minlength=k) for m in maps]).astype(np.float32) / 256
        store.write_shard(
            s,
            Shard(part, list(maps), area, rng.random(len(part)).astype(np.float32), np.ones(len(part), np.float32)),
            "bench",
        )
    store.finalize(model="m", classes=[str(c) for c in range(k)], shard_size=size, ids=ids, fingerprint="bench")
    assert len(store.stats()) == n  # the per-image table


def step_mine(work: Path) -> None:
    from mine import child

    child(work / "stores", 10**9)


STEPS = {"crawl": step_crawl, "store": step_store, "mine": step_mine}


def run_step(step: str, work: Path, n: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, "--work", str(work), "--n", str(n)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"step {step} at {n}: {out.stderr[-3000:]}")
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    return {"time_s": round(seconds, 2), "peak_mem_mb": round(peak, 1)}


# ------------------------------------------------------------------------------------------------ inputs
def make_images(folder: Path, n: int) -> None:
    """``n`` distinct 32x32 PNGs of noise, a thousand per subfolder."""
    import io

    from PIL import Image

    rng = np.random.default_rng(1)
    for start in range(0, n, 1000):
        sub = folder / f"{start // 1000:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (min(1000, n - start), 8, 8, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
        for i, p in enumerate(pixels):
            buf = io.BytesIO()
            Image.fromarray(p).save(buf, format="PNG", compress_level=1)
            (sub / f"{start + i:07d}.png").write_bytes(buf.getvalue())


def ray_over_local(n_images: int, repeats: int) -> dict:
    """Images/s of the Ray backend (a local Ray already started) and of the local backend on the same photos.

    The two run in turn ``repeats`` times (the order swapped each time), each into a fresh store; the ratio is
    the median of the ratios of neighbouring runs, the throughputs the medians of their runs.
    """
    import dataclasses

    import pandas as pd
    import ray
    import torch

    from madseg.backends import predict_model
    from madseg.config import load_params
    from madseg.io.images import encode_jpeg, image_id
    from madseg.io.store import PredictionStore
    from madseg.models.checkpoint import make_meta, save_checkpoint
    from madseg.models.input_policy import InputPolicy
    from madseg.models.registry import build_model

    params = load_params(ROOT / "params.yaml")
    classes = params.dataset.class_list()
    tmp = Path(tempfile.mkdtemp(prefix="madseg-bench-ray-"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_images):
        data = encode_jpeg(rng.integers(0, 255, (15, 20, 3), dtype=np.uint8).repeat(25, 0).repeat(25, 1))
        path = tmp / "pool" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"id": image_id(data), "path": str(path)})
    index = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    spec = params.models.target
    torch.manual_seed(0)
    policy = InputPolicy(kind="shorter_side", size=(384, 384), shorter_side=384, max_side=1024)
    meta = make_meta(
        arch=spec.arch,
        kwargs=spec.kwargs,
        classes=list(classes.names),
        input_size=384,
        mean=params.models.mean,
        std=params.models.std,
        input_policy=policy,
    )
    save_checkpoint(tmp / "model.pt", build_model(spec.arch, classes.num_classes, **spec.kwargs), meta, provenance={})
    torch.set_num_threads(params.infer.threads)
    infer = dataclasses.replace(params.infer, batch_size=8, shard_size=64)
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        for r in range(repeats):
            for backend in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                t0 = time.perf_counter()
                predict_model(
                    tmp / "model.pt",
                    index,
                    PredictionStore(tmp / f"{backend}_{r}"),
                    model_name="target",
                    classes=classes,
                    infer_params=dataclasses.replace(infer, backend=backend),
                    device="cpu",
                    ray_params=params.ray,
                )
                seconds[backend].append(time.perf_counter() - t0)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = statistics.median(a / b for a, b in zip(seconds["local"], seconds["ray"], strict=True))
    return {
        "local_images_per_s": round(n_images / statistics.median(seconds["local"]), 2),
        "ray_images_per_s": round(n_images / statistics.median(seconds["ray"]), 2),
        "ray_over_local": round(ratio, 3),
        "ray_images": n_images,
        "ray_repeats": repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000])
    ap.add_argument("--ray-images", type=int, default=320)
    ap.add_argument("--ray-repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=[*STEPS, "ray"])
    ap.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "scale.json")
    ap.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        logging.basicConfig(level=logging.WARNING)
        STEPS[args.step](args.work, *([args.n] if args.step == "store" else []))
        print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    from mine import build_store

    # a partial run (--skip) keeps the skipped steps' figures from the last run: every ratio is within one step
    result: dict = json.loads(args.out.read_text()) if args.skip and args.out.exists() else {}
    plan = {step: args.sizes for step in STEPS if step not in args.skip}
    for n in sorted({n for sizes in plan.values() for n in sizes}):
        work = Path(tempfile.mkdtemp(prefix=f"madseg-bench-scale-{n}-"))
        try:
            steps = [step for step, sizes in plan.items() if n in sizes]
            if "crawl" in steps:
                t0 = time.perf_counter()
                make_images(work / "images", n)
                print(f"{n}: {n} PNGs generated in {time.perf_counter() - t0:.0f} s", flush=True)
            if "mine" in steps:
                build_store(work / "stores", n, 6, 16, 16, 1024)
            for step in steps:
                r = run_step(step, work, n)
                for key, value in r.items():
                    result[f"{step}_{key}_{_label(n)}"] = value
                print(f"{n}: {step} {r['time_s']} s, peak {r['peak_mem_mb']} MB", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for step, (small, large) in plan.items():
        s, g = _label(small), _label(large)
        result[f"{step}_time_ratio"] = round(result[f"{step}_time_s_{g}"] / result[f"{step}_time_s_{s}"], 2)
        result[f"{step}_mem_ratio"] = round(result[f"{step}_peak_mem_mb_{g}"] / result[f"{step}_peak_mem_mb_{s}"], 3)
    if "ray" not in args.skip:
        result.update(ray_over_local(args.ray_images, args.ray_repeats))
    from madseg.io.atomic import write_json

    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
