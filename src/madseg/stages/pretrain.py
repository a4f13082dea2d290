"""pretrain --model NAME: train a demo model from scratch on S0, or adopt a user's artefact as is.

Writes models/target_0.pt for the target and models/competitors/<name>/ (spec.json + the model) for a
competitor, plus metrics/pretrain/<name>.json (T0 mIoU, steps, seconds) and its loss curve.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from madseg import paths
from madseg.config import ModelSpec, Params
from madseg.device import resolve_device
from madseg.inference import evaluate_model, predict_voc_split
from madseg.io.atomic import write_json
from madseg.io.tables import write_csv
from madseg.io.voc import read_split
from madseg.metrics import confusion_matrix, mean_iou
from madseg.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import SOURCE_FILES, load_predictor
from madseg.models.registry import build_model
from madseg.models.weights import init_pretrained
from madseg.training import pretrain

log = logging.getLogger(__name__)


def run(params: Params, *, model: str) -> None:
    is_target = model == params.models.target.name or model == "target"
    spec = params.models.target if is_target else params.models.competitors.get(model)
    if spec is None:
        raise ValueError(f"unknown model {model!r}; models: target, {', '.join(params.models.competitors)}")
    out = paths.target_checkpoint("0") if is_target else paths.competitor_dir(spec.name) / "model.pt"
    name = "target" if is_target else spec.name
    if spec.source == "registry" and spec.path is None:
        _train(params, spec, out, name=name)
        if not is_target:
            _write_spec(params, spec)
        return
    _adopt(params, spec, is_target)
    if not is_target:
        _write_spec(params, spec)
    # an adopted model is scored on T0 like a trained one, so Table 1's first column means the same for all
    classes = params.dataset.class_list()
    predictor = load_predictor(out if is_target else paths.competitor_dir(spec.name), classes=classes,
                               device=resolve_device(params.device))  # fmt: skip
    predictions, truth, ids = predict_voc_split(predictor, params.dataset, classes, params.infer)
    t0_miou = mean_iou(sum(confusion_matrix(truth[i], predictions[i], classes.num_classes) for i in ids))
    write_json(
        paths.METRICS / "pretrain" / f"{name}.json", {"t0_miou": t0_miou, "source": spec.source, "steps": 0}
    )
    log.info("%s: adopted %s from %s, T0 mIoU %.3f", name, spec.source, spec.path, t0_miou)


def _train(params: Params, spec: ModelSpec, out: Path, name: str) -> None:
    torch.set_num_threads(params.pretrain.threads)
    device = resolve_device(params.device)
    classes = params.dataset.class_list()
    m = params.models
    policy = m.input_policy.policy(spec.input_size or m.input_size)
    meta = make_meta(arch=spec.arch, kwargs=spec.kwargs, classes=list(classes.names), input_size=spec.input_size or m.input_size,
                     mean=m.mean, std=m.std, input_policy=policy)  # fmt: skip
    torch.manual_seed(params.seed)
    net = build_model(spec.arch, classes.num_classes, **spec.kwargs)
    # named pretrained weights are found (or refused, with where to put them) before any data is read
    weights = init_pretrained(net, spec.arch, classes.num_classes, spec.kwargs)
    s0 = read_split(params.dataset, params.dataset.train_split, classes)
    t0 = read_split(params.dataset, params.dataset.val_split, classes)
    x, y = InputPolicy.from_meta(meta).training_views(s0.images, s0.masks, m.mean, m.std)
    steps = spec.steps or params.pretrain.steps
    lr = spec.lr or params.pretrain.lr
    start = time.monotonic()
    curve = pretrain(net, x, y, steps=steps, batch_size=params.pretrain.batch_size, lr=lr,
                     weight_decay=params.pretrain.weight_decay, seed=params.seed, device=device,
                     augment=spec.augment)  # fmt: skip
    seconds = time.monotonic() - start
    t0_miou = evaluate_model(
        net, t0.images, t0.masks, meta=meta, num_classes=classes.num_classes, device=device
    )
    provenance = {"trained_on": f"{params.dataset.voc_root}:{params.dataset.train_split}", "images": len(s0.images),
                  "steps": steps, "seed": params.seed, "t0_miou": t0_miou}  # fmt: skip
    if weights:  # only then, so that from-scratch checkpoints keep their bytes
        provenance["pretrained"] = weights
    save_checkpoint(out, net.cpu(), meta, provenance=provenance)
    write_json(
        paths.METRICS / "pretrain" / f"{name}.json",
        {
            "t0_miou": t0_miou,
            "steps": steps,
            "lr": lr,
            "input_size": meta["input_size"],
            "augment": spec.augment,
            "train_s": round(seconds, 1),
            **(
                {"pretrained": "; ".join(f"{w['part']}: {w.get('weights') or w['file']}" for w in weights)}
                if weights
                else {}
            ),
        },
    )
    write_csv(paths.METRICS / "pretrain" / f"{name}_curve.csv", pd.DataFrame(curve))
    log.info("%s (%s): T0 mIoU %.3f after %d steps in %.0f s", name, spec.arch, t0_miou, steps, seconds)


def _adopt(params: Params, spec: ModelSpec, is_target: bool) -> None:
    """Copy a user's checkpoint / TorchScript / ONNX / predictions folder into the project, validated."""
    if spec.path is None or not Path(spec.path).exists():
        raise FileNotFoundError(
            f"model {spec.name}: source {spec.source!r} needs an existing path, got {spec.path!r}"
        )
    if is_target:
        if spec.source not in ("registry", "checkpoint"):
            raise ValueError("the target must be a madseg checkpoint (it is fine-tuned), not " + spec.source)
        load_checkpoint(spec.path)  # validates
        shutil.copyfile(spec.path, paths.target_checkpoint("0"))
        return
    source = "checkpoint" if spec.source == "registry" else spec.source
    if source not in SOURCE_FILES:
        raise ValueError(
            f"model {spec.name}: unknown source {spec.source!r}; valid: registry, {', '.join(SOURCE_FILES)}"
        )
    folder = paths.competitor_dir(spec.name)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    target = folder / SOURCE_FILES[source]
    (shutil.copytree if Path(spec.path).is_dir() else shutil.copyfile)(spec.path, target)


def _write_spec(params: Params, spec: ModelSpec) -> None:
    source = "checkpoint" if spec.source == "registry" else spec.source
    m = params.models
    write_json(
        paths.competitor_dir(spec.name) / "spec.json",
        {
            "name": spec.name,
            "source": source,
            "classes": spec.classes,
            "class_map": spec.class_map,
            "input_size": [m.input_size, m.input_size],
            "mean": list(m.mean),
            "std": list(m.std),
        },
    )
    load_predictor(
        paths.competitor_dir(spec.name), classes=params.dataset.class_list()
    )  # fail now, not at infer
