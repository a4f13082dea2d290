"""Pure helpers for annotation tasks: labeling configs with instructions, task payloads, and the parsing and
validation of exported annotations into tidy tables. No IO, no server: the backends call these.

An exported task is Label Studio's JSON export format: ``{"id", "data": {...}, "annotations": [{"id",
"completed_by", "result", "was_cancelled", "lead_time", ...}], "predictions": [...]}``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from madseg.annotation.brush import IGNORE_LABEL, label_names, results_to_mask
from madseg.labels import IGNORE_INDEX, ClassList
from madseg.stops import AnswersIncomplete

LEVELS: tuple[str, ...] = ("bad", "poor", "fair", "good", "excellent")  # score 1..5
OOD_CHOICE = "out of domain"
RATING_FROM = "rating"
OOD_FROM = "ood"
BRUSH_FROM = "label"
IMAGE_TO = "image"
ROLES = ("S", "T", "both")

SCORE_COLUMNS = ["image_id", "annotator", "score", "out_of_domain", "lead_time_s"]
MASK_COLUMNS = ["image_id", "role", "annotator", "lead_time_s"]

LEVEL_HINTS = {
    "bad": "the prediction is mostly wrong: the main objects are missed, or labelled as the wrong class",
    "poor": "the main object is found but large parts are wrong (wrong class over big areas, big misses)",
    "fair": "right classes, but the shapes are clearly off (bleeding, holes, a missed smaller object)",
    "good": "right classes and shapes, with small errors at the boundaries",
    "excellent": "as good as a careful human would draw it",
}

WEAK_INSTRUCTIONS = (
    "<h3>Rate the segmentation</h3>"
    "<p>Each task shows a photo (left) and the model's segmentation of it (right, one colour per class). "
    "Rate how well the segmentation matches what is really in the photo. Judge the segmentation, not the "
    "photo's quality, and do not guess what other annotators would say.</p><ul>"
    + "".join(f"<li><b>{i + 1} {name}</b>: {html.escape(LEVEL_HINTS[name])}</li>" for i, name in enumerate(LEVELS))
    + "</ul><p>Tick <b>out of domain</b> (and still give a rating) when the image is not a natural scene the "
    "model is meant for: none of the classes could appear in it, or it is not a photo of a scene at all "
    "(a drawing, a screenshot, a texture, noise, a blank frame). One out-of-domain vote removes the image "
    "from the test set and from training. Do not skip tasks: a skipped task counts as not done.</p>"
)

PIXEL_INSTRUCTIONS = (
    "<h3>Paint every object, PASCAL VOC style</h3>"
    "<p>Paint each object with its class. Unpainted pixels are <b>background</b>. "
    "Some tasks start from a model's prediction: correct it (paint over wrong parts with the right class, or "
    "with <b>background</b> to erase). Others start empty: paint from scratch.</p><ul>"
    "<li>Where regions overlap, the one painted <b>last</b> wins.</li>"
    f"<li>Paint <b>{IGNORE_LABEL}</b> (VOC's void) over a thin band along object boundaries you cannot place "
    "precisely, and over objects or parts you cannot identify; these pixels are not scored.</li>"
    "<li>Occluded parts are not painted: label what is visible. An object behind glass is labelled.</li>"
    "<li>Label every instance of a class, also small and truncated ones.</li></ul>"
)


class AnnotationError(ValueError):
    """An exported annotation is malformed or unexpected; the message names the task."""


class AnnotationIncomplete(AnswersIncomplete):
    """Not every task has its required annotations yet; the message says how many remain and where."""

    def __init__(
        self,
        message: str,
        *,
        remaining: int | None = None,
        url: str | None = None,
        pending: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.remaining = remaining
        self.url = url
        self.pending = list(pending)  # image ids of the tasks that still need answers


def weak_label_config() -> str:
    """The rating interface: the overlay, a required 5-level choice (stored as "1".."5"), an ood flag."""
    choices = "\n".join(
        f'    <Choice value="{name}" alias="{i + 1}" hint="{html.escape(LEVEL_HINTS[name], quote=True)}"/>'
        for i, name in enumerate(LEVELS)
    )
    return (
        "<View>\n"
        '  <Header value="How good is the segmentation (right) of this image (left)?"/>\n'
        f'  <Image name="{IMAGE_TO}" value="$image" zoom="true"/>\n'
        f'  <Choices name="{RATING_FROM}" toName="{IMAGE_TO}" choice="single-radio" required="true" '
        'showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <Choices name="{OOD_FROM}" toName="{IMAGE_TO}" choice="multiple">\n'
        f'    <Choice value="{OOD_CHOICE}" hint="not a scene the model is meant for"/>\n'
        "  </Choices>\n"
        "</View>\n"
    )


def pixel_label_config(classes: ClassList) -> str:
    """The mask interface: BrushLabels with every class in its palette colour, plus the ignore label."""
    labels = []
    for i, name in enumerate(label_names(classes)):
        r, g, b = (int(v) for v in classes.palette[255 if name == IGNORE_LABEL else i])
        labels.append(f'    <Label value="{html.escape(name, quote=True)}" background="#{r:02x}{g:02x}{b:02x}"/>')
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_TO}" value="$image" zoom="true" zoomControl="true"/>\n'
        f'  <BrushLabels name="{BRUSH_FROM}" toName="{IMAGE_TO}">\n'
        + "\n".join(labels)
        + "\n  </BrushLabels>\n</View>\n"
    )


def local_file_url(relative_path: str) -> str:
    """The task URL of a file served by the local-files storage (path relative to the document root)."""
    return f"/data/local-files/?d={relative_path}"


def weak_task(image_id: str, url: str, round_key: str) -> dict[str, Any]:
    return {"data": {"image": url, "image_id": image_id, "round": round_key}}


def pixel_task(
    image_id: str, url: str, round_key: str, role: str, preannotation: list[dict] | None, model_version: str
) -> dict[str, Any]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r} for image {image_id}")
    task: dict[str, Any] = {"data": {"image": url, "image_id": image_id, "round": round_key, "role": role}}
    if preannotation is not None:
        task["predictions"] = [{"model_version": model_version, "result": preannotation}]
    return task


def pixel_roles(s_ids: Sequence[str], t_ids: Sequence[str]) -> pd.DataFrame:
    """One row per distinct image, role S, T or both (an image in both is labelled once); sorted by id."""
    s, t = set(s_ids), set(t_ids)
    ids = sorted(s | t)
    roles = ["both" if i in s and i in t else ("S" if i in s else "T") for i in ids]
    return pd.DataFrame({"image_id": ids, "role": roles})


# ------------------------------------------------------------------------------------------ parsing exports
@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    pending: list[str] = field(default_factory=list)  # image ids still short of answers, sorted

    @property
    def remaining(self) -> int:
        return self.total - self.done


def _task_image_id(task: Mapping[str, Any]) -> str:
    image = (task.get("data") or {}).get("image_id")
    if not isinstance(image, str) or not image:
        raise AnnotationError(f"task {task.get('id')}: no image_id in its data ({task.get('data')})")
    return image


def _submitted(task: Mapping[str, Any]) -> list[dict]:
    """A task's submitted annotations (skips and cancellations do not count), ordered by annotation id."""
    return sorted((a for a in task.get("annotations") or [] if not a.get("was_cancelled")), key=lambda a: a["id"])


