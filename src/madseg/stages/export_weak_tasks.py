"""export_weak_tasks@<round>: a rating task per image of M^(i+1), showing it with f_t^(i)'s prediction."""

from __future__ import annotations

import logging

import pandas as pd

from madseg import paths
from madseg.annotation.backend import make_backend, prediction_maps
from madseg.config import Params
from madseg.io.atomic import write_json
from madseg.io.tables import read_csv

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    mining = paths.mining_dir(round_key)
    ids = sorted(set(read_csv(mining / "M.csv", required=["image_id"])["image_id"]))
    # the rater overlay (image | target prediction, never a competitor's) is drawn by the mining stage
    overlays = [mining / "overlays" / "rater" / f"{i}.png" for i in ids]
    missing = [str(p) for p in overlays if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} rater overlays missing, e.g. {missing[:3]}; re-run mine@{round_key}")
    backend = make_backend(
        params.annotation,
        classes=params.dataset.class_list(),
        truth_dir=params.annotation.simulated.truth_dir,
        target_maps=prediction_maps(paths.target_predictions),
    )
    receipt = backend.export_weak(round_key, pd.DataFrame({"image_id": ids, "path": [str(p) for p in overlays]}))
    write_json(paths.annotations_dir(round_key) / "weak_export.json", receipt)
    log.info("round %s: %d rating tasks exported to %s", round_key, len(ids), backend.name)
