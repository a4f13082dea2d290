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
from pathlib import Path

import numpy as np
import pandas as pd

from madseg import paths
from madseg.annotation.simulated import annotator_names
from madseg.config import Params
from madseg.device import resolve_device
from madseg.inference import predict_images
from madseg.io.atomic import read_json, write_json
from madseg.io.images import read_mask, read_rgb
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.metrics import confusion_matrix
from madseg.mining import entropy_candidates, random_candidates
from madseg.models.predictors import load_predictor
from madseg.slices import slice_table
from madseg.validity import (
    OOD,
    candidate_precision,
    factor_shares,
    group_scores,
    pairwise_disagreement,
    pool_factors,
    rater_bias_rmse,
    round_gains,
    slice_recovery,
    study_margins,
)

log = logging.getLogger(__name__)
STUDY = paths.METRICS / "study.json"  # written by scripts/validity_study.py (outside CI: about an hour)
STUDY_OPTIONS = paths.METRICS / "study_options.json"  # written by scripts/validity_study.py --options


def run(params: Params) -> None:
    classes, truth_dir = params.dataset.class_list(), Path(params.annotation.simulated.truth_dir)
    truth = read_csv(truth_dir / "factors.csv", required=["image_id", "kind", "factors"])
    _disagreement(params, classes, truth.set_index("image_id")["kind"])
    _mining_precision(params, classes, truth, truth_dir)
    factors = pool_factors(truth)
    _eval_pool_scores(params, classes, factors)
    _slices_recovery(params, factors)


def read_pool_factors(truth_dir: str | Path) -> pd.Series:
    """The pool's truth factors from ``truth_dir``/factors.csv: image id -> ';'-joined factor names ('' for none)."""
    return pool_factors(read_csv(Path(truth_dir) / "factors.csv", required=["image_id", "factors"]))


def _disagreement(params: Params, classes, kinds: pd.Series) -> None:
    """Mean pairwise 1 - mIoU between all pretrained models on normal vs corner-case pool images."""
    stores = {"target": PredictionStore(paths.target_predictions("0"))}
    stores |= {name: PredictionStore(paths.competitor_predictions(name)) for name in params.models.competitors}
    aligned = zip(*(s.iter_shards() for s in stores.values()), strict=True)
    out: dict = pairwise_disagreement(aligned, list(stores), kinds, classes.num_classes)
    out["models"] = list(stores)
    write_json(paths.METRICS / "disagreement.json", out)
    log.info(
        "mean pairwise 1 - mIoU between models: normal %.3f, corner %.3f",
        out["mean_pairwise_distance.normal"],
        out["mean_pairwise_distance.corner"],
    )


def _mining_precision(params: Params, classes, truth: pd.DataFrame, truth_dir: Path) -> None:
    kinds = dict(zip(truth["image_id"], truth["kind"], strict=True))
    store = PredictionStore(paths.target_predictions("0"))
    m, stats = read_csv(paths.mining_dir("0") / "M.csv", required=["image_id"]), store.stats()
    sets = {
        "mad": m["image_id"].tolist(),
        "entropy": entropy_candidates(stats, len(m), classes)["image_id"].tolist(),
        "random": random_candidates(stats, len(m), classes, seed=params.mining.seed)["image_id"].tolist(),
    }
    wanted = sorted({i for ids in sets.values() for i in ids})
    masks = {i: read_mask(truth_dir / "masks" / f"{i}.png", classes) for i in wanted if kinds.get(i) != OOD}
    out = candidate_precision(sets, store.read_maps(wanted), masks, kinds, classes.num_classes)
    write_json(paths.METRICS / "mining_precision.json", out)
    log.info(
        "share of the candidates on which f_t^(0) is truly wrong: mad %.3f entropy %.3f random %.3f",
        out["mad"],
        out["entropy"],
        out["random"],
    )


