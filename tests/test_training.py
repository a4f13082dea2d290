"""Pretraining: reproducible weights, and the optional photometric augmentation."""

from __future__ import annotations

import pytest
import torch

from madseg.training import photometric, pretrain


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))


def data(n=12, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 3, (n, size, size), generator=g)


def train(augment=None) -> torch.Tensor:
    net = tiny_net()
    images, masks = data()
    pretrain(
        net,
        images,
        masks,
        steps=4,
        batch_size=4,
        lr=1e-2,
        weight_decay=0.0,
        seed=0,
        device=torch.device("cpu"),
        augment=augment,
    )
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_same_seed_same_weights_and_augmentation_is_used():
    plain = train()
    assert torch.equal(plain, train())
    augmented = train("photometric")
    assert torch.equal(augmented, train("photometric")) and not torch.equal(plain, augmented)


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="unknown augmentation 'sepia'; valid: \\['photometric'\\]"):
        train("sepia")


def test_photometric_keeps_shape_and_input_and_is_seeded():
    x, _ = data(n=64)
    before = x.clone()
    a = photometric(x, torch.Generator().manual_seed(3))
    b = photometric(x, torch.Generator().manual_seed(3))
    assert torch.equal(x, before) and torch.equal(a, b) and a.shape == x.shape
    changed = (a - x).abs().flatten(1).amax(1) > 1e-6
    assert 0 < int(changed.sum()) < 64  # some samples change, some are left as they are
    grey = (a[:, 0] == a[:, 1]).flatten(1).all(1) & (a[:, 1] == a[:, 2]).flatten(1).all(1)
    assert 3 <= int(grey.sum()) <= 25  # about one in five becomes grey
    # contrast is scaled around each sample's own channel means, which stay where they were
    assert torch.allclose(a.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
