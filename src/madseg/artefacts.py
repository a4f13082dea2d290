"""A user's model artefacts adopted into the project, and a competitor's ``spec.json``.

A competitor folder holds ``spec.json`` and one artefact (madseg.models.predictors.SOURCE_FILES): a madseg
checkpoint, a TorchScript or ONNX file, or a folder of precomputed masks. The target is always a checkpoint,
since it is fine-tuned.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from madseg.config import ModelsParams, ModelSpec
from madseg.models.checkpoint import load_checkpoint, save_checkpoint
from madseg.models.predictors import SOURCE_FILES


def competitor_source(spec: ModelSpec) -> str:
    """The artefact kind of a competitor folder: a registry model is stored as a checkpoint."""
    source = "checkpoint" if spec.source == "registry" else spec.source
    if source not in SOURCE_FILES:
        raise ValueError(
            f"model {spec.name}: unknown source {spec.source!r}; valid: registry, {', '.join(SOURCE_FILES)}"
        )
    return source


def adopt_target(spec: ModelSpec, dest: Path) -> None:
    """Copy the user's target checkpoint to ``dest`` after validating it.

    A test-time augmentation that params name (``models.target.tta``) is written into the copy, so that its
    fine-tuned descendants inherit it; otherwise the copy keeps the checkpoint's own bytes.
    """
    _check_path(spec)
    if spec.source not in ("registry", "checkpoint"):
        raise ValueError(f"the target must be a madseg checkpoint (it is fine-tuned), not {spec.source}")
    model, meta = load_checkpoint(spec.path)  # validates
    if spec.tta is None or meta.get("tta") == spec.tta:
        shutil.copyfile(spec.path, dest)
    else:
        save_checkpoint(dest, model, meta | {"tta": spec.tta}, provenance=meta["provenance"])


def adopt_competitor(spec: ModelSpec, folder: Path) -> None:
    """Replace ``folder``'s artefact with a copy of the user's file or predictions folder."""
    _check_path(spec)
    target = folder / SOURCE_FILES[competitor_source(spec)]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (shutil.copytree if Path(spec.path).is_dir() else shutil.copyfile)(spec.path, target)


def competitor_spec(spec: ModelSpec, models: ModelsParams) -> dict:
    """The ``spec.json`` of a competitor folder: source, class list and map, input size, normalisation and, when
    params name one, the test-time augmentation (left out otherwise, so that older folders keep their bytes)."""
    folder = {
        "name": spec.name,
        "source": competitor_source(spec),
        "classes": spec.classes,
        "class_map": spec.class_map,
        "input_size": [models.input_size, models.input_size],
        "mean": list(models.mean),
        "std": list(models.std),
    }
    return folder | ({"tta": spec.tta} if spec.tta else {})


def _check_path(spec: ModelSpec) -> None:
    if spec.path is None or not Path(spec.path).exists():
        raise FileNotFoundError(f"model {spec.name}: source {spec.source!r} needs an existing path, got {spec.path!r}")
