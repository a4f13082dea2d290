"""`madseg compare A B --pool ... --name N`: a MAD competition between any two models (the source paper's
Appendix A). A command, not a DVC stage.

The two models predict a pool of unlabelled images; the images on which they disagree most (per foreground
class and direction, inside the class's area band, exactly as in mining: one model plays the target, the other
the only competitor) are labelled through the annotation backend, and each model is scored there. The model
that keeps a higher mIoU on the other's worst disagreements is the better one — no fixed test set needed.

Writes ``data/compare/<name>/{a,b}/`` (both models' sharded predictions), ``M.csv`` (the competition set),
``pixel_export.json`` (the labelling receipt) and ``per_image.csv`` there, and ``metrics/compare/<name>.json``.
The command is resumable: finished prediction shards and an existing receipt are reused, so with Label Studio
the first call exports the pixel tasks and stops; the next call, once people have labelled them, scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from madseg import paths
from madseg.annotation.backend import make_backend
from madseg.annotation.tasks import AnnotationIncomplete
from madseg.backends import predict_model, s0_area_bands
from madseg.config import Params
from madseg.evaluation import bootstrap_miou_difference, per_image_confusions, score_set
from madseg.io.atomic import read_json, write_json
from madseg.io.shard import Shard
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv, write_csv
from madseg.labels import ClassList
from madseg.metrics import miou_from_batch
from madseg.mining import mine_mad, summarize_m
from madseg.stops import AnswersIncomplete

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def competition_set(
    a_shards: Iterable[Shard],
    b_shards: Iterable[Shard],
    bands: np.ndarray,
    classes: ClassList,
    *,
    n: int,
    distance: str = "miou",
    b_name: str = "b",
) -> pd.DataFrame:
    """The images on which models a and b disagree most: per (class, direction) the top-n by distance.

    Args:
        a_shards, b_shards: both models' prediction shards over the same ids, in store order.
        bands: (K, 2) area bands [p_k, q_k] (see madseg.mining.area_bands).
        n: images per (class, direction) group.
        b_name: b's name in the ``competitor`` column.
    Returns:
        One row per image (madseg.mining.M_COLUMNS), sorted by image_id; direction 't' groups were partitioned
        by a's map, 'c' groups by b's. Images on which both maps agree exactly are dropped: labelling them
        cannot separate the two models.
    """
    m = summarize_m(mine_mad(a_shards, {b_name: b_shards}, bands, classes, n3=n, distance=distance))
    return m[m["best_distance"] > 0].reset_index(drop=True)


@dataclass(frozen=True)
class CompetitionResult:
    scores: dict[str, float | int | str]
    per_image: pd.DataFrame  # image_id, miou_a, miou_b


def score_competition(
    ids: Sequence[str],
    a_maps: Mapping[str, np.ndarray],
    b_maps: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    classes: ClassList,
    *,
    names: tuple[str, str] = ("a", "b"),
    n_boot: int = 1000,
    seed: int = 0,
) -> CompetitionResult:
    """Score both models on the labelled competition set.

    Args:
        ids: the competition images (N).
        a_maps, b_maps, labels: id -> (H, W) uint8 maps (labels: 255 = ignore).
        names: how the two models are called in the keys.
    Returns:
        scores: ``<name>.miou``, ``<name>.image_miou``, ``<name>.miou_ci_low/high`` for both models;
        ``miou_difference`` (a - b, points of mIoU x 100) with its paired 95 % bootstrap interval over images;
        ``wins.<name>`` (images where that model's per-image mIoU is higher), ``ties``, ``n_images`` and
        ``winner`` (the name with the higher mIoU, or 'tie').
        per_image: each image's mIoU under both models.
    """
    if len(ids) == 0:
        raise ValueError("the competition set is empty: the two models never disagree inside the area bands")
    k = classes.num_classes
    cms = {
        names[0]: per_image_confusions(a_maps, labels, ids, k),
        names[1]: per_image_confusions(b_maps, labels, ids, k),
    }
    scores: dict[str, float | int | str] = {"n_images": len(ids)}
    for name, cm in cms.items():
        s = score_set(cm, classes.names, n_boot=n_boot, seed=seed)
        scores |= {f"{name}.{key}": s[key] for key in ("miou", "image_miou", "miou_ci_low", "miou_ci_high")}
    per_image = pd.DataFrame(
        {
            "image_id": list(ids),
            f"miou_{names[0]}": miou_from_batch(cms[names[0]]),
            f"miou_{names[1]}": miou_from_batch(cms[names[1]]),
        }
    )
    diff = per_image[f"miou_{names[0]}"] - per_image[f"miou_{names[1]}"]
    scores[f"wins.{names[0]}"] = int((diff > 0).sum())
    scores[f"wins.{names[1]}"] = int((diff < 0).sum())
    scores["ties"] = int((diff == 0).sum())
    scores["miou_difference"] = 100 * (float(scores[f"{names[0]}.miou"]) - float(scores[f"{names[1]}.miou"]))
    low, high = bootstrap_miou_difference(cms[names[0]], cms[names[1]], n_boot, seed)
    scores["miou_difference_ci_low"], scores["miou_difference_ci_high"] = 100 * low, 100 * high
    d = scores["miou_difference"]
    scores["winner"] = names[0] if d > 0 else names[1] if d < 0 else "tie"
    return CompetitionResult(scores=scores, per_image=per_image)


def pool_index(pool: Path) -> pd.DataFrame:
    """The pool as (id, path) sorted by id: an index CSV (id, path) or a folder of images (id = the path below
    the folder without suffix, '/' kept)."""
    if pool.is_file():
        index = read_csv(pool, required=["id", "path"])
    elif pool.is_dir():
        files = sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{pool}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        index = pd.DataFrame(
            {"id": [str(p.relative_to(pool).with_suffix("")) for p in files], "path": [str(p) for p in files]}
        )
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
        predict_model(
            source,
            index,
            stores[label],
            model_name=label,
            classes=classes,
            infer_params=params.infer,
            device=params.device,
            ray_params=params.ray,
            policy=params.models.input_policy.overrides(),
        )
    bands, _ = s0_area_bands(params.dataset, params.mining, classes)  # the same area bands as mining
    m = competition_set(
        stores[names[0]].iter_shards(),
        stores[names[1]].iter_shards(),
        bands,
        classes,
        n=n,
        distance=params.mining.distance,
        b_name=names[1],
    )
    write_csv(out / "M.csv", m)
    log.info("%s: %d images where %s and %s disagree most", name, len(m), *names)
    wanted = m["image_id"].tolist()
    maps_a, maps_b = stores[names[0]].read_maps(wanted), stores[names[1]].read_maps(wanted)

    backend = make_backend(
        params.annotation,
        classes=classes,
        truth_dir=truth_dir,
        target_maps=lambda _round, ids: stores[names[0]].read_maps(list(ids)),
    )
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
        raise AnswersIncomplete(
            f"{name}: {err.remaining} of {len(m)} images still need labels at {err.url}; "
            "label them, then run the same command again."
        ) from None
    result = score_competition(
        wanted,
        maps_a,
        maps_b,
        labels,
        classes,
        names=names,
        n_boot=params.evaluation.bootstrap,
        seed=params.evaluation.seed,
    )
    write_csv(out / "per_image.csv", result.per_image)
    scores = {
        **result.scores,
        "models": {names[0]: str(model_a), names[1]: str(model_b)},
        "pool": str(pool),
        "n_per_group": n,
    }
    write_json(paths.METRICS / "compare" / f"{name}.json", scores)
    log.info(
        "%s: mIoU on the competition set %s %.3f vs %s %.3f -> %s",
        name,
        names[0],
        scores[f"{names[0]}.miou"],
        names[1],
        scores[f"{names[1]}.miou"],
        scores["winner"],
    )
    return scores
