"""pretrain --model NAME: train a demo model from scratch on S0, or adopt a user's artefact as is.

Writes models/target_0.pt for the target and models/competitors/<name>/ (spec.json + the model) for a
competitor, plus metrics/pretrain/<name>.json (T0 mIoU, steps, seconds) and its loss curve.
"""

from __future__ import annotations

import logging
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
from madseg.models.artefacts import adopt_competitor, adopt_target, competitor_spec
from madseg.models.checkpoint import save_checkpoint
from madseg.models.predictors import load_predictor
from madseg.training import pretrain_spec

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
    if is_target:
        adopt_target(spec, paths.target_checkpoint("0"))
    else:
        adopt_competitor(spec, paths.competitor_dir(spec.name))
        _write_spec(params, spec)
    # an adopted model is scored on T0 like a trained one, so Table 1's first column means the same for all
    classes = params.dataset.class_list()
    predictor = load_predictor(
        out if is_target else paths.competitor_dir(spec.name),
        classes=classes,
        device=resolve_device(params.device),
        policy=params.models.input_policy.overrides(),
    )
    predictions, truth, ids = predict_voc_split(predictor, params.dataset, classes, params.infer)
    t0_miou = mean_iou(sum(confusion_matrix(truth[i], predictions[i], classes.num_classes) for i in ids))
    write_json(paths.METRICS / "pretrain" / f"{name}.json", {"t0_miou": t0_miou, "source": spec.source, "steps": 0})
    log.info("%s: adopted %s from %s, T0 mIoU %.3f", name, spec.source, spec.path, t0_miou)


def _train(params: Params, spec: ModelSpec, out: Path, name: str) -> None:
    torch.set_num_threads(params.pretrain.threads)
    device = resolve_device(params.device)
    classes = params.dataset.class_list()
    s0 = read_split(params.dataset, params.dataset.train_split, classes)
    t0 = read_split(params.dataset, params.dataset.val_split, classes)
    fit = pretrain_spec(
        spec,
        images=s0.images,
        masks=s0.masks,
        classes=classes,
        models=params.models,
        recipe=params.pretrain,
        seed=params.seed,
        device=device,
    )
    t0_miou = evaluate_model(
        fit.model, t0.images, t0.masks, meta=fit.meta, num_classes=classes.num_classes, device=device
    )
    provenance = {
        "trained_on": f"{params.dataset.voc_root}:{params.dataset.train_split}",
        "images": len(s0.images),
        "steps": fit.steps,
        "seed": params.seed,
        "t0_miou": t0_miou,
    }
    if fit.weights:  # only then, so that from-scratch checkpoints keep their bytes
        provenance["pretrained"] = fit.weights
    save_checkpoint(out, fit.model.cpu(), fit.meta, provenance=provenance)
    described = "; ".join(f"{w['part']}: {w.get('weights') or w['file']}" for w in fit.weights)
    write_json(
        paths.METRICS / "pretrain" / f"{name}.json",
        {
            "t0_miou": t0_miou,
            "steps": fit.steps,
            "lr": fit.lr,
            "input_size": fit.meta["input_size"],
            "augment": spec.augment,
            "train_s": round(fit.seconds, 1),
            **({"pretrained": described} if fit.weights else {}),
        },
    )
    write_csv(paths.METRICS / "pretrain" / f"{name}_curve.csv", pd.DataFrame(fit.curve))
    log.info("%s (%s): T0 mIoU %.3f after %d steps in %.0f s", name, spec.arch, t0_miou, fit.steps, fit.seconds)


def _write_spec(params: Params, spec: ModelSpec) -> None:
    write_json(paths.competitor_dir(spec.name) / "spec.json", competitor_spec(spec, params.models))
    load_predictor(paths.competitor_dir(spec.name), classes=params.dataset.class_list())  # fail now, not at infer
