"""export_pixel_tasks@<round>: one brush task per image of S^(i+1) ∪ T^(i+1); S-only tasks start from
f_t^(i)'s prediction, T (and both) start empty so the test truth is not anchored to the model it judges."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from madseg import paths
from madseg.annotation.backend import make_backend, prediction_maps
from madseg.annotation.tasks import pixel_roles
from madseg.config import Params
from madseg.io.atomic import write_json
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    here = paths.annotations_dir(round_key)
    s_ids = read_csv(here / "S.csv", required=["image_id"])["image_id"].tolist()  # empty in the last round
    t_ids = read_csv(here / "T.csv", required=["image_id"])["image_id"].tolist()
    roles = pixel_roles(s_ids, t_ids)
    pool = read_csv(paths.POOL_INDEX, required=["id", "path", "width", "height"])
    items = roles.merge(
        pool.rename(columns={"id": "image_id"})[["image_id", "path", "width", "height"]],
        on="image_id",
        how="left",
    )
    unknown = items.loc[items["path"].isna(), "image_id"].tolist()
    if unknown:
        raise ValueError(f"{len(unknown)} images of S/T are not in {paths.POOL_INDEX}: {unknown[:5]}")
    items = items.astype({"width": "int64", "height": "int64"})
    backend = make_backend(
        params.annotation,
        classes=params.dataset.class_list(),
        truth_dir=params.annotation.simulated.truth_dir,
        target_maps=prediction_maps(paths.target_predictions),
    )
    pre: dict[str, np.ndarray] = {}
    s_only = items[items["role"] == "S"]
    if backend.wants_preannotations and len(s_only):
        maps = PredictionStore(paths.target_predictions(round_key)).read_maps(s_only["image_id"].tolist())
        for row in s_only.itertuples(index=False):
            m = maps[row.image_id]
            if m.shape != (
                row.height,
                row.width,
            ):  # a model run at another resolution: labels resize by nearest
                m = np.asarray(Image.fromarray(m).resize((row.width, row.height), Image.NEAREST))
            pre[row.image_id] = m
    receipt = backend.export_pixel(round_key, items, pre)
    write_json(here / "pixel_export.json", receipt)
    log.info(
        "round %s: %d pixel tasks (%s) exported to %s",
        round_key,
        len(items),
        items["role"].value_counts().sort_index().to_dict(),
        backend.name,
    )
