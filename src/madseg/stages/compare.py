"""compare: a MAD competition between two models on a pool (`madseg compare A B --pool ... --name N`).

Writes ``<out>/{a,b}/`` (both models' sharded predictions), ``<out>/M.csv`` (the competition set),
``<out>/pixel_export.json`` (the labelling receipt), ``<out>/per_image.csv`` and ``metrics/compare/<name>.json``.
A rerun reuses finished prediction shards and an existing receipt, so with Label Studio the second call, after
the images are labelled, only imports and scores.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from madseg import paths
from madseg.annotation.backend import make_backend
from madseg.annotation.tasks import AnnotationIncomplete
from madseg.compare import competition_set, score_competition
from madseg.config import Params
from madseg.inference import predict_model
from madseg.io.atomic import read_json, write_json
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.io.voc import iter_masks
from madseg.mining import area_bands
from madseg.stops import AnswersIncomplete

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def pool_index(pool: Path) -> pd.DataFrame:
    """The pool as (id, path) sorted by id: an index CSV (id, path) or a folder of images (id = the path below
    the folder without suffix, '/' kept)."""
    if pool.is_file():
        index = read_csv(pool, required=["id", "path"])
    elif pool.is_dir():
        files = sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{pool}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        index = pd.DataFrame({"id": [str(p.relative_to(pool).with_suffix("")) for p in files],
                              "path": [str(p) for p in files]})  # fmt: skip
    else:
        raise FileNotFoundError(f"{pool}: no such pool (an index CSV with id,path or a folder of images)")
    if index["id"].duplicated().any():
        raise ValueError(f"{pool}: repeated image ids, e.g. {index['id'][index['id'].duplicated()].iloc[0]}")
    return index[["id", "path"]].sort_values("id").reset_index(drop=True)


def run(
    params: Params,
    *,
    model_a: Path,
    model_b: Path,
    pool: Path,
    name: str,
    n: int,
    truth_dir: Path | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> dict:
    """Run (or resume) the competition; returns the scores written to metrics/compare/<name>.json."""
    if names[0] == names[1]:
        raise ValueError(f"the two models need different names, got {names[0]!r} twice")
    torch.set_num_threads(params.infer.threads)
    classes = params.dataset.class_list()
    out = Path("data/compare") / name
    index = pool_index(pool)
    stores = {}
    for label, source in zip(names, (model_a, model_b), strict=True):
        stores[label] = PredictionStore(out / label)
        predict_model(source, index, stores[label], model_name=label, classes=classes, infer_params=params.infer,
                      device=params.device, ray_params=params.ray)  # fmt: skip
    bands = area_bands(  # the same S0 area bands as mining
        iter_masks(params.dataset.voc_root, params.dataset.train_split, classes),
        classes, params.mining.area_quantiles, params.mining.area_overrides,
    )  # fmt: skip
    m = competition_set(
        stores[names[0]].iter_shards(), stores[names[1]].iter_shards(), bands, classes, n=n,
        distance=params.mining.distance, b_name=names[1],
    )  # fmt: skip
    write_csv(out / "M.csv", m)
    log.info("%s: %d images where %s and %s disagree most", name, len(m), *names)
    wanted = m["image_id"].tolist()
    maps_a, maps_b = stores[names[0]].read_maps(wanted), stores[names[1]].read_maps(wanted)

    backend = make_backend(
        params.annotation, classes=classes, truth_dir=truth_dir,
        target_maps=lambda _round, ids: stores[names[0]].read_maps(list(ids)),
    )  # fmt: skip
    receipt_path = out / "pixel_export.json"
    # predicted maps have each image's own size (pool inference resizes back), so nothing is decoded again
    items = m[["image_id"]].assign(
        role="T",
        path=m["image_id"].map(dict(zip(index["id"], index["path"], strict=True))),
        height=[maps_a[i].shape[0] for i in wanted],
        width=[maps_a[i].shape[1] for i in wanted],
    )
    receipt = read_json(receipt_path) if receipt_path.exists() else None
    if receipt is None or [r["image_id"] for r in receipt["images"]] != wanted:
        # the labellers start from empty masks: the truth must not be anchored to either contestant
        receipt = backend.export_pixel(f"compare-{name}", items, {})
        write_json(receipt_path, receipt)
    try:
        _, _, labels = backend.import_pixel(receipt)
    except AnnotationIncomplete as err:  # an expected stop: a message and exit code 3, not a traceback
        raise AnswersIncomplete(f"{name}: {err.remaining} of {len(m)} images still need labels at {err.url}; "
                                "label them, then run the same command again.") from None  # fmt: skip
    result = score_competition(
        wanted, maps_a, maps_b, labels, classes, names=names,
        n_boot=params.evaluation.bootstrap, seed=params.evaluation.seed,
    )  # fmt: skip
    write_csv(out / "per_image.csv", result.per_image)
    scores = {**result.scores, "models": {names[0]: str(model_a), names[1]: str(model_b)},
              "pool": str(pool), "n_per_group": n}  # fmt: skip
    write_json(paths.METRICS / "compare" / f"{name}.json", scores)
    log.info("%s: mIoU on the competition set %s %.3f vs %s %.3f -> %s",
             name, names[0], scores[f"{names[0]}.miou"], names[1], scores[f"{names[1]}.miou"],
             scores["winner"])  # fmt: skip
    return scores
