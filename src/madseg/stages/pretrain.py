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
from madseg.artefacts import adopt_competitor, adopt_target, competitor_spec
from madseg.config import ModelSpec, Params
from madseg.device import resolve_device
from madseg.inference import evaluate_model, split_miou
from madseg.io.atomic import write_json
from madseg.io.tables import write_csv
from madseg.io.voc import read_split
from madseg.models.checkpoint import save_checkpoint
from madseg.models.predictors import load_predictor
from madseg.training import pretrain_spec

log = logging.getLogger(__name__)


def run(params: Params, *, model: str) -> None:
    is_target = model in (params.models.target.name, "target")
    spec = params.models.target if is_target else params.models.competitors.get(model)
    if spec is None:
        raise ValueError(f"unknown model {model!r}; models: target, {', '.join(params.models.competitors)}")
    name = "target" if is_target else spec.name
    out = paths.target_checkpoint("0") if is_target else paths.competitor_dir(spec.name) / "model.pt"
    trained_here = spec.source == "registry" and spec.path is None
    if trained_here:
        _train(params, spec, out, name=name)
    elif is_target:
        adopt_target(spec, out)
    else:
        adopt_competitor(spec, out.parent)
    if not is_target:
        write_json(paths.competitor_dir(spec.name) / "spec.json", competitor_spec(spec, params.models))
        load_predictor(paths.competitor_dir(spec.name), classes=params.dataset.class_list())  # fail now, not at infer
    if trained_here:
        return
    # an adopted model is scored on T0 like a trained one, so Table 1's first column means the same for all
    classes = params.dataset.class_list()
    predictor = load_predictor(
        out if is_target else out.parent,
        classes=classes,
        device=resolve_device(params.device),
        policy=params.models.input_policy.overrides(),
    )
    t0_miou = split_miou(predictor, params.dataset, classes, params.infer)
    write_json(paths.METRICS / "pretrain" / f"{name}.json", {"t0_miou": t0_miou, "source": spec.source, "steps": 0})
    log.info("%s: adopted %s from %s, T0 mIoU %.3f", name, spec.source, spec.path, t0_miou)


def _train(params: Params, spec: ModelSpec, out: Path, name: str) -> None:
    torch.set_num_threads(params.pretrain.threads)
    device, classes = resolve_device(params.device), params.dataset.class_list()
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
    k = classes.num_classes
    t0_miou = evaluate_model(fit.model, t0.images, t0.masks, meta=fit.meta, num_classes=k, device=device)
    trained_on = f"{params.dataset.voc_root}:{params.dataset.train_split}"
    provenance = fit.provenance(trained_on=trained_on, images=len(s0.images), seed=params.seed, t0_miou=t0_miou)
    save_checkpoint(out, fit.model.cpu(), fit.meta, provenance=provenance)
    write_json(paths.METRICS / "pretrain" / f"{name}.json", fit.record(t0_miou=t0_miou, augment=spec.augment))
    write_csv(paths.METRICS / "pretrain" / f"{name}_curve.csv", pd.DataFrame(fit.curve))
    log.info("%s (%s): T0 mIoU %.3f after %d steps in %.0f s", name, spec.arch, t0_miou, fit.steps, fit.seconds)
