"""Fine-tuning: replay mixing, learning-rate grid choice on T0, and resume after an interruption."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from madseg.config import FinetuneParams
from madseg.finetuning import (
    GridResult,
    average_weights,
    finetune_target,
    flip_and_photometric,
    mixed_batches,
    pick_best,
    train_poly,
)
from madseg.inference import evaluate_model
from madseg.models.checkpoint import make_meta
from madseg.models.registry import build_model
from madseg.training import hflip


def test_mixed_batches_hold_the_replay_ratio_and_cycle_new_samples():
    rng = np.random.default_rng(0)
    batches = mixed_batches(10, 100, batch_size=8, replay_ratio=0.25, steps=5, rng=rng)
    assert all(len(new) == 6 and len(rep) == 2 for new, rep in batches)
    seen = np.concatenate([new for new, _ in batches])
    assert np.bincount(seen, minlength=10).min() >= 2  # 30 draws over 10 samples: every one seen
    only_replay = mixed_batches(0, 5, batch_size=4, replay_ratio=0.5, steps=2, rng=rng)
    assert all(len(n) == 0 and len(r) == 4 for n, r in only_replay)
    with pytest.raises(ValueError, match="replay_ratio"):
        mixed_batches(1, 1, batch_size=2, replay_ratio=1.5, steps=1, rng=rng)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_frozen_batch_norm_keeps_its_pretrained_statistics(freeze_bn):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 3, 1))
    before = model[1].running_mean.clone()
    data = (
        torch.randn(8, 3, 4, 4) + 3.0,
        torch.randint(0, 3, (8, 4, 4)),
    )  # shifted inputs move the statistics
    train_poly(
        model,
        data,
        data,
        lr=1e-3,
        epochs=1,
        batch_size=4,
        replay_ratio=0.5,
        momentum=0.9,
        weight_decay=0.0,
        poly_power=0.9,
        seed=0,
        device=torch.device("cpu"),
        freeze_bn=freeze_bn,
    )
    assert torch.equal(model[1].running_mean, before) == freeze_bn
    assert model[1].weight.grad is not None  # the affine parameters learn either way


def test_pick_best_prefers_t0_then_the_smaller_rate():
    grid = [GridResult(1e-3, 0.80), GridResult(5e-3, 0.82), GridResult(1e-2, 0.82)]
    assert pick_best(grid).lr == 5e-3


def _data(n, seed):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    masks = [(im[..., 0] > 127).astype(np.uint8) for im in images]  # learnable: class = bright red channel
    return images, masks


def _model():
    torch.manual_seed(0)
    kwargs = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    meta = make_meta(
        arch="smp.Unet", kwargs=kwargs, classes=["background", "red"], input_size=32, mean=[0.5] * 3, std=[0.25] * 3
    )
    return build_model("smp.Unet", 2, **kwargs), meta


def _finetune(model, meta, params):
    """finetune_target on the CPU with the tests' planted data: 8 new images, 16 replayed, 8 for T0."""
    new, replay, val = _data(8, 1), _data(16, 2), _data(8, 3)
    return finetune_target(
        model, meta, new=new, replay=replay, val=val, params=params, num_classes=2, device=torch.device("cpu")
    )


def test_grid_is_recorded_and_the_best_t0_model_is_returned():
    model, meta = _model()
    params = dataclasses.replace(
        FinetuneParams(), lr_grid=(1e-4, 5e-2), epochs=2, batch_size=4, workers=1
    )  # side by side: next test
    result = _finetune(model, meta, params)
    assert [g.lr for g in result.grid] == [1e-4, 5e-2]
    assert result.best.t0_miou == max(g.t0_miou for g in result.grid)
    assert all(len(g.history) == 2 for g in result.grid)


