"""Image encoders whose ImageNet features describe what a pool image shows (for the failure slices).

One registry (:data:`EMBEDDERS`) from a name to the torchvision network, the part of it that makes features and
the weight file it needs. The weights are the registry-packaged ImageNet files that `madseg weights fetch` puts in
the torch hub cache (:mod:`madseg.models.weights`): read from disk, never downloaded, so a pool is embedded the same
way offline. An :class:`Embedder` looks like a pool predictor to the backends (``needs_pixels``, ``policy``,
``mean``, ``std``, ``prepare``, ``infer``), so the local and Ray pool passes drive it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from madseg.device import cpu_chunks
from madseg.models.input_policy import InputPolicy
from madseg.models.weights import WeightsNotFound, checkpoints_dir, find_local, load_file_into

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EmbedderSpec:
    build: Callable[[], nn.Module]  # the bare network, no weights
    features: Callable[[nn.Module], nn.Module]  # its part whose output (N, D, h, w) is pooled
    filename: str  # the ImageNet weight file, by torchvision's name
    dim: int


def _mobilenet_v2() -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2()


EMBEDDERS = {
    "mobilenet_v2": EmbedderSpec(_mobilenet_v2, lambda net: net.features, "mobilenet_v2-b0353104.pth", 1280),
}


def embedder_spec(name: str) -> EmbedderSpec:
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; valid: {list(EMBEDDERS)}")
    return EMBEDDERS[name]


def weights_file(name: str) -> Path:
    """The local ImageNet weight file of embedder ``name``; WeightsNotFound (one line: what to do) without one."""
    spec = embedder_spec(name)
    path = find_local(spec.filename)
    if path is None:
        raise WeightsNotFound(
            f"embedder {name} needs {spec.filename}, which is not in {checkpoints_dir()}: run `madseg weights fetch` "
            "(it takes the file from a registry package) or put the file there"
        )
    return path


class Embedder:
    """A frozen encoder: images -> global-average-pooled features (N, D) float16.

    Every image is squashed to ``image_size`` squared (the whole frame, no centre crop: a failure may sit at an
    edge), normalised with ImageNet's mean and std; small images are upsampled (bilinear)."""

    needs_pixels = True

    def __init__(self, name: str, *, image_size: int = 224, device: torch.device | None = None):
        spec = embedder_spec(name)
        net = spec.build()
        self.provenance = load_file_into(net, weights_file(name), what=f"embedder {name}", source="local copy")
        self.device = device or torch.device("cpu")
        self.module = spec.features(net).to(self.device).eval()
        self.name, self.dim = name, spec.dim
        self.policy = InputPolicy(kind="resize", size=(image_size, image_size))
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the normalised (3, S, S) float32 tensor."""
        return self.policy.prepare(image, self.mean, self.std)

    @torch.inference_mode()
    def infer(
        self, tensors: torch.Tensor | Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]] = ()
    ) -> np.ndarray:
        """Prepared tensors (N, 3, S, S) -> features (N, D) float16 (``shapes``: unused, the predictors' call)."""
        batch = tensors if isinstance(tensors, torch.Tensor) else torch.stack(list(tensors))
        batch = batch.to(self.device)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                pooled = self.module(batch).float().mean(dim=(2, 3))
        else:
            pooled = torch.cat([self.module(chunk).mean(dim=(2, 3)) for chunk in cpu_chunks(batch)])
        return pooled.cpu().numpy().astype(np.float16)

    def predict(self, images: Sequence[np.ndarray], ids: Sequence[str] = ()) -> np.ndarray:
        return self.infer([self.prepare(im) for im in images])


def load_embedder(name: str, *, device: torch.device | None = None, image_size: int = 224) -> Embedder:
    """The embedder ``name`` with its local ImageNet weights on ``device`` (a Ray actor's loader too)."""
    return Embedder(name, image_size=image_size, device=device)
