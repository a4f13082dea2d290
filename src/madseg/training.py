"""Pretraining the demo's models from scratch on S0 (real campaigns bring their own checkpoints).

AdamW with a one-cycle schedule over a fixed number of steps (not a time budget: the same params must give the
same weights), horizontal flips only (S0's objects are upright; rotations are a corner case on purpose).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(False)


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
) -> list[dict]:
    """Train ``model`` in place on images (N, 3, H, W) float32 and masks (N, H, W) int64 (255 = ignore).

    Returns the loss curve as dicts (step, loss) every ``log_every`` steps.
    """
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"need matching, non-empty images and masks, got {len(images)} and {len(masks)}")
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    curve, running = [], []
    order = torch.randperm(len(images), generator=gen)
    cursor = 0
    for step in tqdm(range(steps), desc="pretrain", unit="step", mininterval=2.0):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x, y = images[idx], masks[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
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
