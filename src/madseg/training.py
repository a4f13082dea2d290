"""Pretraining the demo's models from scratch on S0 (real campaigns bring their own checkpoints).

AdamW with a one-cycle schedule over a fixed number of steps (not a time budget: the same params must give the
same weights), horizontal flips (S0's objects are upright; rotations are a corner case on purpose) and, for a
model that asks for it, photometric augmentation (a competitor trained to ignore colour and contrast is a
model of another design methodology, and one that can see what the others miss) or scale jitter (for photos
whose objects vary in size more than S0's).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from madseg.config import ModelsParams, ModelSpec, PretrainParams
from madseg.labels import IGNORE_INDEX, ClassList
from madseg.models.checkpoint import make_meta
from madseg.models.input_policy import InputPolicy
from madseg.models.registry import build_model
from madseg.models.weights import init_pretrained

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(False)


def hflip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample horizontally with probability 1/2: images x (N, 3, H, W) and masks y (N, H, W) together.
    Returns copies; one draw per sample from ``gen``."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x, y = x.clone(), y.clone()
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
    return x, y


def photometric(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample colour and contrast changes of a normalised batch x (N, 3, H, W); masks y (N, H, W) pass through.

    Each sample, independently: with probability 1/2 its contrast is scaled by U(0.2, 1) around its own
    per-channel mean; with probability 1/2 its channels are permuted; with probability 1/5 it becomes grey.
    """
    n = x.shape[0]
    x = x.clone()
    mean = x.mean(dim=(2, 3), keepdim=True)
    scale = torch.where(torch.rand(n, generator=gen) < 0.5, 0.2 + 0.8 * torch.rand(n, generator=gen), 1.0)
    x = mean + scale.view(n, 1, 1, 1) * (x - mean)
    permute = torch.rand(n, generator=gen) < 0.5
    orders = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
    for i in torch.nonzero(permute).flatten().tolist():
        x[i] = x[i, orders[i]]
    grey = torch.rand(n, generator=gen) < 0.2
    x[grey] = x[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x, y


def rescale(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, low: float = 0.67, high: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample scale jitter of a normalised batch x (N, 3, H, W) and its masks y (N, H, W) int64.

    Each sample is resized by a factor drawn log-uniformly from [low, high] (bilinear for the image, nearest for
    the mask), then cut back to (H, W) at a random place: a larger view is cropped, a smaller one is pasted on
    the mean colour (0 after normalising) with its margin ignored (IGNORE_INDEX), so no pixel is given a made-up
    class.
    """
    n, _, h, w = x.shape
    factors = torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.rand(n, generator=gen))
    out_x, out_y = torch.zeros_like(x), torch.full_like(y, IGNORE_INDEX)
    for i, f in enumerate(factors.tolist()):
        sh, sw = max(1, round(h * f)), max(1, round(w * f))
        xi = F.interpolate(x[i : i + 1], size=(sh, sw), mode="bilinear", align_corners=False)[0]
        yi = F.interpolate(y[i : i + 1, None].float(), size=(sh, sw), mode="nearest")[0, 0].long()
        # offsets into the view (when larger) and into the canvas (when smaller), one draw per axis
        dy, dx = (int(torch.randint(abs(a - b) + 1, (1,), generator=gen)) for a, b in ((sh, h), (sw, w)))
        vy, cy = (dy, 0) if sh >= h else (0, dy)
        vx, cx = (dx, 0) if sw >= w else (0, dx)
        ch, cw = min(sh, h), min(sw, w)
        out_x[i, :, cy : cy + ch, cx : cx + cw] = xi[:, vy : vy + ch, vx : vx + cw]
        out_y[i, cy : cy + ch, cx : cx + cw] = yi[vy : vy + ch, vx : vx + cw]
    return out_x, out_y


Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
AUGMENTATIONS: dict[str, Augmentation] = {"photometric": photometric, "scale": rescale}


def pretrain(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    log_every: int = 25,
    augment: str | None = None,
) -> list[dict]:
    """Train ``model`` in place on images (N, 3, H, W) float32 and masks (N, H, W) int64 (255 = ignore).

    ``augment`` names an entry of AUGMENTATIONS applied after the flips (None: flips only).
    Returns the loss curve as dicts (step, loss) every ``log_every`` steps.
    """
    if augment is not None and augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; valid: {sorted(AUGMENTATIONS)}")
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"need matching, non-empty images and masks, got {len(images)} and {len(masks)}")
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    curve, running = [], []
    order = torch.randperm(len(images), generator=gen)
    cursor = 0
    for step in tqdm(range(steps), desc="pretrain", unit="step", mininterval=2.0):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x, y = hflip(images[idx], masks[idx], gen)
        if augment is not None:  # draws from gen only when asked, so flips-only training is unchanged
            x, y = AUGMENTATIONS[augment](x, y, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "loss": float(np.mean(running))})
            running = []
    return curve


@dataclass
class Pretrained:
    """A model trained from its spec: the network, its checkpoint meta, where its initial weights came from
    (empty: from scratch), the loss curve, and the recipe it ran."""

    model: torch.nn.Module
    meta: dict
    weights: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    steps: int = 0
    lr: float = 0.0
    seconds: float = 0.0

    def provenance(self, *, trained_on: str, images: int, seed: int, t0_miou: float) -> dict:
        """What the checkpoint records of its training (the weights only when pretrained, so that from-scratch
        checkpoints keep their bytes)."""
        out = {"trained_on": trained_on, "images": images, "steps": self.steps, "seed": seed, "t0_miou": t0_miou}
        return out | ({"pretrained": self.weights} if self.weights else {})

    def record(self, *, t0_miou: float, augment: str) -> dict:
        """The run's figures for metrics/pretrain/<name>.json."""
        out = {
            "t0_miou": t0_miou,
            "steps": self.steps,
            "lr": self.lr,
            "input_size": self.meta["input_size"],
            "augment": augment,
            "train_s": round(self.seconds, 1),
        }
        described = "; ".join(f"{w['part']}: {w.get('weights') or w['file']}" for w in self.weights)
        return out | ({"pretrained": described} if self.weights else {})


def pretrain_spec(
    spec: ModelSpec,
    *,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    classes: ClassList,
    models: ModelsParams,
    recipe: PretrainParams,
    seed: int,
    device: torch.device,
) -> Pretrained:
    """Build ``spec``'s network from ``seed``, load the weights it names, and train it on (images, masks).

    Images are (H, W, 3) uint8 and masks (H, W) uint8 (255 = ignore) of any size: the models' input policy
    cuts the training views. The spec's ``steps`` and ``lr`` override the recipe's.
    """
    size = spec.input_size or models.input_size
    meta = make_meta(
        arch=spec.arch,
        kwargs=spec.kwargs,
        classes=list(classes.names),
        input_size=size,
        mean=models.mean,
        std=models.std,
        input_policy=models.input_policy.policy(size),
        tta=spec.tta,
    )
    torch.manual_seed(seed)
    net = build_model(spec.arch, classes.num_classes, **spec.kwargs)
    weights = init_pretrained(net, spec.arch, classes.num_classes, spec.kwargs)  # or a clear error, before training
    x, y = InputPolicy.from_meta(meta).training_views(images, masks, models.mean, models.std)
    steps, lr = spec.steps or recipe.steps, spec.lr or recipe.lr
    start = time.monotonic()
    curve = pretrain(
        net,
        x,
        y,
        steps=steps,
        batch_size=recipe.batch_size,
        lr=lr,
        weight_decay=recipe.weight_decay,
        seed=seed,
        device=device,
        augment=spec.augment,
    )
    return Pretrained(net, meta, weights, curve, steps, lr, time.monotonic() - start)
