"""Pool inference throughput: the end-to-end pipeline (decode -> stored maps + statistics) against the bare
forward pass of the same model, batch and thread count on preloaded tensors, measured in the same run:
``--repeats`` interleaved pairs, each giving a ratio, and every figure is the median over the pairs (a
single pair of 160 photos read anywhere from 0.73 to 0.92 on a shared 2-core machine).

Twice: on the demo's 64-px images (resize policy), and on photo-sized images of 500x375 (generated content) with
the shorter-side policy at ``--realistic-side`` px, maps coming back at 500x375 (``*_realistic`` keys).
Also the prediction store's read throughput. Writes metrics/bench/infer.json.

    python benchmarks/infer.py [--images 2000] [--realistic-images 160] [--realistic-side 384] [--batch 64]
                               [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from madseg.config import load_params
from madseg.inference import fingerprint, predict_pool
from madseg.io.atomic import write_bytes, write_json
from madseg.io.images import encode_jpeg, image_id, read_rgb
from madseg.io.store import PredictionStore
from madseg.models.checkpoint import make_meta, save_checkpoint
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import load_predictor
from madseg.models.registry import build_model
from madseg.world.generate import render_image

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.infer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--realistic-images", type=int, default=160)
    parser.add_argument("--realistic-side", type=int, default=384)
    parser.add_argument("--realistic-batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "infer.json")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved forward/pipeline pairs per ratio")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    classes = params.dataset.class_list()
    spec, m = params.models.target, params.models
    tmp = Path(tempfile.mkdtemp(prefix="madseg-bench-infer-"))

    # a pool-like folder of demo-world images, and an index over it
    rows = []
    world = params.world
    for i in range(args.images):
        kind = ("normal", "corner", "ood")[i % 3]
        factors = ("blur",) if kind == "corner" else ()
        item = render_image(world, "pool", 10**6 + i, kind, factors)
        path = tmp / "pool" / f"{i:06d}.jpg"
        write_bytes(path, item.jpeg)
        rows.append({"id": image_id(item.jpeg), "path": str(path)})
    index = pd.DataFrame(rows).drop_duplicates("id").sort_values("id").reset_index(drop=True)

    small = _measure(
        index,
        tmp / "small",
        spec,
        classes,
        params,
        m.input_size,
        args.batch,
        args.workers,
        m.input_policy.policy(m.input_size),
        args.repeats,
    )

    # photo-sized images (the same generated content at 500x375) at the shorter-side policy
    rows = []
    for i in range(args.realistic_images):
        item = render_image(world, "pool", 2 * 10**6 + i, ("normal", "corner")[i % 2], ())
        photo = np.asarray(Image.open(io.BytesIO(item.jpeg)).convert("RGB").resize((500, 375), Image.BILINEAR))
        data = encode_jpeg(photo, quality=90)
        path = tmp / "photos" / f"{i:06d}.jpg"
        write_bytes(path, data)
        rows.append({"id": image_id(data), "path": str(path)})
    photos = pd.DataFrame(rows).drop_duplicates("id").sort_values("id").reset_index(drop=True)
    policy = InputPolicy(
        kind="shorter_side", size=(args.realistic_side,) * 2, shorter_side=args.realistic_side, max_side=1024
    )
    large = _measure(
        photos,
        tmp / "large",
        spec,
        classes,
        params,
        args.realistic_side,
        args.realistic_batch,
        args.workers,
        policy,
        args.repeats,
    )

    result = {
        "images": len(index),
        "batch": args.batch,
        "threads": args.threads,
        "workers": args.workers,
        "repeats": args.repeats,
        "pipeline_images_per_s": small["pipeline"],
        "forward_images_per_s": small["forward"],
        "ratio_to_forward": small["ratio"],
        "ratio_to_forward_repeats": small["ratios"],
        "store_read_images_per_s": small["read"],
        "realistic_images": len(photos),
        "realistic_photo": "500x375",
        "realistic_side": args.realistic_side,
        "realistic_policy": "shorter_side",
        "realistic_batch": args.realistic_batch,
        "pipeline_images_per_s_realistic": large["pipeline"],
        "forward_images_per_s_realistic": large["forward"],
        "ratio_to_forward_realistic": large["ratio"],
        "ratio_to_forward_realistic_repeats": large["ratios"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "model": spec.arch,
        "input_size": m.input_size,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    small_line = (
        f"\npipeline {result['pipeline_images_per_s']} img/s vs forward {result['forward_images_per_s']} img/s -> "
        f"ratio {result['ratio_to_forward']} (target >= 0.85 on CPU); "
        f"store read {result['store_read_images_per_s']} img/s"
    )
    print(small_line)
    print(
        f"500x375 photos at shorter side {args.realistic_side}: pipeline {large['pipeline']} img/s vs forward "
        f"{large['forward']} img/s -> ratio {large['ratio']} (target >= 0.85)"
    )


def _measure(index, tmp, spec, classes, params, size, batch, workers, policy, repeats) -> dict:
    """Pipeline and bare-forward throughput (images/s) of the target with ``policy`` on the pool ``index``.

    The two are interleaved, ``repeats`` times (forward then pipeline, then the other way round, so a drift in
    the machine's load weighs on both alike); each repeat gives one ratio and the figures are the medians.
    Another process sharing the cores slows a pair together, which the ratio cancels and the median drops.
    """
    torch.manual_seed(0)
    net = build_model(spec.arch, classes.num_classes, **spec.kwargs).eval()
    meta = make_meta(
        arch=spec.arch,
        kwargs=spec.kwargs,
        classes=list(classes.names),
        input_size=size,
        mean=params.models.mean,
        std=params.models.std,
        input_policy=policy,
    )
    ckpt = tmp / "target.pt"
    save_checkpoint(ckpt, net, meta, provenance={"benchmark": True})
    predictor = load_predictor(ckpt, classes=classes, batch_size=batch)
    print_ = fingerprint(ckpt, index["id"].tolist(), policy)

    # reference: the bare forward pass on preloaded tensors of the network's input shape (same batch, threads)
    first = read_rgb(index["path"].iloc[0])
    shape = predictor.prepare(first).shape
    padded = [-(-d // policy.pad_to) * policy.pad_to for d in shape[1:]] if policy.kind != "resize" else shape[1:]
    x = torch.randn(batch, 3, *padded)
    predictor.forward(x)  # warm-up
    n = -(-len(index) // batch) * batch  # the forward reference runs whole batches

    def forward() -> float:
        start = time.perf_counter()
        for _ in range(n // batch):
            predictor.forward(x)
        return time.perf_counter() - start

    def pipeline(r: int) -> float:
        store = PredictionStore(tmp / f"store_{r}")  # a fresh store: nothing to resume
        start = time.perf_counter()
        predict_pool(
            predictor,
            index,
            store,
            model_name="bench",
            classes=classes,
            batch_size=batch,
            workers=workers,
            fingerprint=print_,
            shard_size=params.infer.shard_size,
        )
        return time.perf_counter() - start

    forward_s, pipeline_s = [], []
    for r in range(repeats):
        if r % 2 == 0:
            forward_s.append(forward())
            pipeline_s.append(pipeline(r))
        else:
            pipeline_s.append(pipeline(r))
            forward_s.append(forward())
        log.info("repeat %d: forward %.2f s, pipeline %.2f s", r, forward_s[-1], pipeline_s[-1])

    store = PredictionStore(tmp / "store_0")
    start = time.perf_counter()
    n_read = sum(len(shard.ids) for shard in store.iter_shards())
    read_s = time.perf_counter() - start
    assert n_read == len(index)
    ratios = [(f / n) / (p / len(index)) for f, p in zip(forward_s, pipeline_s, strict=True)]
    return {
        "pipeline": round(len(index) / statistics.median(pipeline_s), 2),
        "forward": round(n / statistics.median(forward_s), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(v, 3) for v in ratios],
        "read": round(n_read / read_s, 1),
    }


if __name__ == "__main__":
    main()
