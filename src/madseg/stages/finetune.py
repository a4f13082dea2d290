"""finetune@<round>: f_t^(i+1) from f_t^(i) on S^(1..i+1) + S0, the learning rate chosen on T0 from a grid."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from madseg import paths
from madseg.config import Params
from madseg.device import resolve_device
from madseg.finetuning import finetune_target
from madseg.io.atomic import sha256_file, write_json
from madseg.io.images import read_mask, read_rgb
from madseg.io.tables import read_csv, write_csv
from madseg.io.voc import read_split
from madseg.models.checkpoint import load_checkpoint, save_checkpoint, weights_origin
from madseg.selection import labelled_set

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    spec, classes = params.finetunes[round_key], params.dataset.class_list()
    parent = paths.target_checkpoint(round_key)
    model, meta = load_checkpoint(parent)

    # S^(1..i+1): earlier rounds' masks come from the previous labelled set, this round's from its import
    s_all = read_csv(paths.annotations_dir(round_key) / "S_all.csv", required=["image_id", "round"])
    prev_dir = paths.labelled_dir(spec.prev)
    previous = read_csv(prev_dir / "index.csv", required=["image_id", "round", "mask"])
    new_masks = paths.annotations_dir(round_key) / "masks"
    rows = labelled_set(s_all, previous, round_key, new_masks=new_masks, previous_masks=prev_dir).to_dict("records")
    missing = [str(row["source"]) for row in rows if not row["source"].exists()]
    if missing:
        raise FileNotFoundError(f"masks missing for {len(missing)} images of S^(1..{spec.next}): {missing[:3]}")

    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).set_index("id")
    new = [read_rgb(index.loc[r["image_id"], "path"]) for r in rows], [read_mask(r["source"], classes) for r in rows]
    s0 = read_split(params.dataset, params.dataset.train_split, classes)
    t0 = read_split(params.dataset, params.dataset.val_split, classes)
    result = finetune_target(
        model,
        meta,
        new=new,
        replay=(s0.images, s0.masks),
        val=(t0.images, t0.masks),
        params=params.finetune,
        num_classes=classes.num_classes,
        resume_root=paths.finetune_dir(round_key) / "resume",
        device=resolve_device(params.device),
    )

    provenance = {
        "round": int(spec.next),
        "parent": str(parent),
        "parent_sha256": sha256_file(parent),
        "labelled_images": [row["image_id"] for row in rows],
        "replay": f"{params.dataset.voc_root}:{params.dataset.train_split} ({len(s0.images)} images)",
        "lr": result.best.lr,
        "lr_grid": {str(r.lr): r.t0_miou for r in result.grid},
        # where the round-0 weights came from travels with every descendant (and into the model card)
        **weights_origin(meta["provenance"]),
    }
    save_checkpoint(paths.target_checkpoint(spec.next), result.model, meta, provenance=provenance)
    _write_labelled_set(paths.labelled_dir(round_key), rows)
    write_csv(paths.METRICS / "finetune" / f"round_{round_key}_curve.csv", result.curve())
    record = result.record(labelled_images=len(rows), replay_images=len(s0.images))
    write_json(paths.finetune_metrics(round_key), record)
    shutil.rmtree(paths.finetune_dir(round_key) / "resume", ignore_errors=True)


def _write_labelled_set(folder: Path, rows: list[dict]) -> None:
    """S^(1..i+1) for the next round: its masks copied into ``folder`` and their index.csv."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for row in rows:
        shutil.copyfile(row["source"], folder / row["mask"])
    write_csv(folder / "index.csv", pd.DataFrame(rows)[["image_id", "round", "mask"]])
