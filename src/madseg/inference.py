"""Batched, streaming, resumable local prediction of an image index into a sharded PredictionStore.

This is the local backend; :mod:`madseg.backends` chooses between it and the Ray one (:mod:`madseg.cluster`),
which reuses the shard building, fingerprint and resume rules defined here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from madseg.io.images import read_rgb
from madseg.io.shard import Shard, area_fractions
from madseg.io.store import PredictionStore, ShardedStore, ids_digest
from madseg.labels import ClassList
from madseg.metrics import confusion_matrix, mean_iou
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import Prediction, TorchPredictor, class_lut, load_predictor
from madseg.models.views import ViewPredictor

log = logging.getLogger(__name__)


class _Images(Dataset):
    """Decodes and preprocesses images in DataLoader workers: (tensor (3, h, w), (H, W))."""

    def __init__(self, paths: Sequence[str], predictor):
        self.paths, self.predictor = list(paths), predictor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = read_rgb(self.paths[i])
        if not self.predictor.needs_pixels:
            return torch.zeros(0), image.shape[:2]
        return self.predictor.prepare(image), image.shape[:2]


def _collate(items):
    # one stacked tensor crosses from the worker in one piece; sizes that differ (aspect-keeping policies)
    # travel as a list, and the predictor batches equal shapes
    tensors, shapes = [t for t, _ in items], [s for _, s in items]
    same = all(t.shape == tensors[0].shape for t in tensors)
    return (torch.stack(tensors) if same else tensors), shapes


def fingerprint(
    model_path: str | Path, ids: Sequence[str], policy: InputPolicy | None = None, view: str | None = None
) -> str:
    """Identifies a prediction run: the model's bytes, the pool's ids, the input policy and the view (if any)."""
    h = hashlib.sha256()
    model_path = Path(model_path)
    files = sorted(p for p in model_path.rglob("*") if p.is_file()) if model_path.is_dir() else [model_path]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(ids_digest(ids).encode())
    h.update((policy or InputPolicy()).fingerprint().encode())
    if view is not None:
        h.update(f"view={view}".encode())
    return h.hexdigest()


def check_index(index: pd.DataFrame) -> pd.Series:
    """The pool index's id column, refusing an index that is not sorted by id with unique ids (stores line up
    by it). A column, not a list: a million ids as Python strings would cost ~85 MB more."""
    ids = index["id"].reset_index(drop=True)
    if not (ids.is_monotonic_increasing and ids.is_unique):
        raise ValueError("the pool index must be sorted by id with unique ids")
    return ids


def pending_shards(store: ShardedStore, index: pd.DataFrame, fingerprint: str, shard_size: int) -> list[int]:
    """The shards of ``index`` that ``store`` does not hold finished (same fingerprint, intact bytes)."""
    ids = index["id"]
    return [
        s
        for s in range(-(-len(index) // shard_size))
        if not store.shard_is_done(s, fingerprint, ids.iloc[s * shard_size : (s + 1) * shard_size].tolist())
    ]


def build_shard(ids: Sequence[str], predictions: Sequence[Prediction], classes: ClassList) -> Shard:
    """One shard from its batches' predictions, in order."""
    maps = [m for p in predictions for m in p.maps]
    return Shard(
        ids=list(ids),
        maps=maps,
        area=area_fractions(maps, classes.num_classes).astype(np.float32),
        entropy=np.concatenate([p.entropy for p in predictions]),
        maxprob=np.concatenate([p.maxprob for p in predictions]),
    )