def _eval_pool_scores(params: Params, classes, factors_of_pool: pd.Series) -> None:
    pool = Path(params.evaluation.eval_pool)
    factors = read_csv(pool / "truth" / "factors.csv", required=["image_id", "name", "kind", "factors"])
    factors["factors"] = factors["factors"].fillna("")
    images = [read_rgb(pool / "images" / f"{name}.jpg") for name in factors["name"]]
    truth = [read_mask(pool / "truth" / "masks" / f"{i}.png", classes) for i in factors["image_id"]]
    rows, metrics = [], {}
    device, k = resolve_device(params.device), classes.num_classes
    for key in params.rounds:
        predictor = load_predictor(
            paths.target_checkpoint(key),
            classes=classes,
            device=device,
            policy=params.models.input_policy.overrides(),
        )
        pred = predict_images(predictor, images, factors["image_id"].tolist()).maps
        cms = np.stack([confusion_matrix(t, p, k) for t, p in zip(truth, pred, strict=True)])
        for group, (images_in, score) in group_scores(cms, factors).items():
            rows.append({"round": int(key), "group": group, "images": images_in, "miou": score})
            metrics[f"target_{key}.{group}"] = score
        metrics[f"target_{key}.T0"] = _t0(params, key)
    last = max(params.rounds, key=int)
    metrics |= round_gains(metrics, "0", last)
    # the share of the images the final target was fine-tuned on (S^(1..n)) carrying each factor of the pool
    last_finetune = max(params.finetunes, key=int)
    s_all = read_csv(paths.annotations_dir(last_finetune) / "S_all.csv", required=["image_id"])
    metrics |= {f"share_in_S.{f}": v for f, v in factor_shares(factors_of_pool, s_all["image_id"]).items()}
    # read back as pandas parses the file (not as written): the published ratio's last digits depend on it
    precision = pd.read_json(paths.METRICS / "mining_precision.json", typ="series")
    metrics["precision_ratio_vs_random"] = (
        float(precision["mad"] / precision["random"]) if precision["random"] else None
    )
    metrics |= study_margins(
        read_json(STUDY) if STUDY.exists() else {}, read_json(STUDY_OPTIONS) if STUDY_OPTIONS.exists() else {}
    )
    metrics["aggregation.bias_rmse"] = _rater_bias_rmse(params)
    write_csv(paths.METRICS / "validity_eval_pool.csv", pd.DataFrame(rows))
    write_json(paths.METRICS / "validity.json", metrics)
    log.info(
        "D_eval corner mIoU %+.1f points from f_t^(0) to f_t^(%s); T0 drop %.1f points",
        metrics["corner_miou_gain"],
        last,
        metrics["t0_drop"],
    )


def _slices_recovery(params: Params, factors_of_pool: pd.Series) -> None:
    """metrics/slices.json: what the final round's top slices recover of the truth factors, and its bound."""
    final = max(params.rounds, key=int)
    m = read_csv(paths.mining_dir(final) / "M.csv", required=["image_id"])["image_id"]
    slices = read_csv(paths.slices_dir(final) / "slices.csv", required=["rule", "group_ids"])
    table = slice_table(
        read_csv(paths.POOL_ATTRIBUTES, required=["id"]).set_index("id"),
        PredictionStore(paths.target_predictions(final)).stats(),
        params.dataset.class_list().names,
    )
    out = {"round": int(final), **slice_recovery(slices, table, m, factors_of_pool, seed=params.seed)}
    write_json(paths.METRICS / "slices.json", out)
    log.info(
        "the final round's 10 top slices recover %d of %d truth factors (%s); rules chosen with the truth "
        "could isolate %d (%.1f for shuffled factors)",
        out["factors_recovered_top10"],
        out["factors"],
        out["recovered"],
        out["factors_describable_in_hindsight"],
        out["factors_describable_shuffled"],
    )


def _rater_bias_rmse(params: Params) -> float | None:
    """The rater model's bias error against the simulated annotators' planted biases; None when the raters are
    people."""
    if params.annotation.backend != "simulated":
        return None
    scores = pd.concat(
        [
            read_csv(paths.annotations_dir(k) / "scores.csv", required=["image_id", "annotator", "score"])
            for k in params.rounds
            if (paths.annotations_dir(k) / "scores.csv").exists()
        ]
    )
    names = annotator_names(params.annotation.annotators_per_task)
    planted = params.annotation.simulated.bias[: len(names)]  # annotator sim<n> has bias[n]
    return rater_bias_rmse(scores, names, planted)


def _t0(params: Params, round_key: str) -> float:
    """f_t^(i)'s T0 mIoU as the fine-tunes measured it, bit for bit what evaluate@i reports (so validity need
    not wait for the evaluations): fine-tune i measures f_t^(i) before and f_t^(i+1) after."""
    if round_key in params.finetunes:
        return float(read_json(paths.finetune_metrics(round_key))["t0_miou_before"])
    before = [key for key, spec in params.finetunes.items() if spec.next == round_key]
    if not before:
        raise ValueError("validity measures what fine-tuning changed, and params.yaml has no fine-tuning round")
    return float(read_json(paths.finetune_metrics(before[0]))["t0_miou_after"])
