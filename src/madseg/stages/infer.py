"""infer --model NAME (a competitor, once per pool) or infer --round R (the target f_t^(R), and f_t^(R) seen
through each view of ``mining.self_consistency``)."""

from __future__ import annotations

import logging
import shutil

import torch

from madseg import paths
from madseg.backends import predict_model
from madseg.config import Params
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv

log = logging.getLogger(__name__)


def run(params: Params, *, model: str | None = None, round_key: str | None = None) -> None:
    if (model is None) == (round_key is None):
        raise ValueError("infer needs exactly one of --model (a competitor) or --round (the target)")
    if model is not None and model not in params.models.competitors:
        raise ValueError(f"unknown competitor {model!r}; competitors: {', '.join(params.models.competitors)}")
    torch.set_num_threads(params.infer.threads)
    classes = params.dataset.class_list()
    if model is not None:
        source, out, name = paths.competitor_dir(model), paths.competitor_predictions(model), model
    else:
        source, out, name = (
            paths.target_checkpoint(round_key),
            paths.target_predictions(round_key),
            f"target_{round_key}",
        )
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).sort_values("id").reset_index(drop=True)
    views = [None] if model is not None else [None, *params.mining.self_consistency]
    if round_key is not None:  # a view dropped from params leaves no store behind
        for stale in sorted(paths.target_predictions(round_key).glob("views/*")):
            if stale.name not in views:
                shutil.rmtree(stale)
    for view in views:
        store = PredictionStore(out if view is None else paths.target_view_predictions(round_key, view))
        label = name if view is None else f"{name} seen through {view}"
        computed = predict_model(
            source,
            index,
            store,
            model_name=name,
            classes=classes,
            infer_params=params.infer,
            device=params.device,
            ray_params=params.ray,
            view=view,
            policy=params.models.input_policy.overrides(),
        )
        log.info("%s: %d images, %d shards computed (the rest resumed)", label, len(index), computed)
