"""Wrap a model the user already trained into a madseg checkpoint that the loop can fine-tune.

Accepted forms (:data:`FORMS`):

- ``smp``: a folder written by segmentation-models-pytorch's ``save_pretrained`` (config.json + weights);
- ``torchvision``: a torchvision segmentation model's state_dict file plus its builder (``tv.<function>``);
- ``state_dict``: a plain ``torch.save``d state_dict plus a registry architecture and its kwargs.

The checkpoint records the class list, normalisation, input policy and provenance (form, file name, sha256). The
model's number of outputs is checked against the class list before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from madseg.io.atomic import sha256_file
from madseg.models.checkpoint import make_meta
from madseg.models.input_policy import InputPolicy
from madseg.models.registry import build_model
from madseg.models.weights import adapt_state_dict, read_state_dict, tensors_sha256

FORMS = ("smp", "torchvision", "state_dict")
# smp config.json keys that are not constructor kwargs of the architecture
_SMP_NOT_KWARGS = ("_model_class", "classes", "encoder_weights")


class ClassMismatch(ValueError):
    """The model's outputs do not match the dataset's class list."""


def import_model(
    *,
    form: str,
    source: str | Path,
    classes: Sequence[str],
    arch: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    policy: InputPolicy,
    tta: str | None = None,
) -> tuple[nn.Module, dict, dict]:
    """Rebuild a trained model as a madseg model: (model in eval mode, checkpoint meta, provenance). ``tta``: the
    test-time augmentation its predictions will use (kept in the meta).

    ``classes`` is the dataset's class list (index order = output channel order); the model must predict
    exactly that many classes, else ClassMismatch names both counts.
    """
    if form not in FORMS:
        raise ValueError(f"unknown model form {form!r}; valid: {', '.join(FORMS)}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such model {'folder' if form == 'smp' else 'file'}")
    if form == "smp":
        arch, kwargs, weights_file, declared = _smp_folder(source)
        if declared is not None and declared != len(classes):
            raise ClassMismatch(
                f"{source}: the model predicts {declared} classes (config.json), dataset.classes has "
                f"{len(classes)}: {list(classes)}"
            )
    else:
        if arch is None:
            raise ValueError(f"form {form!r} needs the architecture (--arch, e.g. tv.deeplabv3_resnet50)")
        if form == "torchvision" and not arch.startswith("tv."):
            raise ValueError(f"form 'torchvision' takes a tv.<builder> architecture, got {arch!r}")
        weights_file = source
    kwargs = dict(kwargs or {})
    model = build_model(arch, len(classes), **kwargs)
    state = read_state_dict(weights_file)
    net = model.model if arch.startswith("tv.") else model  # torchvision's network inside TorchvisionLogits
    if arch.startswith("tv."):  # the auxiliary head only trains; madseg models have none
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    _check_outputs(state, net.state_dict(), len(classes), classes, source)
    mapped, unused = adapt_state_dict(state, net.state_dict(), what=f"{source} as {arch}")
    if unused:
        raise ValueError(f"{source}: keys the network {arch} does not have: {unused[:10]}")
    net.load_state_dict(mapped, strict=True)
    meta = make_meta(
        arch=arch,
        kwargs=kwargs,
        classes=list(classes),
        input_size=list(policy.size),
        mean=mean,
        std=std,
        input_policy=policy,
        tta=tta,
    )
    provenance = {
        "imported": {
            "form": form,
            "file": weights_file.name,
            "file_sha256": sha256_file(weights_file),
            "tensors_sha256": tensors_sha256(net.state_dict()),
        }
    }
    return model.eval(), meta, provenance


def _smp_folder(folder: Path) -> tuple[str, dict, Path, int | None]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a folder written by smp's save_pretrained)")
    config = json.loads(config_path.read_text())
    name = config.get("_model_class")
    if not name:
        raise ValueError(f"{config_path}: no _model_class (not written by smp's save_pretrained)")
    for candidate in ("model.safetensors", "pytorch_model.bin"):
        if (folder / candidate).is_file():
            kwargs = {k: v for k, v in config.items() if k not in _SMP_NOT_KWARGS}
            return f"smp.{name}", kwargs, folder / candidate, config.get("classes")
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin beside config.json")


def _check_outputs(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], k: int, classes, source: Path
) -> None:
    """A ClassMismatch when the file's final layer has another number of outputs than the class list."""
    for key, tensor in target.items():
        other = state.get(key)
        head_differs = other is not None and other.shape != tensor.shape and other.shape[1:] == tensor.shape[1:]
        if head_differs and tensor.shape[0] == k:
            raise ClassMismatch(
                f"{source}: the model predicts {other.shape[0]} classes ({key}), dataset.classes has {k}: "
                f"{list(classes)}"
            )
