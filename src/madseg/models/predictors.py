"""Predictors: anything that turns images into label maps in the target's class space.

Sources: a madseg checkpoint, a TorchScript file, an ONNX file (onnxruntime, optional) or a folder of
precomputed prediction masks named ``<image_id>.png`` (so any external system can compete). A competitor
trained on another label space is mapped through ``class_map`` (its class -> target class; unmapped -> ignore).

How an image reaches the network and its map returns to the image's own size is the checkpoint's input policy
(madseg.models.input_policy: resize, shorter side, or tiles). Per-image statistics (mean pixel entropy, mean max
probability) are taken at the network's resolution (tiles: over the averaged windows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madseg.device import cpu_chunks, resolve_device
from madseg.io.images import read_mask
from madseg.labels import IGNORE_INDEX, ClassList
from madseg.models.input_policy import InputPolicy, native_maps, resize_map

SOURCES = ("checkpoint", "torchscript", "onnx", "predictions")
TTA = (None, "hflip")  # test-time augmentations (config's ModelSpec.tta); None: each image as it is
SOURCE_FILES = {
    "checkpoint": "model.pt",
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "predictions": "predictions",
}


@dataclass
class Prediction:
    """A batch's results: maps[i] is (H_i, W_i) uint8 in target classes; stats are (N,) float32."""

    maps: list[np.ndarray]
    entropy: np.ndarray
    maxprob: np.ndarray


def class_lut(own: Sequence[str], target: ClassList, class_map: Mapping[str, str] | None) -> np.ndarray:
    """A (256,) uint8 lookup from a model's class indices to the target's (unmapped -> IGNORE).

    Without ``class_map`` the two class lists must be identical. Every name is validated against both lists.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    if class_map is None:
        if list(own) != list(target.names):
            raise ValueError(f"class lists differ ({list(own)} vs {list(target.names)}): give a class_map")
        lut[: len(own)] = np.arange(len(own))
        return lut
    for theirs, ours in class_map.items():
        if theirs not in own:
            raise ValueError(f"class_map: {theirs!r} is not one of the model's classes {list(own)}")
        lut[list(own).index(theirs)] = target.index(ours)
    return lut


def postprocess(logits: torch.Tensor, shapes: Sequence[tuple[int, int]], lut: np.ndarray) -> Prediction:
    """From logits (N, K, h, w) to maps at each image's own size, in target classes, plus statistics."""
    probs = torch.softmax(logits.float(), dim=1)
    maxprob, labels = probs.max(dim=1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
    labels_np = labels.to(torch.uint8).cpu().numpy()
    maps = [lut[resize_map(labels_np[i], tuple(shapes[i]))] for i in range(len(shapes))]
    return Prediction(
        maps=maps,
        entropy=entropy.mean(dim=(1, 2)).cpu().numpy().astype(np.float32),
        maxprob=maxprob.mean(dim=(1, 2)).cpu().numpy().astype(np.float32),
    )


def check_tta(tta: str | None) -> str | None:
    """``tta`` if it is a known test-time augmentation (or None), else a clear error."""
    if tta not in TTA:
        raise ValueError(f"unknown test-time augmentation {tta!r}; valid: {[t for t in TTA if t]}")
    return tta


class TorchPredictor:
    """A torch module (from a checkpoint or TorchScript) with its input policy and normalisation."""

    needs_pixels = True

    def __init__(
        self,
        module,
        *,
        policy: InputPolicy,
        mean,
        std,
        lut: np.ndarray,
        device: torch.device | None = None,
        batch_size: int = 64,
        tta: str | None = None,
    ):
        self.tta = check_tta(tta)
        self.device = device or resolve_device("auto")
        self.module = module.to(self.device).eval()
        self.policy, self.mean, self.std, self.lut, self.batch_size = policy, mean, std, lut, batch_size

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the normalised (3, h, w) tensor of the policy (runs in DataLoader workers)."""
        return self.policy.prepare(image, self.mean, self.std)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, h, w) of a prepared batch (N, 3, h, w); with ``tta`` 'hflip' the mean of the logits of
        the batch and of its mirror image, mirrored back."""
        batch = batch.to(self.device, non_blocking=True)
        if self.tta == "hflip":
            return (self.logits(batch) + self.logits(batch.flip(-1)).flip(-1)) / 2
        return self.logits(batch)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return self.module(batch)
        return torch.cat([self.module(chunk) for chunk in cpu_chunks(batch)])

    @torch.inference_mode()
    def infer(self, tensors: torch.Tensor | Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]]) -> Prediction:
        """Prepared tensors (stacked, or a list when their sizes differ) of images whose own sizes are ``shapes``
        -> maps at those sizes and statistics."""
        if self.policy.kind == "resize":
            batch = tensors if isinstance(tensors, torch.Tensor) else torch.stack(list(tensors))
            return postprocess(self.forward(batch), shapes, self.lut)
        log_probs = self.policy.log_probs(self.forward, tensors, self.batch_size)
        probs = [lp.exp() for lp in log_probs]
        return Prediction(
            maps=[self.lut[m] for m in native_maps(log_probs, shapes)],
            entropy=np.asarray(
                [float(-(p * lp).sum(dim=0).mean()) for p, lp in zip(probs, log_probs, strict=True)],
                np.float32,
            ),
            maxprob=np.asarray([float(p.max(dim=0).values.mean()) for p in probs], np.float32),
        )

    def predict(self, images: Sequence[np.ndarray], ids: Sequence[str] = ()) -> Prediction:
        return self.infer([self.prepare(im) for im in images], [im.shape[:2] for im in images])