def index_tasks(tasks: Sequence[Mapping[str, Any]], expected: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """Map image_id -> exported task for the ``expected`` images; tasks of other images are left out.

    Raises AnnotationError if an expected image has no task or two tasks hold the same image.
    """
    wanted = set(expected)
    by_id: dict[str, Mapping[str, Any]] = {}
    for task in tasks:
        image = _task_image_id(task)
        if image not in wanted:
            continue
        if image in by_id:
            raise AnnotationError(f"tasks {by_id[image].get('id')} and {task.get('id')} both hold image {image}")
        by_id[image] = task
    missing = sorted(wanted - set(by_id))
    if missing:
        raise AnnotationError(f"{len(missing)} exported images have no task in the project: {missing[:5]}")
    return by_id


def progress(tasks: Mapping[str, Mapping[str, Any]], required: int) -> Progress:
    """How many tasks have at least ``required`` submitted annotations."""
    pending = sorted(i for i, t in tasks.items() if len(_submitted(t)) < required)
    return Progress(total=len(tasks), done=len(tasks) - len(pending), pending=pending)


def _lead_time(annotation: Mapping[str, Any]) -> float:
    value = annotation.get("lead_time")
    return float(value) if isinstance(value, int | float) else float("nan")


def parse_weak(tasks: Mapping[str, Mapping[str, Any]], annotators: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Tidy ratings from exported rating tasks (image_id -> task).

    Args:
        annotators: Label Studio user id -> name (email); unknown ids are written as ``user<id>``.
    Returns:
        One row per submitted annotation with SCORE_COLUMNS: image_id str, annotator str, score int 1..5,
        out_of_domain bool, lead_time_s float (NaN if not reported); sorted by image_id, annotator.
    Raises:
        AnnotationError naming the task: a rating missing, not one of 1..5 / the level names, an unknown
        out-of-domain choice, or two annotations by one annotator.
    """
    aliases = {name: i + 1 for i, name in enumerate(LEVELS)} | {str(i + 1): i + 1 for i in range(len(LEVELS))}
    rows = []
    for image, task in sorted(tasks.items()):
        seen: set[str] = set()
        for ann in _submitted(task):
            where = f"task {task.get('id')} (image {image}), annotation {ann.get('id')}"
            who = _annotator(ann, annotators)
            if who in seen:
                raise AnnotationError(f"{where}: {who} annotated this task twice; delete one of the annotations")
            seen.add(who)
            ratings: list[str] = []
            ood: list[str] = []
            for r in ann.get("result") or []:
                if r.get("type") != "choices":
                    raise AnnotationError(f"{where}: unexpected result type {r.get('type')!r}")
                choices = (r.get("value") or {}).get("choices") or []
                if r.get("from_name") == RATING_FROM:
                    ratings.extend(choices)
                elif r.get("from_name") == OOD_FROM:
                    ood.extend(choices)
                else:
                    raise AnnotationError(f"{where}: unexpected control {r.get('from_name')!r}")
            if len(ratings) != 1 or ratings[0] not in aliases:
                raise AnnotationError(f"{where}: expected exactly one rating of {list(LEVELS)} (1..5), got {ratings}")
            if any(c not in (OOD_CHOICE, "ood") for c in ood):
                raise AnnotationError(f"{where}: unexpected out-of-domain choice {ood}")
            rows.append((image, who, aliases[ratings[0]], bool(ood), _lead_time(ann)))
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    return table.astype({"score": "int64", "out_of_domain": "bool", "lead_time_s": "float64"})


def parse_pixel(
    tasks: Mapping[str, Mapping[str, Any]],
    roles: Mapping[str, str],
    sizes: Mapping[str, tuple[int, int]],
    classes: ClassList,
    annotators: Mapping[int, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Masks from exported brush tasks (image_id -> task). Each task's latest submitted annotation counts.

    Args:
        roles: image_id -> S, T or both. sizes: image_id -> (height, width) of the image.
    Returns:
        (table with MASK_COLUMNS sorted by image_id, {image_id: (H, W) uint8 label map}).
    Raises:
        AnnotationError naming the task for a malformed region (see brush.results_to_mask) or a task with no
        submitted annotation.
    """
    rows = []
    masks: dict[str, np.ndarray] = {}
    for image, task in sorted(tasks.items()):
        submitted = _submitted(task)
        if not submitted:
            raise AnnotationError(f"task {task.get('id')} (image {image}): no submitted annotation")
        ann = submitted[-1]  # a correction is a newer annotation (or an update of this one)
        where = f"task {task.get('id')} (image {image}), annotation {ann.get('id')}"
        height, width = sizes[image]
        try:
            masks[image] = results_to_mask(
                ann.get("result") or [], classes, height=height, width=width, from_name=BRUSH_FROM, what=where
            )
        except ValueError as e:
            raise AnnotationError(str(e)) from None
        rows.append((image, roles[image], _annotator(ann, annotators), _lead_time(ann)))
    return pd.DataFrame(rows, columns=MASK_COLUMNS).astype({"lead_time_s": "float64"}), masks


def _annotator(annotation: Mapping[str, Any], annotators: Mapping[int, str] | None) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # some export options expand the user
        return str(who.get("email") or f"user{who.get('id')}")
    if annotators and who in annotators:
        return annotators[who]
    return f"user{who}"


def check_receipt(receipt: Mapping[str, Any], backend: str, kind: str) -> None:
    """Refuse an export receipt written by another backend or for the other kind of task."""
    if receipt.get("backend") != backend or receipt.get("kind") != kind:
        raise AnnotationError(
            f"the export receipt is for backend {receipt.get('backend')!r} ({receipt.get('kind')!r} tasks), "
            f"this import uses {backend!r} ({kind!r}): re-run the export stage"
        )


def effort(table: pd.DataFrame, requested: int, kind: str) -> dict[str, Any]:
    """Flat cost figures of one kind of annotation (``ratings`` or ``masks``) for metrics/."""
    lead = table["lead_time_s"].dropna() if len(table) else pd.Series(dtype=float)
    return {
        f"{kind}_requested": int(requested),
        f"{kind}_received": len(table),
        f"{kind}_lead_time_total_s": float(lead.sum()) if len(lead) else None,
        f"{kind}_lead_time_mean_s": float(lead.mean()) if len(lead) else None,
    }


def drawing_cost(masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What pixel labels held, the part of their cost that their count misses: annotators pay per region and per
    object pixel, and the same number of images from two strategies can differ by half in both.

    Args:
        masks: image_id -> (H, W) class indices (0 background, IGNORE_INDEX unlabelled).
    Returns:
        regions (8-connected regions of one foreground class, summed over the masks: an occluded object drawn
        in two parts counts twice), object_pixels and object_share (object pixels over the labelled pixels;
        None without any).
    """
    regions = object_pixels = labelled = 0
    eight = np.ones((3, 3), dtype=bool)
    for mask in masks.values():
        labelled += int((mask != IGNORE_INDEX).sum())
        for c in np.unique(mask):
            if c in (0, IGNORE_INDEX):
                continue
            regions += ndimage.label(mask == c, structure=eight)[1]
            object_pixels += int((mask == c).sum())
    return {
        "regions": regions,
        "object_pixels": object_pixels,
        "object_share": object_pixels / labelled if labelled else None,
    }
