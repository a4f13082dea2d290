"""Label Studio throughput on a real local server: push 2,000 weak-scoring tasks (batched imports) and pull
2,000 x 3 annotations (export, validate, tidy), as the pipeline's export/import stages do.

The reference measured in the same run is the unbatched push (one import call per task, on 100 tasks): the
batched/unbatched ratio is what batching buys. Creating the 6,000 annotations through the API (as three
annotator users) is timed separately and is not part of either figure.

    .venv/bin/python benchmarks/labelstudio.py [--tasks 2000] [--label-studio PATH]

Writes metrics/bench/labelstudio.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.annotation.labelstudio import LabelStudioBackend
from madseg.annotation.server import shared_template_dir, start_server, stop_server
from madseg.io.atomic import write_json
from madseg.io.images import encode_png
from madseg.labels import make_class_list

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--reference-tasks", type=int, default=100)
    ap.add_argument(
        "--label-studio",
        default=os.environ.get("MADSEG_LABEL_STUDIO") or str(ROOT / ".venv-labelstudio" / "bin" / "label-studio"),
    )
    ap.add_argument("--out", default=str(ROOT / "metrics" / "bench" / "labelstudio.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="madseg-ls-bench-") as tmp:
        tmp = Path(tmp)
        docroot = tmp / "files"
        overlays = docroot / "round_0" / "overlays" / "rater"
        overlays.mkdir(parents=True)
        png = encode_png(np.zeros((64, 128, 3), np.uint8))
        ids = [f"{k:016x}" for k in range(args.tasks)]
        for i in ids:
            (overlays / f"{i}.png").write_bytes(png)
        items = pd.DataFrame({"image_id": ids, "path": [str(overlays / f"{i}.png") for i in ids]})
        template = shared_template_dir(args.label_studio)
        t0 = time.perf_counter()
        server = start_server(args.label_studio, tmp / "data", document_root=docroot, template_dir=template)
        start_s = time.perf_counter() - t0
        try:
            results = run(server, items, args)
        finally:
            stop_server(server)
    results["server_start_s"] = round(start_s, 2)
    for k, v in results.items():
        print(f"{k:36s} {v}")
    write_json(args.out, results)
    print(f"wrote {args.out}", file=sys.stderr)


def run(server, items: pd.DataFrame, args: argparse.Namespace) -> dict:
    classes = make_class_list("demo")
    common = {
        "classes": classes,
        "annotators_per_task": args.annotators,
        "document_root": server.document_root,
    }
    backend = LabelStudioBackend(server.url, server.token, batch_size=args.batch_size, **common)
    client = backend.client
    n = len(items)

    # three annotator accounts (each task needs that many people), then the push: project + storage + the
    # existing-task check + batched imports, as export_weak_tasks does
    users = [client.users.create(username=f"bench{k}", email=f"bench{k}@raters.test").id for k in range(3)]
    t0 = time.perf_counter()
    receipt = backend.export_weak("0", items)
    push_s = time.perf_counter() - t0
    # again: nothing new to import (the idempotence check on a full project)
    t0 = time.perf_counter()
    backend.export_weak("0", items)
    reexport_s = time.perf_counter() - t0

    # reference: one import call per task
    ref = LabelStudioBackend(server.url, server.token, batch_size=1, project_prefix="reference", **common)
    t0 = time.perf_counter()
    ref.export_weak("0", items.iloc[: args.reference_tasks])
    ref_s = time.perf_counter() - t0

    # 6,000 annotations by three annotator users through the API (timed apart: not part of pull)
    tasks = {t.data["image_id"]: t.id for t in client.tasks.list(project=receipt["project_id"], fields="all")}
    rng = np.random.default_rng(0)
    jobs = [(tasks[i], u, int(rng.integers(1, 6))) for i in items["image_id"] for u in users]

    def annotate(job: tuple[int, int, int]) -> None:
        task, user, score = job
        result = [{"from_name": "rating", "to_name": "image", "type": "choices", "value": {"choices": [str(score)]}}]
        client.annotations.create(task, result=result, completed_by=user, lead_time=2.0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(annotate, jobs))
    annotate_s = time.perf_counter() - t0

    # pull: export with predictions, completeness check, validation, tidy table, as import_scores does
    t0 = time.perf_counter()
    _, table = backend.import_weak(receipt)
    pull_s = time.perf_counter() - t0
    assert len(table) == len(jobs), (len(table), len(jobs))

    push = n / push_s
    unbatched = args.reference_tasks / ref_s
    return {
        "tasks": n,
        "annotations": len(jobs),
        "batch_size": args.batch_size,
        "push_s": round(push_s, 3),
        "push_tasks_per_s": round(push, 1),
        "push_unbatched_tasks_per_s": round(unbatched, 1),
        "push_batched_over_unbatched": round(push / unbatched, 1),
        "reexport_noop_s": round(reexport_s, 3),
        "pull_s": round(pull_s, 3),
        "pull_annotations_per_s": round(len(jobs) / pull_s, 1),
        "create_annotations_api_per_s": round(len(jobs) / annotate_s, 1),
    }


if __name__ == "__main__":
    main()
