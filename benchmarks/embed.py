"""Embedding throughput: the embed stage's pool pass (decode -> 224-px squash -> mobilenet_v2 features -> float16
shards) against the target's plain pool inference (`infer`) on the same images, batch and thread count, measured
in the same run and interleaved (``--repeats`` pairs; every figure is the median over the pairs, so another
process sharing the cores weighs on both alike).

Also, interleaved the same way, the embedding on whole batches (before :func:`madseg.device.cpu_chunks`): the
chunks' speed-up (``chunked_over_whole_batch*``).

Twice: on the demo's 64-px images and on 128-px images (the same generated content, upsampled: the encoder sees
224 px either way, the target its own input size). Writes metrics/bench/embed.json.

    python benchmarks/embed.py [--images 4000] [--large-images 500] [--batch 64] [--threads 2] [--repeats 3]
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

import madseg.device
from madseg.config import load_params
from madseg.embedding import embed_pool
from madseg.inference import fingerprint, predict_pool
from madseg.io.atomic import write_bytes, write_json
from madseg.io.images import encode_jpeg, image_id
from madseg.io.store import EmbeddingStore, PredictionStore
from madseg.models.checkpoint import make_meta, save_checkpoint
from madseg.models.embedders import load_embedder
from madseg.models.predictors import load_predictor
from madseg.models.registry import build_model
from madseg.world.generate import render_image

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.embed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--large-images", type=int, default=500)
    parser.add_argument("--large-side", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "embed.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    tmp = Path(tempfile.mkdtemp(prefix="madseg-bench-embed-"))
    small = _measure(_pool(params, tmp / "small", args.images, None), tmp / "s", params, args)
    large = _measure(_pool(params, tmp / "large", args.large_images, args.large_side), tmp / "l", params, args)
    result = {
        "images": args.images,
        "batch": args.batch,
        "threads": args.threads,
        "workers": args.workers,
        "repeats": args.repeats,
        "embedder": params.embed.model,
        "embed_image_size": params.embed.image_size,
        "embed_images_per_s": small["embed"],
        "infer_images_per_s": small["infer"],
        "ratio_to_infer": small["ratio"],
        "large_images": args.large_images,
        "large_side": args.large_side,
        "embed_images_per_s_large": large["embed"],
        "infer_images_per_s_large": large["infer"],
        "ratio_to_infer_large": large["ratio"],
        "embed_images_per_s_whole_batch": small["whole"],
        "chunked_over_whole_batch": small["speedup"],
        "embed_images_per_s_whole_batch_large": large["whole"],
        "chunked_over_whole_batch_large": large["speedup"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    for label, r in (("64 px", small), (f"{args.large_side} px", large)):
        print(f"{label}: embed {r['embed']} img/s vs infer {r['infer']} img/s -> ratio {r['ratio']}")
        print(f"  in CPU chunks {r['speedup']}x as fast as on whole batches ({r['whole']} img/s)")


def _pool(params, folder: Path, n: int, side: int | None) -> pd.DataFrame:
    """``n`` demo-world pool images (64 px, or upsampled to ``side``) and their index, sorted by id."""
    rows = []
    for i in range(n):
        item = render_image(params.world, "pool", 3 * 10**6 + i, ("normal", "corner")[i % 2], ())
        data = item.jpeg
        if side is not None:
            image = Image.open(io.BytesIO(data)).convert("RGB").resize((side, side), Image.BILINEAR)
            data = encode_jpeg(np.asarray(image), quality=90)
        path = folder / f"{i:06d}.jpg"
        write_bytes(path, data)
        rows.append({"id": image_id(data), "path": str(path)})
    return pd.DataFrame(rows).drop_duplicates("id").sort_values("id").reset_index(drop=True)


def _measure(index: pd.DataFrame, tmp: Path, params, args) -> dict:
    """Embedding and target-inference throughput (images/s) on ``index``: interleaved pairs, medians."""
    classes, spec, m = params.dataset.class_list(), params.models.target, params.models
    torch.manual_seed(0)
    net = build_model(spec.arch, classes.num_classes, **spec.kwargs).eval()
    policy = m.input_policy.policy(m.input_size)
    meta = make_meta(
        arch=spec.arch,
        kwargs=spec.kwargs,
        classes=list(classes.names),
        input_size=m.input_size,
        mean=m.mean,
        std=m.std,
        input_policy=policy,
    )
    ckpt = tmp / "target.pt"
    save_checkpoint(ckpt, net, meta, provenance={"benchmark": True})
    predictor = load_predictor(ckpt, classes=classes, batch_size=args.batch)
    embedder = load_embedder(params.embed.model, image_size=params.embed.image_size)
    infer_print = fingerprint(ckpt, index["id"].tolist(), policy)
    shards = params.embed.shard_size

    def infer(r: int) -> float:
        start = time.perf_counter()
        predict_pool(
            predictor,
            index,
            PredictionStore(tmp / f"pred_{r}"),
            model_name="bench",
            classes=classes,
            fingerprint=infer_print,
            shard_size=shards,
            batch_size=args.batch,
            workers=args.workers,
        )
        return time.perf_counter() - start

    def embed(r: int, *, whole: bool = False) -> float:
        # the reference: each batch whole, as before the CPU chunks (a pixel budget no batch reaches)
        budget = madseg.device.CPU_CHUNK_PIXELS
        madseg.device.CPU_CHUNK_PIXELS = 2**62 if whole else budget
        start = time.perf_counter()
        try:
            embed_pool(
                embedder,
                index,
                EmbeddingStore(tmp / f"emb_{r}_{whole}"),
                shard_size=shards,
                batch_size=args.batch,
                workers=args.workers,
            )
        finally:
            madseg.device.CPU_CHUNK_PIXELS = budget
        return time.perf_counter() - start

    runs = {"embed": embed, "infer": infer, "whole": lambda r: embed(r, whole=True)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        for name in runs if r % 2 == 0 else reversed(runs):  # interleaved, the order alternating
            times[name].append(runs[name](r))
        log.info("repeat %d: %s", r, {name: round(t[-1], 2) for name, t in times.items()})
    n, embed_s, infer_s, whole_s = len(index), times["embed"], times["infer"], times["whole"]
    return {
        "embed": round(n / statistics.median(embed_s), 1),
        "infer": round(n / statistics.median(infer_s), 1),
        "ratio": round(statistics.median(i / e for e, i in zip(embed_s, infer_s, strict=True)), 4),
        "whole": round(n / statistics.median(whole_s), 1),
        "speedup": round(statistics.median(w / e for e, w in zip(embed_s, whole_s, strict=True)), 2),
    }


if __name__ == "__main__":
    main()
