"""A scratch copy of this project on the tiny test configuration, as its own git + DVC repository."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from madseg.config import merge_overlay

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    # the project's venv first: `dvc` and `madseg` (which dvc.yaml's commands call) live there
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        **(env or {}),
        "PATH": path,
        "DVC_NO_ANALYTICS": "1",
        "TQDM_DISABLE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def merge(base: dict, over: dict) -> dict:
    """``over`` applied to a copy of ``base`` as a preset is (a null removes an entry)."""
    return merge_overlay(copy.deepcopy(base), over)


def copy_tracked(work: Path) -> None:
    """What a fresh clone holds, into ``work``: the tracked files without the demo's outputs."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for rel in files:
        src = ROOT / rel
        generated = rel.startswith(("data/", "models/", "metrics/", "annotations/")) and "round_init" not in rel
        if src.is_file() and not generated:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)


def make_tiny_project(work: Path) -> Path:
    """A scratch copy of the project (tracked files) as its own git + DVC repo, on the tiny configuration."""
    copy_tracked(work)
    params = merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text()),
    )
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / "metrics").mkdir(exist_ok=True)  # the validity study has not run here
    (work / "metrics" / "study.json").write_text('{"status": "not run"}\n')
    (work / "metrics" / "study_options.json").write_text('{"status": "not run"}\n')
    run(["git", "init", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "tiny config"], work)
    run(["madseg", "demo"], work)  # the README's main job, side-by-side runner and `dvc repro` both
    return work


def infer_project(tmp: Path, n_images: int = 240) -> Path:
    """A folder with a pool of random 48x40 JPEGs, its index, a small U-Net as target_0 and params for
    ``madseg run infer --round 0`` with shards of 16 and batches of 8."""
    from madseg.io.images import encode_jpeg, image_id
    from madseg.models.checkpoint import make_meta, save_checkpoint
    from madseg.models.registry import build_model

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_images):
        data = encode_jpeg(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        path = tmp / "pool" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"id": image_id(data), "path": str(path.relative_to(tmp)), "width": 48, "height": 40})
    (tmp / "data/index").mkdir(parents=True)
    pd.DataFrame(rows).sort_values("id").to_csv(tmp / "data/index/pool.csv", index=False)
    torch.manual_seed(0)
    kwargs = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    classes = ["background", "disc", "square", "triangle", "ring", "cross", "star"]
    meta = make_meta(arch="smp.Unet", kwargs=kwargs, classes=classes, input_size=32, mean=[0.5] * 3, std=[0.25] * 3)
    save_checkpoint(tmp / "models/target_0.pt", build_model("smp.Unet", 7, **kwargs), meta, provenance={})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["infer"].update(shard_size=16, batch_size=8, workers=0)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy2(ROOT / "dvc.yaml", tmp / "dvc.yaml")  # the demo's paths params name are the pipeline's outputs
    return tmp


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
