"""Fine-tuning f_t^(i) into f_t^(i+1) on S^(1..i+1) plus S0 (replay), the learning rate chosen on T0.

The paper's recipe: SGD (momentum 0.9, weight decay 5e-4), polynomial learning-rate decay, small batches, and
an initial learning rate picked from a grid by mIoU on T0 — the choice is what keeps the fine-tuned target
from forgetting the benchmark. Every batch mixes newly labelled images with replayed S0 images at
``replay_ratio``. AdamW (decoupled weight decay) may replace SGD, as for a target pretrained with it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)


@dataclass
class GridResult:
    lr: float
    t0_miou: float
    history: list[dict] = field(default_factory=list)


def mixed_batches(
    n_new: int, n_replay: int, *, batch_size: int, replay_ratio: float, steps: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index batches mixing new and replayed samples.

    Each batch takes ``round(batch_size * replay_ratio)`` replay indices and the rest from the new set (all
    replay when there is no new sample). New samples are drawn as shuffled passes so each is seen equally
    often. Returns ``steps`` pairs (new_indices, replay_indices) of int64 arrays.
    """
    if not 0.0 <= replay_ratio <= 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1], got {replay_ratio}")
    if n_new == 0 and n_replay == 0:
        raise ValueError("nothing to train on: no new and no replay samples")
    n_rep = round(batch_size * replay_ratio) if n_new else batch_size
    n_rep = n_rep if n_replay else 0
    n_fresh = batch_size - n_rep
    new_pool: list[int] = []
    batches = []
    for _ in range(steps):
        while len(new_pool) < n_fresh and n_new:
            new_pool.extend(rng.permutation(n_new).tolist())
        fresh = np.array(new_pool[:n_fresh], dtype=np.int64)
        del new_pool[:n_fresh]
        replay = rng.integers(0, n_replay, size=n_rep).astype(np.int64) if n_rep else np.zeros(0, np.int64)
        batches.append((fresh, replay))
    return batches


def pick_best(results: Sequence[GridResult]) -> GridResult:
    """The grid entry with the highest T0 mIoU; ties go to the smaller learning rate (the gentler change)."""
    if not results:
        raise ValueError("empty learning-rate grid")
    return sorted(results, key=lambda r: (-r.t0_miou, r.lr))[0]


def average_weights(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float) -> dict:
    """The state dict ``start + share * (tuned - start)`` of two state dicts of one architecture: floating
    tensors (weights, batch-norm statistics) interpolated on ``tuned``'s device, counters taken from ``tuned``.
    share 1.0 is ``tuned``, 0.0 is ``start``."""
    if start.keys() != tuned.keys():
        raise ValueError("the two state dicts are of different architectures")
    return {
        k: torch.lerp(start[k].to(v.device, v.dtype), v, share) if v.is_floating_point() else v
        for k, v in tuned.items()
    }


# finetune.optimizer: the paper's SGD with momentum, or AdamW (decoupled weight decay; no momentum term to set)
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda weights, *, lr, momentum, weight_decay: torch.optim.SGD(
        weights, lr=lr, momentum=momentum, weight_decay=weight_decay
    ),
    "adamw": lambda weights, *, lr, momentum, weight_decay: torch.optim.AdamW(
        weights, lr=lr, weight_decay=weight_decay
    ),
}


def poly_lr(base_lr: float, step: int, total: int, power: float) -> float:
    return base_lr * (1.0 - step / max(total, 1)) ** power


