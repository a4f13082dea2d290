"""export: the final target for use outside the project — a self-describing checkpoint and a TorchScript file."""

from __future__ import annotations

import logging
import shutil

import torch

from madseg import paths
from madseg.config import Params
from madseg.io.atomic import sha256_file, write_json
from madseg.models.checkpoint import load_checkpoint, save_torchscript, weights_origin

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    final = max(params.rounds, key=int)
    source = paths.target_checkpoint(final)
    model, meta = load_checkpoint(source)
    paths.EXPORT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, paths.EXPORT / "target.pt")
    example = torch.zeros(1, 3, *meta["input_size"])
    traced = torch.jit.trace(model.eval(), example)
    save_torchscript(traced, paths.EXPORT / "target.ts")
    fields = ("arch", "kwargs", "classes", "input_size", "mean", "std", "input_policy", "tta")
    card = {k: meta[k] for k in fields if k in meta}
    card |= weights_origin(meta["provenance"])
    card |= {
        "round": int(final),
        "checkpoint_sha256": sha256_file(source),
        "logits": "N x K x H x W",
        "usage": "torch.jit.load('target.ts')(normalised NCHW float) -> logits; "
        "or madseg.models.checkpoint.load_checkpoint('target.pt')",
    }
    if "tta" in meta:  # the traced network is the plain one: its figures were measured with the augmentation
        card["usage"] += "; its figures average the logits of each image and its mirror image (tta: hflip)"
    write_json(paths.EXPORT / "model_card.json", card)
    log.info("exported f_t^(%s) to %s (checkpoint, TorchScript, model card)", final, paths.EXPORT)
