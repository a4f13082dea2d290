"""import_scores@<round>: pull, validate and snapshot the ratings; stops if annotation is incomplete.

Once it has succeeded the stage is up to date like any other; after annotators change answers in Label Studio,
``madseg pull --round <round>`` pulls again and reruns only what depends on the answers (madseg.pull).
"""

from __future__ import annotations

import logging

from madseg import paths
from madseg.annotation.backend import make_backend, prediction_maps
from madseg.annotation.tasks import effort
from madseg.config import Params
from madseg.io.atomic import read_json, write_json
from madseg.io.tables import write_csv

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    here = paths.annotations_dir(round_key)
    receipt = read_json(here / "weak_export.json")
    backend = make_backend(
        params.annotation,
        classes=params.dataset.class_list(),
        truth_dir=params.annotation.simulated.truth_dir,
        target_maps=prediction_maps(paths.target_predictions),
    )
    # raises before anything is written if answers are missing or malformed
    raw, scores = backend.import_weak(receipt)
    write_json(here / "weak_raw.json", raw)
    write_csv(here / "scores.csv", scores)
    metrics = {
        "backend": backend.name,
        "images": int(receipt["task_count"]),
        "vetoed_images": int(scores.loc[scores["out_of_domain"], "image_id"].nunique()),
        **effort(scores, int(receipt["task_count"]) * int(receipt["annotations_per_task"]), "ratings"),
    }
    write_json(paths.METRICS / "annotation" / f"weak_round_{round_key}.json", metrics)
    log.info(
        "round %s: %d ratings of %d images imported from %s",
        round_key,
        len(scores),
        metrics["images"],
        backend.name,
    )
