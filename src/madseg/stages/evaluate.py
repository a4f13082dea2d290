"""evaluate@<round>: f_t^(i) and every competitor on T0 and on T^(i+1) -> metrics/rounds/round_<i>.json."""

from __future__ import annotations

import logging

from madseg import paths
from madseg.config import Params
from madseg.device import resolve_device
from madseg.evaluation import flatten, per_image_confusions, ranking_stability, score_set, stable_from
from madseg.inference import predict_voc_split
from madseg.io.atomic import write_json
from madseg.io.images import read_mask
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.models.predictors import load_predictor

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    classes = params.dataset.class_list()
    here = paths.annotations_dir(round_key)
    test_ids = read_csv(here / "T.csv", required=["image_id"])["image_id"].tolist()
    test_truth = {i: read_mask(here / "masks" / f"{i}.png", classes) for i in test_ids}

    models = {params.models.target.name: (paths.target_checkpoint(round_key), paths.target_predictions(round_key))}
    for name in params.models.competitors:
        models[name] = (paths.competitor_dir(name), paths.competitor_predictions(name))

    metrics: dict[str, float] = {"round": int(round_key), "T_size": len(test_ids)}
    test_cms: dict = {}
    boot = {"n_boot": params.evaluation.bootstrap, "seed": params.evaluation.seed + int(round_key)}
    for name, (model_path, store_path) in models.items():
        t0_pred, t0_truth, t0_ids = predict_voc_split(
            load_predictor(
                model_path,
                classes=classes,
                device=resolve_device(params.device),
                policy=params.models.input_policy.overrides(),
            ),
            params.dataset,
            classes,
            params.infer,
        )
        t0 = score_set(per_image_confusions(t0_pred, t0_truth, t0_ids, classes.num_classes), classes.names, **boot)
        test_pred = PredictionStore(store_path).read_maps(test_ids)
        test_cms[name] = per_image_confusions(test_pred, test_truth, test_ids, classes.num_classes)
        test = score_set(test_cms[name], classes.names, **boot)
        metrics |= flatten(f"{name}.T0", t0) | flatten(f"{name}.T", test)
        log.info(
            "round %s %-10s T0 %.3f  T%d %.3f [%.3f, %.3f]",
            round_key,
            name,
            t0["miou"],
            int(round_key) + 1,
            test["miou"],
            test["miou_ci_low"],
            test["miou_ci_high"],
        )
    # Appendix C: how stable is the ranking of all models on the first k images of T (its drawn order)?
    k_min = min(params.evaluation.k_min, len(test_ids))
    stability = ranking_stability(test_cms, k_min)
    stability.insert(0, "round", int(round_key))
    write_csv(paths.METRICS / "stability" / f"round_{round_key}.csv", stability)
    metrics["stability.k_min"] = k_min
    metrics["stability.srcc_at_k_min"] = float(stability["srcc"].iloc[0])
    metrics["stability.stable_from_k"] = stable_from(stability, params.evaluation.stability_threshold)
    write_json(paths.round_metrics(round_key), metrics)
