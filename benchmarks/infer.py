"""Pool inference throughput: the end-to-end pipeline (decode -> stored maps + statistics) against the bare
forward pass of the same model, batch and thread count on preloaded tensors, measured in the same run.
Also the prediction store's read throughput. Writes metrics/bench/infer.json.

    python benchmarks/infer.py [--images 2000] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from madseg.config import load_params
from madseg.inference import fingerprint, predict_pool
from madseg.io.atomic import write_bytes, write_json
from madseg.io.images import image_id
from madseg.io.store import PredictionStore
from madseg.models.checkpoint import make_meta, save_checkpoint
from madseg.models.predictors import load_predictor
from madseg.models.registry import build_model
from madseg.world.generate import render_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
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

    torch.manual_seed(0)
    net = build_model(spec.arch, classes.num_classes, **spec.kwargs).eval()
    meta = make_meta(arch=spec.arch, kwargs=spec.kwargs, classes=list(classes.names), input_size=m.input_size,
                     mean=m.mean, std=m.std)  # fmt: skip
    ckpt = tmp / "target.pt"
    save_checkpoint(ckpt, net, meta, provenance={"benchmark": True})
    predictor = load_predictor(ckpt, classes=classes)

    # reference: the bare forward pass on preloaded tensors (same model, batch, threads)
    x = torch.randn(len(index), 3, m.input_size, m.input_size)
    predictor.forward(x[: args.batch])  # warm-up
    start = time.perf_counter()
    for s in range(0, len(x), args.batch):
        predictor.forward(x[s : s + args.batch])
    forward_s = time.perf_counter() - start

    store = PredictionStore(tmp / "store")
    start = time.perf_counter()
    predict_pool(predictor, index, store, model_name="bench", classes=classes,
                 fingerprint=fingerprint(ckpt, index["id"].tolist()), shard_size=params.infer.shard_size,
                 batch_size=args.batch, workers=args.workers)  # fmt: skip
    pipeline_s = time.perf_counter() - start

    start = time.perf_counter()
    n_read = sum(len(shard.ids) for shard in store.iter_shards())
    read_s = time.perf_counter() - start
    assert n_read == len(index)

    result = {
        "images": len(index),
        "batch": args.batch,
        "threads": args.threads,
        "workers": args.workers,
        "pipeline_images_per_s": round(len(index) / pipeline_s, 1),
        "forward_images_per_s": round(len(index) / forward_s, 1),
        "ratio_to_forward": round(forward_s / pipeline_s, 3),
        "store_read_images_per_s": round(n_read / read_s, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "model": spec.arch,
        "input_size": m.input_size,
    }
    write_json(ROOT / "metrics" / "bench" / "infer.json", result)
    print(json.dumps(result, indent=2))
    print(f"\npipeline {result['pipeline_images_per_s']} img/s vs forward {result['forward_images_per_s']} img/s "
          f"-> ratio {result['ratio_to_forward']} (target >= 0.85 on CPU); store read {result['store_read_images_per_s']} img/s")  # fmt: skip


if __name__ == "__main__":
    main()
