"""Every param checked against the files it names, at once, before anything runs.

:func:`madseg.config.load_params` checks params.yaml's shape and the rules between its keys. This module checks
what needs the files: each architecture is known, each path exists (or a dvc.yaml stage makes it), the class list
matches the VOC masks and every checkpoint a user brings, and the input policy suits the images' sizes (the
annotation server is asked only by `madseg check`: a stage never contacts it). Each problem is one line,
``key.path: what is wrong — what to do``. `madseg check` prints them all; every stage refuses to start on any.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from madseg.config import ModelSpec, Params
from madseg.labels import IGNORE_INDEX, ClassList
from madseg.models.archs import check_arch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SAMPLE = 64  # images whose headers are read per folder: enough for a median, cheap at every stage's start


@dataclass(frozen=True)
class SizeSummary:
    """Median width, height and aspect ratio (w / h) of a sample of images."""

    count: int
    width: float
    height: float
    aspect: float

    @property
    def shorter(self) -> float:
        return min(self.width, self.height)

    @property
    def longer(self) -> float:
        return max(self.width, self.height)


def check_params(params: Params, root: Path = Path("."), *, checkpoints: bool = True) -> list[str]:
    """The problems of ``params`` against the files under ``root``, one ``key.path: problem — remedy`` each.

    ``checkpoints=False`` skips reading the checkpoints a user brings (torch, seconds): a stage's start does, and
    the stages that load a model then say the same of it.
    """
    stages = _pipeline_stages(root)
    produced = _produced_paths(stages)
    problems: list[str] = []

    def missing(key: str, path: str | None, what: str) -> bool:
        if path is None or (root / path).exists() or _under(path, produced):
            return False
        problems.append(f"{key}: {path} does not exist — {what}")
        return True

    classes = params.dataset.class_list()
    voc = params.dataset.voc_root
    missing("dataset.voc_root", voc, "point it at your VOC folder (JPEGImages/, SegmentationClass/)")
    if (root / voc).exists():
        for key in ("train_split", "val_split"):
            split = getattr(params.dataset, key)
            where = f"{voc}/ImageSets/Segmentation/{split}.txt"
            missing(f"dataset.{key}", where, "list the split's image names there, one a line")
        problems += _mask_problems(root / voc, classes)
    for i, folder in enumerate(params.crawl.folders):
        missing(f"crawl.folders[{i}]", folder, "name a folder of pool images")
    for i, folder in enumerate(params.crawl.reference_sets):
        missing(f"crawl.reference_sets[{i}]", folder, "name your benchmark's images (e.g. <voc_root>/JPEGImages)")
    missing("crawl.url_list", params.crawl.url_list, "name a text file of image URLs, one a line")
    if params.annotation.backend == "simulated":
        missing(
            "annotation.simulated.truth_dir",
            params.annotation.simulated.truth_dir,
            "the simulated raters need the pool's truth: give it, or set annotation.backend: labelstudio",
        )
    if "validity" in stages:
        missing("evaluation.eval_pool", params.evaluation.eval_pool, "the validity stage measures on it")
    specs = [("models.target", params.models.target, params.dataset.classes)]
    specs += [(f"models.competitors.{k}", s, s.classes) for k, s in params.models.competitors.items()]
    for key, spec, _ in specs:
        problems += _model_problems(key, spec, classes, root, produced, checkpoints=checkpoints)
    problems += _policy_problems(params, root)
    return problems


def _model_problems(
    key: str, spec: ModelSpec, classes: ClassList, root: Path, produced: list[str], *, checkpoints: bool
) -> list[str]:
    problems = []
    if spec.source == "registry" and spec.arch:
        try:
            check_arch(spec.arch)
        except ValueError as e:
            problems.append(f"{key}.arch: {e}")
    if spec.source != "registry" and spec.path is None:
        problems.append(f"{key}.path: source {spec.source} needs a path — name the file or folder")
    if spec.path is None or _under(spec.path, produced):
        return problems
    path = root / spec.path
    if not path.exists():
        return [*problems, f"{key}.path: {spec.path} does not exist — import it with `madseg import-model`"]
    own = list(spec.classes or classes.names)
    if spec.source in ("checkpoint", "registry") and path.is_file():
        if not checkpoints:
            return problems
        from madseg.models.checkpoint import read_checkpoint  # torch: only where a user brings a checkpoint

        try:
            own = list(read_checkpoint(path)["classes"])
        except ValueError as e:
            return [*problems, f"{key}.path: {e} — import the model with `madseg import-model`"]
    if spec.class_map:
        unknown = sorted(set(spec.class_map.values()) - set(classes.names))
        if unknown:
            problems.append(
                f"{key}.class_map: maps to {unknown}, not in dataset.classes — map to {list(classes.names)}"
            )
    elif own != list(classes.names):
        if key == "models.target":
            remedy = "import the target again (`madseg import-model`) with the campaign's dataset.classes"
        else:
            remedy = "give a class_map (its class -> yours) and its classes"
        problems.append(f"{key}.path: the model predicts {own}, dataset.classes is {list(classes.names)} — {remedy}")
    return problems


def _mask_problems(voc: Path, classes: ClassList) -> list[str]:
    """S0/T0 masks whose labels lie outside the class list (a sample: the stages check every mask)."""
    masks = sorted((voc / "SegmentationClass").glob("*.png"))
    step = max(1, len(masks) // 16)
    for path in masks[::step]:
        try:
            values = np.unique(np.asarray(Image.open(path)))
        except OSError as e:
            return [f"dataset.voc_root: {path} is not a readable mask ({e}) — replace it"]
        outside = [int(v) for v in values if v >= classes.num_classes and v != IGNORE_INDEX]
        if outside:
            return [
                f"dataset.classes: {path.name} holds labels {outside}, but dataset.classes has "
                f"{classes.num_classes} classes — list every class of your masks, background first"
            ]
    return []


def image_sizes(folders: list[Path], sample: int = SAMPLE) -> SizeSummary | None:
    """Median size of up to ``sample`` images per folder, read from their headers; None if there are none."""
    sizes = []
    for folder in folders:
        files = list(_first_images(folder, sample * 8))
        for path in files[:: max(1, len(files) // sample)]:
            try:
                with Image.open(path) as image:
                    sizes.append(image.size)
            except OSError:
                continue  # crawl_index rejects it with its reason
    if not sizes:
        return None
    w, h = np.median(np.asarray(sizes, np.float64), axis=0)
    aspect = float(np.median([a / b for a, b in sizes]))
    return SizeSummary(count=len(sizes), width=float(w), height=float(h), aspect=aspect)


def _first_images(folder: Path, limit: int) -> Iterator[Path]:
    """Up to ``limit`` image files below ``folder``, each directory's sorted (a pool may hold 10^6 files)."""
    found = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath) / name
                found += 1
                if found >= limit:
                    return


