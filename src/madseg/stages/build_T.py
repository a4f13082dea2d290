"""build_T@<round>: the unbiased test set T^(i+1), a seeded capped sample of M in its drawn order."""

from __future__ import annotations

import logging

from madseg import paths
from madseg.config import Params
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.selection import build_test_set, main_class

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    here = paths.annotations_dir(round_key)
    mos = read_csv(here / "mos.csv", required=["image_id", "mos", "vetoed"])
    trained_on = read_csv(paths.annotations_dir(params.rounds[round_key].prev) / "S_all.csv", required=["image_id"])
    stats = PredictionStore(paths.target_predictions(round_key)).stats()
    stats = stats[stats["id"].isin(set(mos["image_id"]))]
    classes = params.dataset.class_list()
    test_set = build_test_set(
        mos,
        main_class(stats, classes.names),
        size=params.selection.t_size,
        t_cap=params.selection.t_cap,
        seed=params.selection.seed + int(round_key),
        exclude=trained_on["image_id"],
    )
    write_csv(here / "T.csv", test_set)
    log.info(
        "round %s: T has %d images, per class %s",
        round_key,
        len(test_set),
        test_set["main_class"].value_counts().sort_index().to_dict(),
    )