def predict_pool(
    predictor,
    index: pd.DataFrame,
    store: PredictionStore,
    *,
    model_name: str,
    classes: ClassList,
    fingerprint: str,
    shard_size: int,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> int:
    """Predict every image of ``index`` (columns id, path; sorted by id) into ``store``, shard by shard.

    Finished shards (sidecar present, same fingerprint, intact bytes) are kept, so a killed run resumes
    where it stopped and ends with the same bytes as an uninterrupted one. Batches are ``batch_size``
    consecutive images of a shard (the Ray backend cuts the same batches). Returns the shards computed.
    """
    ids = check_index(index)
    computed = pool_pass(
        predictor,
        index,
        store,
        build=lambda shard_ids, predictions: build_shard(shard_ids, predictions, classes),
        desc=f"infer {model_name}",
        fingerprint=fingerprint,
        shard_size=shard_size,
        batch_size=batch_size,
        workers=workers,
        pin_memory=pin_memory,
    )
    store.finalize(model=model_name, classes=classes.names, shard_size=shard_size, ids=ids, fingerprint=fingerprint)
    return computed


def pool_pass(
    predictor,
    index: pd.DataFrame,
    store: ShardedStore,
    *,
    build: Callable[[list[str], list], Any],
    desc: str,
    fingerprint: str,
    shard_size: int,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> int:
    """The local pool pass behind :func:`predict_pool` (and the embeddings): every pending shard of ``index``
    read in ``batch_size`` batches, each batch's ``predictor.infer`` result (or ``predict`` of precomputed
    predictions) collected in order, ``build(shard ids, results)`` written as the shard. Returns the shards
    computed; the caller finalizes the store."""
    check_index(index)
    todo = pending_shards(store, index, fingerprint, shard_size)
    for s in tqdm(todo, desc=desc, unit="shard"):
        rows = index.iloc[s * shard_size : (s + 1) * shard_size]
        loader = DataLoader(
            _Images(rows["path"].tolist(), predictor),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
        )
        results, offset = [], 0
        for batch, shapes in loader:
            batch_ids = rows["id"].iloc[offset : offset + len(shapes)].tolist()
            offset += len(shapes)
            if predictor.needs_pixels:
                results.append(predictor.infer(batch, shapes))
            else:
                results.append(predictor.predict([None] * len(batch_ids), batch_ids))
        store.write_shard(s, build(rows["id"].tolist(), results), fingerprint)
    return len(todo)


def load_pool_predictor(
    source: str | Path,
    *,
    classes: ClassList,
    device: torch.device,
    batch_size: int,
    view: str | None = None,
    policy: Mapping[str, Any] | None = None,
):
    """The predictor of the model at ``source`` (a checkpoint or a competitor folder) on ``device``, seeing every
    image through ``view`` if given (:mod:`madseg.models.views`), with params' input ``policy`` over the model's."""
    predictor = load_predictor(source, classes=classes, device=device, batch_size=batch_size, policy=policy)
    return predictor if view is None else ViewPredictor(predictor, view)


def predict_images(predictor, images: Sequence[np.ndarray], ids: Sequence[str], batch_size: int = 64) -> Prediction:
    """Predict a list of in-memory images (any sizes) in batches."""
    maps, entropy, maxprob = [], [], []
    for start in range(0, len(images), batch_size):
        pred = predictor.predict(images[start : start + batch_size], ids[start : start + batch_size])
        maps.extend(pred.maps)
        entropy.append(pred.entropy)
        maxprob.append(pred.maxprob)
    return Prediction(
        maps,
        np.concatenate(entropy) if entropy else np.zeros(0),
        np.concatenate(maxprob) if maxprob else np.zeros(0),
    )


def evaluate_model(model: torch.nn.Module, images, masks, *, meta: dict, num_classes: int, device=None) -> float:
    """Dataset mIoU of a torch model on (images, masks), with the checkpoint's input policy as in pool inference."""
    from madseg.labels import make_class_list

    predictor = TorchPredictor(
        model,
        policy=InputPolicy.from_meta(meta),
        mean=meta["mean"],
        std=meta["std"],
        lut=class_lut(meta["classes"], make_class_list(meta["classes"]), None),
        device=device,
        tta=meta.get("tta"),
    )
    pred = predict_images(predictor, images, [""] * len(images))
    cm = sum(confusion_matrix(t, p, num_classes) for t, p in zip(masks, pred.maps, strict=True))
    return mean_iou(cm)


def split_miou(predictor, dataset, classes: ClassList, infer_params) -> float:
    """Dataset mIoU of ``predictor`` on the VOC split T0 (``dataset.val_split``)."""
    predictions, truth, ids = predict_voc_split(predictor, dataset, classes, infer_params)
    return mean_iou(sum(confusion_matrix(truth[i], predictions[i], classes.num_classes) for i in ids))


def predict_voc_split(predictor, dataset, classes: ClassList, infer_params) -> tuple[dict, dict, list[str]]:
    """Predict a VOC split (T0 by default) -> (predictions by id, truth by id, ids)."""
    from madseg.io.voc import read_split

    split = read_split(dataset, dataset.val_split, classes)
    pred = predict_images(predictor, split.images, split.ids, infer_params.batch_size)
    return (
        dict(zip(split.ids, pred.maps, strict=True)),
        dict(zip(split.ids, split.masks, strict=True)),
        split.ids,
    )