def suited_policy(sizes: SizeSummary, input_size: int) -> str:
    """The input policy for images of ``sizes``: ``resize`` for small squares, ``tiles`` for images of several
    megapixels, else ``shorter_side`` (photos)."""
    if sizes.longer > 2048:
        return "tiles"
    if abs(np.log(sizes.aspect)) < np.log(1.1) and sizes.longer <= 2 * input_size:
        return "resize"
    return "shorter_side"


def _policy_problems(params: Params, root: Path) -> list[str]:
    folders = [root / params.dataset.voc_root / "JPEGImages", *(root / f for f in params.crawl.folders)]
    sizes = image_sizes([f for f in folders if f.is_dir()])
    if sizes is None:
        return []
    kind, policy = params.models.input_policy.kind, params.models.input_policy
    seen = f"images of about {sizes.width:.0f}×{sizes.height:.0f}"
    if kind == "resize" and suited_policy(sizes, params.models.input_size) != "resize":
        side = params.models.input_size
        return [
            f"models.input_policy.kind: resize squashes {seen} into {side}×{side} — use shorter_side "
            f"(or tiles for large images), see the README's input policies"
        ]
    if kind == "shorter_side" and sizes.longer > 3 * policy.max_side:
        return [f"models.input_policy.kind: shorter_side shrinks {seen} below a third — use tiles"]
    if kind == "tiles" and sizes.longer < policy.tile:
        return [f"models.input_policy.tile: a {policy.tile}-px tile is larger than {seen} — use shorter_side"]
    return []


def _pipeline_stages(root: Path) -> dict:
    """dvc.yaml's stages under ``root`` (read once per check), or {} where there is none."""
    path = root / "dvc.yaml"
    return ((yaml.load(path.read_text(), Loader=_LOADER) or {}).get("stages") or {}) if path.exists() else {}


def _produced_paths(stages: dict) -> list[str]:
    """The literal outputs of dvc.yaml's stages: a path below one is made by the pipeline, not given by the user."""
    outs = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for key in ("outs", "metrics", "plots"):
            for out in body.get(key) or []:
                name = next(iter(out)) if isinstance(out, dict) else str(out)
                if "${" not in name:
                    outs.append(name)
    return outs


def _under(path: str, produced: list[str]) -> bool:
    parts = Path(path).parts
    return any(parts[: len(Path(out).parts)] == Path(out).parts for out in produced)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
