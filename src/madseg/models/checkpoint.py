"""Self-describing checkpoints: architecture, class list, input size, normalisation and provenance beside the
weights, loadable with ``torch.load(weights_only=True)`` and rebuilt from the file alone (nanoGPT-style)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from madseg.io.atomic import atomic_open, write_bytes
from madseg.models.input_policy import InputPolicy
from madseg.models.registry import build_model

FORMAT = 1
REQUIRED = ("format", "arch", "kwargs", "classes", "input_size", "mean", "std", "provenance", "state_dict")


OPTIONAL = ("input_policy", "tta")
ORIGIN = ("pretrained", "imported")  # provenance keys saying where the round-0 weights came from


def weights_origin(provenance: dict) -> dict:
    """The provenance entries that travel from a checkpoint to its fine-tuned descendants and the model card."""
    return {
        k: provenance[k] for k in ORIGIN if k in provenance
    }  # absent: resize to input_size (checkpoints from before input policies)


def make_meta(
    *,
    arch: str,
    kwargs: dict,
    classes: list[str],
    input_size: int | list[int],
    mean,
    std,
    input_policy: InputPolicy | None = None,
    tta: str | None = None,
) -> dict:
    """The checkpoint fields other than weights and provenance.

    A plain ``resize`` policy and no test-time augmentation are not written, so that checkpoints stay
    byte-identical to those made before either existed.
    """
    size = [input_size, input_size] if isinstance(input_size, int) else list(input_size)
    meta = {
        "arch": arch,
        "kwargs": dict(kwargs),
        "classes": list(classes),
        "input_size": size,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }
    if input_policy is not None and input_policy.kind != "resize":
        meta["input_policy"] = input_policy.to_meta()
    if tta is not None:
        meta["tta"] = tta
    return meta


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict, *, provenance: dict[str, Any]) -> None:
    """Write ``model``'s weights with ``meta`` and ``provenance`` atomically (byte-stable for equal inputs)."""
    payload = {
        "format": FORMAT,
        **{k: meta[k] for k in ("arch", "kwargs", "classes", "input_size", "mean", "std")},
        **{k: meta[k] for k in OPTIONAL if k in meta},
        "provenance": provenance,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint's payload (weights_only); clear errors for missing or foreign files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable madseg checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(payload, dict) or k not in payload]
        raise ValueError(f"{path}: not a madseg checkpoint (missing fields {missing})")
    if payload["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload['format']} is not supported (expected {FORMAT})")
    return payload


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, metadata without weights)."""
    payload = read_checkpoint(path)
    model = build_model(payload["arch"], len(payload["classes"]), **payload["kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit {payload['arch']} ({e})") from None
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.eval(), meta


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path) -> None:
    """``torch.jit.save`` without the debug pickles, atomically.

    A trace's debug pickles hold the Python call stack it was made from, with the absolute paths of this checkout
    and its virtualenv: the same model traced in another folder would give other bytes. Loading does not need them.
    """
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    reader = torch._C.PyTorchFileReader(buf)
    with atomic_open(path, "wb") as f:
        writer = torch._C.PyTorchFileWriter(f)
        for name in reader.get_all_records():
            # the writer adds its own serialization id, derived from the records it wrote
            if not name.endswith(".debug_pkl") and name != ".data/serialization_id":
                data = reader.get_record(name)
                writer.write_record(name, data, len(data))
        writer.write_end_of_file()
