"""validity: measure the method against the demo world's hidden truth (never read by mining or selection).

Writes metrics/disagreement.json (pairwise 1 - mIoU between the pretrained models per kind of pool image),
metrics/mining_precision.json (share of M on which f_t^(0) is truly wrong, beside the entropy and random
strategies at the same budget), metrics/validity.json (each f_t^(i) on the held-out D_eval: all, corner cases,
per factor; T0; the gain from f_t^(0) to the last target; and the study's cross-seed margins of MAD over entropy
and random, from metrics/study.json) and metrics/slices.json (the truth factors the final round's top slices
recover, beside the bound of rules chosen with the truth and its chance level).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from madseg import paths, validity
from madseg.annotation.simulated import annotator_names
from madseg.config import Params
from madseg.device import resolve_device
from madseg.inference import predict_images
from madseg.io.atomic import read_json, write_json
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.io.truth import read_factors, read_held_out_pool, read_truth_masks
from madseg.metrics import confusion_matrix
from madseg.mining import entropy_candidates, random_candidates
from madseg.models.predictors import load_predictor
from madseg.slices import slice_table

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    classes, truth_dir = params.dataset.class_list(), params.annotation.simulated.truth_dir
    truth = read_factors(truth_dir).set_index("image_id")
    kinds = truth["kind"].to_dict()
    final = max(params.rounds, key=int)

    stores = {"target": PredictionStore(paths.target_predictions("0"))}
    stores |= {name: PredictionStore(paths.competitor_predictions(name)) for name in params.models.competitors}
    aligned = zip(*(s.iter_shards() for s in stores.values()), strict=True)
    disagreement = validity.pairwise_disagreement(aligned, list(stores), truth["kind"], classes.num_classes)
    write_json(paths.METRICS / "disagreement.json", {**disagreement, "models": list(stores)})

    m = read_csv(paths.mining_dir("0") / "M.csv", required=["image_id"])["image_id"].tolist()
    store, stats = stores["target"], stores["target"].stats()
    sets = {
        "mad": m,
        "entropy": entropy_candidates(stats, len(m), classes)["image_id"].tolist(),
        "random": random_candidates(stats, len(m), classes, seed=params.mining.seed)["image_id"].tolist(),
    }
    wanted = sorted({i for ids in sets.values() for i in ids})
    masks = read_truth_masks(truth_dir, [i for i in wanted if kinds.get(i) != validity.OOD], classes)
    precision = validity.candidate_precision(sets, store.read_maps(wanted), masks, kinds, classes.num_classes)
    write_json(paths.METRICS / "mining_precision.json", precision)
    log.info("f_t^(0) truly wrong on: mad %(mad).3f entropy %(entropy).3f random %(random).3f of M", precision)

    held_out, rows, scores = read_held_out_pool(params.evaluation.eval_pool, classes), [], {}
    finetuned = {key: read_json(paths.finetune_metrics(key)) for key in params.finetunes}
    for key in params.rounds:
        predictor = load_predictor(
            paths.target_checkpoint(key),
            classes=classes,
            device=resolve_device(params.device),
            policy=params.models.input_policy.overrides(),
        )
        maps = predict_images(predictor, held_out.images, held_out.factors["image_id"].tolist()).maps
        cms = np.stack([confusion_matrix(t, p, classes.num_classes) for t, p in zip(held_out.masks, maps, strict=True)])
        for group, (images_in, score) in validity.group_scores(cms, held_out.factors).items():
            rows.append({"round": int(key), "group": group, "images": images_in, "miou": score})
            scores[f"target_{key}.{group}"] = score
        scores[f"target_{key}.T0"] = validity.t0_of_round(key, params.finetunes, finetuned)
    pool_factors = truth["factors"]
    s_all = read_csv(paths.annotations_dir(max(params.finetunes, key=int)) / "S_all.csv", required=["image_id"])
    # read back as pandas parses the file (not as written): the published ratio's last digits depend on it
    precision_read = pd.read_json(paths.METRICS / "mining_precision.json", typ="series")
    metrics = {
        **scores,
        **validity.round_gains(scores, "0", final),
        # the share of the images the final target was fine-tuned on (S^(1..n)) carrying each factor of the pool
        **{f"share_in_S.{f}": v for f, v in validity.factor_shares(pool_factors, s_all["image_id"]).items()},
        **validity.precision_ratios(precision_read.to_dict()),
        **validity.study_margins(*(read_json(f) if f.exists() else {} for f in (paths.STUDY, paths.STUDY_OPTIONS))),
        "aggregation.bias_rmse": _rater_bias_rmse(params),
    }
    write_csv(paths.METRICS / "validity_eval_pool.csv", pd.DataFrame(rows))
    write_json(paths.METRICS / "validity.json", metrics)
    log.info("D_eval corner mIoU %+.1f points to f_t^(%s)", metrics["corner_miou_gain"], final)

    m_final = read_csv(paths.mining_dir(final) / "M.csv", required=["image_id"])["image_id"]
    slices = read_csv(paths.slices_dir(final) / "slices.csv", required=["rule", "group_ids"])
    attributes = read_csv(paths.POOL_ATTRIBUTES, required=["id"]).set_index("id")
    table = slice_table(attributes, PredictionStore(paths.target_predictions(final)).stats(), classes.names)
    recovery = validity.slice_recovery(slices, table, m_final, pool_factors, seed=params.seed)
    write_json(paths.METRICS / "slices.json", {"round": int(final), **recovery})
    log.info("the final round's top 10 slices recover %(factors_recovered_top10)d of %(factors)d factors", recovery)


def _rater_bias_rmse(params: Params) -> float | None:
    """The rater model's bias error against the simulated annotators' planted biases; None for people."""
    if params.annotation.backend != "simulated":
        return None
    found = [paths.annotations_dir(k) / "scores.csv" for k in params.rounds]
    scores = pd.concat([read_csv(f, required=["image_id", "annotator", "score"]) for f in found if f.exists()])
    names = annotator_names(params.annotation.annotators_per_task)
    planted = params.annotation.simulated.bias[: len(names)]  # annotator sim<n> has bias[n]
    return validity.rater_bias_rmse(scores, names, planted)