class OnnxPredictor(TorchPredictor):
    def __init__(self, path: Path, **kwargs):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("ONNX competitors need onnxruntime: pip install -e '.[onnx]'") from None
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")
        self.policy, self.mean, self.std, self.lut = (
            kwargs["policy"],
            kwargs["mean"],
            kwargs["std"],
            kwargs["lut"],
        )
        self.batch_size, self.tta = 64, check_tta(kwargs.get("tta"))

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: batch.numpy()})[0])


class FolderPredictor:
    """Precomputed predictions: ``<folder>/<image_id>.png`` palette or greyscale masks."""

    needs_pixels = False

    def __init__(self, folder: Path, lut: np.ndarray):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such predictions folder")
        self.folder, self.lut = folder, lut

    def predict(self, images: Sequence[np.ndarray | None], ids: Sequence[str]) -> Prediction:
        maps = []
        for n, image in enumerate(ids):
            path = self.folder / f"{image}.png"
            if not path.exists():
                raise FileNotFoundError(f"{self.folder}: no precomputed prediction for image {image}")
            label = self.lut[read_mask(path)]
            if images and images[n] is not None and label.shape != images[n].shape[:2]:
                raise ValueError(f"{path}: prediction {label.shape} does not match the image {images[n].shape[:2]}")
            maps.append(label)
        ones = np.ones(len(ids), np.float32)
        return Prediction(maps=maps, entropy=0 * ones, maxprob=ones)


def load_predictor(
    path: str | Path,
    *,
    classes: ClassList,
    device: torch.device | None = None,
    batch_size: int = 64,
    policy: Mapping[str, Any] | None = None,
):
    """A predictor from a madseg checkpoint file or a competitor folder (``spec.json`` + one model source).

    ``policy`` (params' ``models.input_policy`` as a mapping) overrides the input policy the model recorded, all
    but its input size (:meth:`InputPolicy.overridden`): what params name applies at prediction time. So does a
    competitor's test-time augmentation in ``spec.json`` (its params' ``tta``) over its checkpoint's.
    """
    from madseg.models.checkpoint import load_checkpoint

    path = Path(path)
    if path.is_file():
        model, meta = load_checkpoint(path)
        if list(meta["classes"]) != list(classes.names):  # a target has no class_map: say what to do instead
            raise ValueError(
                f"{path}: the model predicts {list(meta['classes'])}, dataset.classes is {list(classes.names)} — "
                "import it again (`madseg import-model`) with the campaign's classes"
            )
        return TorchPredictor(
            model,
            policy=InputPolicy.from_meta(meta).overridden(policy),
            mean=meta["mean"],
            std=meta["std"],
            lut=class_lut(meta["classes"], classes, None),
            device=device,
            batch_size=batch_size,
            tta=meta.get("tta"),
        )
    spec_path = path / "spec.json"
    if not spec_path.exists():
        raise FileNotFoundError(f"{path}: neither a checkpoint nor a competitor folder with spec.json")
    spec = json.loads(spec_path.read_text())
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"{spec_path}: unknown source {source!r}; valid: {SOURCES}")
    artefact = path / SOURCE_FILES[source]
    if source == "checkpoint":
        model, meta = load_checkpoint(artefact)
        return TorchPredictor(
            model,
            policy=InputPolicy.from_meta(meta).overridden(policy),
            mean=meta["mean"],
            std=meta["std"],
            lut=class_lut(meta["classes"], classes, spec.get("class_map")),
            device=device,
            batch_size=batch_size,
            tta=spec.get("tta", meta.get("tta")),
        )
    lut = class_lut(spec.get("classes") or classes.names, classes, spec.get("class_map"))
    if source == "predictions":
        if spec.get("tta"):
            raise ValueError(f"{spec_path}: precomputed predictions cannot take a test-time augmentation")
        return FolderPredictor(artefact, lut)
    kwargs = {
        "policy": InputPolicy.from_meta(spec).overridden(policy),
        "mean": spec["mean"],
        "std": spec["std"],
        "tta": spec.get("tta"),
    }
    if source == "torchscript":
        module = torch.jit.load(str(artefact), map_location="cpu")
        return TorchPredictor(module, device=device, batch_size=batch_size, lut=lut, **kwargs)
    return OnnxPredictor(artefact, lut=lut, **kwargs)
