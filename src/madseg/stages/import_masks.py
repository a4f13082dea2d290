"""import_masks@<round>: pull the pixel labels, decode them into VOC palette PNGs, and snapshot the export.

Stops if a task is not annotated yet. ``madseg pull --round <round>`` pulls again after corrections.
"""

from __future__ import annotations

import logging
import shutil

from madseg import paths
from madseg.annotation.backend import make_backend, prediction_maps
from madseg.annotation.tasks import effort
from madseg.config import Params
from madseg.io.atomic import read_json, write_json
from madseg.io.images import write_mask
from madseg.io.tables import write_csv

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    here = paths.annotations_dir(round_key)
    receipt = read_json(here / "pixel_export.json")
    classes = params.dataset.class_list()
    backend = make_backend(
        params.annotation,
        classes=classes,
        truth_dir=params.annotation.simulated.truth_dir,
        target_maps=prediction_maps(paths.target_predictions),
    )
    raw, table, masks = backend.import_pixel(receipt)
    # a fresh folder swapped in whole: no stale mask of an earlier pull survives; a failure keeps the old one
    staging = here / "masks.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for image, mask in sorted(masks.items()):
        write_mask(staging / f"{image}.png", mask, classes)
    shutil.rmtree(here / "masks", ignore_errors=True)
    staging.rename(here / "masks")
    write_json(here / "pixel_raw.json", raw)
    write_csv(here / "masks.csv", table)
    metrics = {
        "backend": backend.name,
        **{f"masks_{role}": int((table["role"] == role).sum()) for role in ("S", "T", "both")},
        **effort(table, int(receipt["task_count"]), "masks"),
    }
    write_json(paths.METRICS / "annotation" / f"pixel_round_{round_key}.json", metrics)
    log.info("round %s: %d masks imported from %s", round_key, len(masks), backend.name)
