"""One interface for the humans in the loop; ``annotation.backend`` in params.yaml picks the implementation.

* ``labelstudio``: a real Label Studio server (:class:`madseg.annotation.labelstudio.LabelStudioBackend`);
* ``simulated``: answers from the demo world's hidden truth (:class:`SimulatedBackend`), never silently: the
  backend and all its parameters are written into every receipt and snapshot.

Every backend has the same four calls, so the stages stay thin::

    receipt = backend.export_weak(round_key, items)  # items: image_id, path (the rater overlay)
    raw, scores = backend.import_weak(receipt)  # scores: tasks.SCORE_COLUMNS
    receipt = backend.export_pixel(round_key, items, pre)  # items: image_id, role, path, height, width
    raw, table, masks = backend.import_pixel(receipt)  # table: tasks.MASK_COLUMNS; masks: id -> (H, W) uint8

An export returns a JSON-able receipt (what was asked, and where); an import takes that receipt back and
raises :class:`~madseg.annotation.tasks.AnnotationIncomplete` if answers are missing, or
:class:`~madseg.annotation.tasks.AnnotationError` naming the task if one is malformed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from madseg.config import AnnotationParams
from madseg.labels import ClassList

from .simulated import HiddenTruth, simulate_ratings, true_miou
from .tasks import MASK_COLUMNS, check_receipt

TargetMaps = Callable[[str, Sequence[str]], Mapping[str, np.ndarray]]  # (round_key, ids) -> id -> (H, W) uint8


class AnnotationBackend(Protocol):
    name: str
    wants_preannotations: bool

    def export_weak(self, round_key: str, items: pd.DataFrame) -> dict[str, Any]: ...

    def import_weak(self, receipt: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]: ...

    def export_pixel(
        self, round_key: str, items: pd.DataFrame, preannotations: Mapping[str, np.ndarray]
    ) -> dict[str, Any]: ...

    def import_pixel(
        self, receipt: Mapping[str, Any]
    ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]: ...


class SimulatedBackend:
    """Simulated annotators (see madseg.annotation.simulated): nothing is stored but the snapshots."""

    name = "simulated"
    wants_preannotations = False

    def __init__(self, params: AnnotationParams, *, truth: HiddenTruth, target_maps: TargetMaps):
        self.params = params
        self.truth = truth
        self.target_maps = target_maps

    def _described(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "annotators_per_task": self.params.annotators_per_task,
            "simulated": _plain(dataclasses.asdict(self.params.simulated)),
        }

    def export_weak(self, round_key: str, items: pd.DataFrame) -> dict[str, Any]:
        ids = sorted(items["image_id"].tolist())
        return {
            **self._described(),
            "kind": "weak",
            "round": round_key,
            "task_count": len(ids),
            "annotations_per_task": self.params.annotators_per_task,
            "images": ids,
        }

    def import_weak(self, receipt: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        check_receipt(receipt, self.name, "weak")
        ids, round_key = list(receipt["images"]), str(receipt["round"])
        predictions = self.target_maps(round_key, ids)
        miou = true_miou(predictions, self.truth.masks(ids), self.truth.classes.num_classes)
        table = simulate_ratings(
            miou,
            self.truth.ood_ids() & set(ids),
            self.params.simulated,
            annotators=self.params.annotators_per_task,
            round_key=round_key,
        )
        answers = [{k: _json_value(v) for k, v in row.items()} for row in table.to_dict("records")]
        return {**self._described(), "receipt": dict(receipt), "answers": answers}, table

    def export_pixel(
        self, round_key: str, items: pd.DataFrame, preannotations: Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        items = items.sort_values("image_id")
        images = [{"image_id": r.image_id, "role": r.role} for r in items.itertuples(index=False)]
        return {
            **self._described(),
            "kind": "pixel",
            "round": round_key,
            "task_count": len(images),
            "annotations_per_task": 1,
            "images": images,
        }

    def import_pixel(self, receipt: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
        check_receipt(receipt, self.name, "pixel")
        roles = {r["image_id"]: r["role"] for r in receipt["images"]}
        masks = self.truth.masks(sorted(roles))
        table = pd.DataFrame(
            [(i, roles[i], "truth", float("nan")) for i in sorted(roles)], columns=MASK_COLUMNS
        ).astype({"lead_time_s": "float64"})
        raw = {
            **self._described(),
            "receipt": dict(receipt),
            "answers": "the hidden truth masks of the images",
        }
        return raw, table, masks


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


BACKENDS = ("simulated", "labelstudio")


def prediction_maps(store_of_round: Callable[[str], Path]) -> TargetMaps:
    """A TargetMaps reading a round's target predictions from the store at ``store_of_round(key)``."""
    from madseg.io.store import PredictionStore

    def read(round_key: str, ids: Sequence[str]) -> Mapping[str, np.ndarray]:
        return PredictionStore(store_of_round(round_key)).read_maps(list(ids))

    return read


def make_backend(
    params: AnnotationParams,
    *,
    classes: ClassList,
    truth_dir: str | Path | None = None,
    target_maps: TargetMaps | None = None,
    environ: Mapping[str, str] | None = None,
) -> AnnotationBackend:
    """The backend named by ``params.backend``.

    Args:
        truth_dir, target_maps: what the simulated annotators read (the world's hidden truth of D, and the
            round target's predictions); unused by Label Studio.
        environ: where LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY are looked up first (default os.environ), then
            ``params.labelstudio.env_file``.
    """
    if params.backend == "simulated":
        if truth_dir is None or target_maps is None:
            raise ValueError("the simulated backend needs truth_dir and target_maps")
        return SimulatedBackend(params, truth=HiddenTruth(truth_dir, classes), target_maps=target_maps)
    if params.backend == "labelstudio":
        from .labelstudio import LabelStudioBackend, server_address

        ls = params.labelstudio
        url, token = server_address(ls.env_file, environ)
        return LabelStudioBackend(
            url,
            token,
            classes=classes,
            annotators_per_task=params.annotators_per_task,
            project_prefix=ls.project_prefix,
            batch_size=ls.batch_size,
            document_root=ls.document_root,
        )
    raise ValueError(f"unknown annotation backend {params.backend!r}; valid backends: {list(BACKENDS)}")