def train_poly(
    model: torch.nn.Module,
    new: tuple[torch.Tensor, torch.Tensor],
    replay: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    replay_ratio: float,
    momentum: float,
    weight_decay: float,
    poly_power: float,
    seed: int,
    device: torch.device,
    optimizer: str = "sgd",
    resume_dir: Path | None = None,
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    stop_after: int | None = None,
    freeze_bn: bool = True,
) -> list[dict]:
    """Fine-tune ``model`` in place with ``optimizer`` ('sgd' with ``momentum``, or 'adamw') and a polynomially
    decaying learning rate; resumable per epoch.

    Args:
        new: images (N, 3, H, W) float32 normalised, masks (N, H, W) int64 (255 = ignore) of S^(1..i+1).
        replay: the same for S0.
        resume_dir: if given, the state after each epoch is saved there atomically and a rerun continues from
            the last finished epoch with the same result as an uninterrupted run.
        stop_after: end after this epoch (as an interruption would; for tests of resuming).
        freeze_bn: keep batch-norm running statistics as pretrained. A few small batches dominated by corner
            cases would otherwise re-estimate them and shift every prediction on normal images (forgetting);
            the affine parameters still learn.
    Returns:
        per-epoch history dicts (epoch, loss, lr).
    """
    n_new, n_replay = len(new[0]), len(replay[0])
    per_epoch = max(1, -(-max(n_new, 1) // max(1, batch_size - round(batch_size * replay_ratio))))
    total = per_epoch * epochs
    model.to(device)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {sorted(OPTIMIZERS)}")
    step_rule = OPTIMIZERS[optimizer](model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    plan = mixed_batches(n_new, n_replay, batch_size=batch_size, replay_ratio=replay_ratio, steps=total, rng=rng)
    gen = torch.Generator().manual_seed(seed)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=cuda)  # on the CPU it and autocast are no-ops: the optimizer's own numbers
    parts = {"model": model, "optimizer": step_rule, "scaler": scaler}
    state_path = resume_dir / "state.pt" if resume_dir else None
    history, start_epoch = _resume(state_path, parts, gen, device)
    if start_epoch:
        log.info("resuming fine-tune at epoch %d/%d from %s", start_epoch, epochs, state_path)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    for epoch in range(start_epoch, min(epochs, stop_after or epochs)):
        model.train()
        if freeze_bn:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        losses = []
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            fresh, rep = plan[step]
            x = torch.cat([new[0][fresh], replay[0][rep]]).to(device)
            y = torch.cat([new[1][fresh], replay[1][rep]]).to(device)
            if augment is not None:
                x, y = augment(x, y, gen)
            for group in step_rule.param_groups:
                group["lr"] = poly_lr(lr, step, total, poly_power)
            step_rule.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):  # mixed precision on GPUs
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(step_rule)
            scaler.update()
            losses.append(loss.item())
        end_lr = poly_lr(lr, (epoch + 1) * per_epoch, total, poly_power)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": end_lr})
        if state_path:
            _checkpoint_epoch(state_path, parts, gen, history)
    return history


def _resume(state_path: Path | None, parts: dict, gen: torch.Generator, device: torch.device) -> tuple[list[dict], int]:
    """Restore ``parts`` (model, optimizer, scaler) and ``gen`` from the last finished epoch: (history,
    epoch)."""
    if state_path is None or not state_path.exists():
        return [], 0
    state = torch.load(state_path, weights_only=True, map_location=device)
    for name, part in parts.items():
        part.load_state_dict(state.get(name, {}))
    gen.set_state(state["generator"])
    return state["history"], int(state["epoch"])


def _checkpoint_epoch(state_path: Path, parts: dict, gen: torch.Generator, history: list[dict]) -> None:
    """Everything a rerun needs to continue after this epoch as if uninterrupted, written atomically."""
    from madseg.io.atomic import atomic_open

    state = {name: part.state_dict() for name, part in parts.items()}
    with atomic_open(state_path, "wb") as f:
        torch.save({**state, "generator": gen.get_state(), "history": history, "epoch": len(history)}, f)


@dataclass
class FinetuneResult:
    model: torch.nn.Module
    best: GridResult
    grid: list[GridResult]
    t0_before: float

    def curve(self) -> pd.DataFrame:
        """One loss curve per grid candidate (candidate_lr); lr is the poly-decayed rate at the epoch's end."""
        rows = [{"candidate_lr": r.lr, **h} for r in self.grid for h in r.history]
        return pd.DataFrame(rows, columns=["candidate_lr", "epoch", "loss", "lr", "t0_miou"])

    def record(self, *, labelled_images: int, replay_images: int) -> dict:
        """The round's figures for metrics/finetune/round_<i>.json."""
        return {
            "chosen_lr": self.best.lr,
            "t0_miou_before": self.t0_before,
            "t0_miou_after": self.best.t0_miou,
            "labelled_images": labelled_images,
            "replay_images": replay_images,
            **{f"grid.{r.lr:g}.t0_miou": r.t0_miou for r in self.grid},
        }


def flip_and_photometric(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`madseg.training.hflip`, then :func:`madseg.training.photometric` on the images (the masks keep
    their classes: a colour-shifted or faint object is still that object)."""
    from madseg.training import hflip, photometric

    return photometric(*hflip(x, y, gen), gen)


def finetune_target(
    model: torch.nn.Module,
    meta: dict,
    *,
    new: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    replay: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    val: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    params,
    num_classes: int,
    resume_root: Path | None = None,
    device: torch.device | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` once per learning rate of ``params.lr_grid`` and keep the best on T0.

    Up to ``params.workers`` candidates train side by side, each in its own process with ``params.threads``
    torch threads; the weights depend on the thread count only, never on how many run at once.

    Args:
        new, replay, val: (images, masks) with images (H, W, 3) uint8 and masks (H, W) uint8 (255 = ignore).
        meta: the checkpoint's metadata (input_size, input policy, mean, std).
        params: a FinetuneParams section.
    """
    from concurrent.futures import ProcessPoolExecutor

    from madseg.device import resolve_device
    from madseg.inference import evaluate_model
    from madseg.models.input_policy import InputPolicy
    from madseg.workers import stop_with_parent

    device = device or resolve_device("auto")
    torch.set_num_threads(params.threads)
    policy = InputPolicy.from_meta(meta)  # the views the target was pretrained on
    new_t = policy.training_views(*new, meta["mean"], meta["std"])
    replay_t = policy.training_views(*replay, meta["mean"], meta["std"])
    shared = dict(
        model=model,
        new=new_t,
        replay=replay_t,
        val=val,
        params=params,
        meta=meta,
        num_classes=num_classes,
        device=device,
    )
    jobs = [
        {**shared, "lr": lr, "resume_dir": resume_root / f"lr_{lr:g}" if resume_root else None} for lr in params.lr_grid
    ]
    workers = min(params.workers, len(jobs))
    if workers > 1:
        # spawned processes (forking a process that has run torch's thread pools is unsafe); tensors travel
        # through shared memory
        log.info("training %d learning rates, %d at a time", len(jobs), workers)
        context = torch.multiprocessing.get_context("spawn")
        scored = copy.deepcopy(model)  # sending the jobs moves the model's weights to shared memory meanwhile
        with ProcessPoolExecutor(workers, mp_context=context, initializer=stop_with_parent) as pool:
            futures = [pool.submit(_fit_candidate, **job) for job in jobs]
            # while the candidates' processes start (importing torch takes seconds)
            t0_before = evaluate_model(scored, *val, meta=meta, num_classes=num_classes, device=device)
            fitted = [future.result() for future in futures]
    else:
        t0_before = evaluate_model(model, *val, meta=meta, num_classes=num_classes, device=device)
        fitted = [_fit_candidate(**job) for job in jobs]
    log.info("T0 mIoU before fine-tuning: %.4f", t0_before)
    grid = [result for _, result in fitted]
    for result in grid:
        log.info("lr %g: T0 mIoU %.4f", result.lr, result.t0_miou)
    best = pick_best(grid)
    chosen = copy.deepcopy(model).cpu()
    chosen.load_state_dict(fitted[grid.index(best)][0])
    return FinetuneResult(model=chosen, best=best, grid=grid, t0_before=t0_before)


def _fit_candidate(
    model: torch.nn.Module,
    new: tuple[torch.Tensor, torch.Tensor],
    replay: tuple[torch.Tensor, torch.Tensor],
    val: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    lr: float,
    params,
    meta: dict,
    num_classes: int,
    device: torch.device,
    resume_dir: Path | None,
) -> tuple[dict[str, torch.Tensor], GridResult]:
    """Train one grid candidate from a copy of ``model`` and score it on T0: (its CPU state dict, its
    result)."""
    from madseg.inference import evaluate_model
    from madseg.training import hflip

    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    candidate = copy.deepcopy(model)
    history = train_poly(
        candidate,
        new,
        replay,
        lr=lr,
        epochs=params.epochs,
        batch_size=params.batch_size,
        replay_ratio=params.replay_ratio,
        momentum=params.momentum,
        optimizer=params.optimizer,
        weight_decay=params.weight_decay,
        poly_power=params.poly_power,
        seed=params.seed,
        device=device,
        resume_dir=resume_dir,
        augment=hflip if params.augment is None else flip_and_photometric,
        freeze_bn=params.freeze_bn,
    )
    if params.weight_average < 1:  # scored on T0 as averaged: the lr is chosen for the model that is kept
        candidate.load_state_dict(average_weights(model.state_dict(), candidate.state_dict(), params.weight_average))
    score = evaluate_model(candidate, *val, meta=meta, num_classes=num_classes, device=device)
    history[-1]["t0_miou"] = score
    state = {k: v.cpu() for k, v in candidate.state_dict().items()}
    return state, GridResult(lr=lr, t0_miou=score, history=history)