def test_weight_averaging_keeps_the_share_asked_for_and_scores_the_averaged_model():
    start = {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(5)}
    tuned = {"w": torch.tensor([2.0, 4.0, -2.0]), "bn.num_batches_tracked": torch.tensor(9)}
    half = average_weights(start, tuned, 0.5)
    assert torch.equal(half["w"], torch.tensor([1.0, 2.0, -1.0])) and int(half["bn.num_batches_tracked"]) == 9
    assert torch.equal(average_weights(start, tuned, 1.0)["w"], tuned["w"])
    with pytest.raises(ValueError, match="different architectures"):
        average_weights(start, {"w": tuned["w"]}, 0.5)

    model, meta = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for share in (1.0, 0.5):
        params = FinetuneParams(lr_grid=(5e-2,), epochs=2, batch_size=4, workers=1, weight_average=share)
        runs[share] = _finetune(model, meta, params)
    tuned, averaged = runs[1.0].model.state_dict(), runs[0.5].model.state_dict()
    for k, v in before.items():  # the same training, then halfway back to the start
        if v.is_floating_point():
            assert torch.allclose(averaged[k], (v + tuned[k]) / 2, atol=1e-6), k
    weight = next(k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, tuned[k]))
    assert not torch.equal(averaged[weight], tuned[weight])
    # the lr is chosen on the model that is kept: its T0 is scored after averaging
    kept = evaluate_model(runs[0.5].model, *_data(8, 3), meta=meta, num_classes=2, device=torch.device("cpu"))
    assert runs[0.5].best.t0_miou == kept


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_interrupted_finetune_resumes_to_the_same_weights(tmp_path, optimizer):
    """Also AdamW's moments come back: a resumed run ends on the uninterrupted run's weights bit for bit."""
    from madseg.models.input_policy import InputPolicy

    policy = InputPolicy(size=(32, 32))
    new = policy.training_views(*_data(8, 1), mean=[0.5] * 3, std=[0.25] * 3)
    replay = policy.training_views(*_data(8, 2), mean=[0.5] * 3, std=[0.25] * 3)
    kw = dict(
        lr=1e-2,
        batch_size=4,
        replay_ratio=0.5,
        momentum=0.9,
        weight_decay=5e-4,
        poly_power=0.9,
        seed=0,
        device=torch.device("cpu"),
        optimizer=optimizer,
    )
    straight, _ = _model()
    train_poly(straight, new, replay, epochs=3, **kw)

    resumed, _ = _model()
    train_poly(resumed, new, replay, epochs=3, resume_dir=tmp_path, stop_after=2, **kw)  # "killed" after epoch 2
    assert (tmp_path / "state.pt").exists()
    fresh, _ = _model()  # a new process: weights come back from the saved state
    history = train_poly(fresh, new, replay, epochs=3, resume_dir=tmp_path, **kw)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; valid: \\['adamw', 'sgd'\\]"):
        train_poly(fresh, new, replay, epochs=1, **{**kw, "optimizer": "adam"})


@pytest.mark.slow  # two spawned processes, each importing torch
def test_candidates_trained_side_by_side_match_one_after_the_other():
    """Processes change the schedule, not the numbers: same grid scores and bitwise the same chosen weights."""
    _, meta = _model()
    # a plain torch network (with batch norm): the spawned workers then import neither smp nor timm
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)
    )
    data = dict(new=_data(8, 1), replay=_data(16, 2), val=_data(8, 3), num_classes=2, device=torch.device("cpu"))
    base = dataclasses.replace(FinetuneParams(), lr_grid=(1e-3, 3e-2), epochs=1, batch_size=4, threads=1)
    serial = finetune_target(model, meta, params=base, **data)
    parallel = finetune_target(model, meta, params=dataclasses.replace(base, workers=2), **data)
    assert [(g.lr, g.t0_miou, g.history) for g in parallel.grid] == [(g.lr, g.t0_miou, g.history) for g in serial.grid]
    for a, b in zip(serial.model.state_dict().values(), parallel.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_photometric_augmentation_changes_colours_not_classes():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = torch.randn(16, 3, 8, 8)
    y = torch.randint(0, 4, (16, 8, 8))
    fx, fy = hflip(x, y, gen())
    px, py = flip_and_photometric(x, y, gen())
    assert torch.equal(py, fy)  # the same flips; masks keep their classes
    assert not torch.allclose(px, fx)  # colours and contrast changed
    again = flip_and_photometric(x, y, gen())
    assert torch.equal(again[0], px) and torch.equal(x, x.clone())  # seeded; the input untouched
