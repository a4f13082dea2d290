"""How an image of any size and aspect reaches the network, and how its prediction returns to the image's size.

Three policies, one for inference, evaluation, pretraining and fine-tuning alike:

- ``resize``: the whole image squashed to ``size`` (h, w); the argmax map comes back by nearest neighbour. The
  demo's small square world uses it (and its numbers depend on it, bit for bit).
- ``shorter_side``: the aspect kept, the shorter side scaled to ``shorter_side`` unless the longer side would then
  exceed ``max_side`` (as torchvision's reference scripts resize); the batch is padded up to a multiple of the
  network's stride and the logits are cropped, upsampled bilinearly to the image's own size, then argmaxed.
- ``tiles``: sliding windows of ``tile`` px at the image's own resolution, neighbours sharing ``overlap`` of a
  window; the softmax of overlapping windows is averaged. For large images where any rescaling loses the detail.

Training uses the matching views: ``resize`` squashes; ``shorter_side`` rescales and cuts ``size`` crops that
cover the image; ``tiles`` cuts the inference windows. Predicted maps always come out at the image's own size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

POLICIES = ("resize", "shorter_side", "tiles")
RESIZE_FINGERPRINT = "resize-bilinear-to-input/argmax/nearest-back-v1"  # what stores made before policies hold


@dataclass(frozen=True)
class InputPolicy:
    kind: str = "resize"
    size: tuple[int, int] = (64, 64)  # resize: the network input (h, w); other policies: the training crop
    shorter_side: int = 512
    max_side: int = 1024
    tile: int = 512
    overlap: float = 0.25
    pad_to: int = 32  # the network's total stride: inputs are padded up to a multiple of it

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"unknown input policy {self.kind!r}; valid: {', '.join(POLICIES)}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"input policy overlap must be in [0, 1), got {self.overlap}")
        if min(self.size) < 1 or self.shorter_side < 1 or self.max_side < self.shorter_side or self.tile < 1:
            raise ValueError(f"input policy sizes must be positive with max_side >= shorter_side: {self}")

    @classmethod
    def from_meta(cls, meta: dict) -> InputPolicy:
        """The policy a checkpoint records; checkpoints from before policies resize to their input size."""
        fields = dict(meta.get("input_policy") or {"kind": "resize"})
        fields["size"] = tuple(fields.get("size", meta["input_size"]))
        return cls(**fields)

    def overridden(self, params: Mapping[str, Any] | None) -> InputPolicy:
        """The policy a model predicts with: ``params`` (``models.input_policy``: kind and its keys) win over what
        the checkpoint recorded; the model's own input size stays (the resize square, the training crop)."""
        if not params:
            return self
        return replace(self, **{key: value for key, value in params.items() if key != "size"})

    def to_meta(self) -> dict:
        return {**asdict(self), "size": list(self.size)}

    def fingerprint(self) -> str:
        """Identifies the policy in a prediction store (resize keeps the string of stores made before)."""
        if self.kind == "resize":
            return RESIZE_FINGERPRINT
        return "policy-v1:" + ",".join(f"{k}={v}" for k, v in sorted(self.to_meta().items()))

    # ------------------------------------------------------------------------------------ geometry
    def scaled_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the image is resampled to before the network sees it."""
        if self.kind == "resize":
            return self.size
        if self.kind == "tiles":
            return height, width
        short, long = min(height, width), max(height, width)
        scale = min(self.shorter_side / short, self.max_side / long)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def windows(self, height: int, width: int, side: int | None = None) -> list[tuple[int, int]]:
        """Top-left corners of ``side``-px windows (default: the tile) covering an (height, width) image."""
        side = side or self.tile
        stride = max(1, int(side * (1.0 - self.overlap)))

        def starts(length: int) -> list[int]:
            if length <= side:
                return [0]
            return sorted({*range(0, length - side, stride), length - side})

        return [(y, x) for y in starts(height) for x in starts(width)]

    # ------------------------------------------------------------------------------------ inference
    def prepare(self, image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """An (H, W, 3) uint8 image -> the normalised (3, h, w) float32 tensor the network's windows come from."""
        h, w = self.scaled_shape(*image.shape[:2])
        if (h, w) != image.shape[:2]:
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        arr = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def log_probs(self, forward, tensors: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
        """Class log-probabilities (K, h, w) float32 of each prepared tensor (shorter_side or tiles), on the CPU.

        ``forward`` maps a batch (N, 3, h, w) to logits (N, K, h, w). Images of the same prepared shape share
        batches, so an image's result never depends on which others were in its batch.
        """
        out: list[torch.Tensor | None] = [None] * len(tensors)
        if self.kind == "tiles":
            for i, t in enumerate(tensors):
                out[i] = self._tiled(forward, t, batch_size)
            return out  # type: ignore[return-value]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape), []).append(i)
        for shape, members in groups.items():
            h, w = shape[1:]
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = _pad(torch.stack([tensors[i] for i in chunk]), self.pad_to)
                scores = torch.log_softmax(forward(batch)[:, :, :h, :w].float(), dim=1).cpu()
                for i, lp in zip(chunk, scores, strict=True):
                    out[i] = lp
        return out  # type: ignore[return-value]

    def _tiled(self, forward, image: torch.Tensor, batch_size: int) -> torch.Tensor:
        _, height, width = image.shape
        corners = self.windows(height, width)
        total, count = None, torch.zeros(1, height, width)
        for start in range(0, len(corners), batch_size):
            chunk = corners[start : start + batch_size]
            crops = [image[:, y : y + self.tile, x : x + self.tile] for y, x in chunk]
            side = (min(self.tile, height), min(self.tile, width))
            probs = torch.softmax(forward(_pad(torch.stack(crops), self.pad_to)).float(), dim=1).cpu()
            if total is None:
                total = torch.zeros(probs.shape[1], height, width)
            for (y, x), p in zip(chunk, probs, strict=True):
                total[:, y : y + side[0], x : x + side[1]] += p[:, : side[0], : side[1]]
                count[:, y : y + side[0], x : x + side[1]] += 1
        return torch.log((total / count).clamp_min(1e-12))

    # ------------------------------------------------------------------------------------ training
    def training_views(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], mean, std
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-size training views matching inference: images (N', 3, h, w) float32, masks (N', h, w) int64.

        ``resize``: one squashed view per image. ``shorter_side``: the rescaled image cut into ``size`` crops
        that cover it (padded with ignore where it is smaller). ``tiles``: the inference windows.
        """
        if self.kind == "resize":
            x = torch.stack([self.prepare(im, mean, std) for im in images]) if len(images) else None
            y = [resize_map(m, self.size) for m in masks]
            if x is None:
                return torch.zeros(0, 3, *self.size), torch.zeros(0, *self.size, dtype=torch.int64)
            return x, torch.from_numpy(np.stack(y).astype(np.int64))
        side = self.size if self.kind == "shorter_side" else (self.tile, self.tile)
        xs, ys = [], []
        for image, mask in zip(images, masks, strict=True):
            x = self.prepare(image, mean, std)
            y = torch.from_numpy(resize_map(mask, tuple(x.shape[1:])).astype(np.int64))
            for top, left in self._crop_corners(*x.shape[1:], side):
                xs.append(_pad_to(x[:, top : top + side[0], left : left + side[1]], side, 0.0))
                ys.append(_pad_to(y[top : top + side[0], left : left + side[1]], side, 255))
        if not xs:
            return torch.zeros(0, 3, *side), torch.zeros(0, *side, dtype=torch.int64)
        return torch.stack(xs), torch.stack(ys)

    def _crop_corners(self, height: int, width: int, side: tuple[int, int]) -> list[tuple[int, int]]:
        ys = [y for y, _ in self.windows(height, 1, side[0])]
        xs = [x for _, x in self.windows(1, width, side[1])]
        return [(y, x) for y in ys for x in xs]


def _pad(batch: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (N, C, h, w) at the bottom and right up to a multiple of ``multiple``."""
    h, w = batch.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(batch, (0, pw, 0, ph)) if ph or pw else batch


def _pad_to(t: torch.Tensor, side: tuple[int, int], value: float) -> torch.Tensor:
    h, w = t.shape[-2:]
    if (h, w) == tuple(side):
        return t
    return F.pad(t, (0, side[1] - w, 0, side[0] - h), value=value)


def resize_map(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) uint8 map to ``shape`` (H, W)."""
    if mask.shape == tuple(shape):
        return mask
    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.NEAREST))


def native_maps(log_probs: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Argmax maps (H_i, W_i) uint8 at each image's own size from log-probabilities (K, h, w), upsampled bilinearly.

    (Upsampling log-probabilities or logits gives the same argmax: they differ by a per-pixel constant.)
    """
    maps = []
    for lp, (h, w) in zip(log_probs, shapes, strict=True):
        if tuple(lp.shape[1:]) != (h, w):
            lp = F.interpolate(lp[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        maps.append(lp.max(dim=0).indices.to(torch.uint8).numpy())  # max's indices: ~20x faster than argmax
    return maps
