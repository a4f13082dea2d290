"""Pretraining: reproducible weights, and the optional photometric and scale augmentations."""

from __future__ import annotations

import pytest
import torch

from madseg.training import photometric, pretrain, rescale


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
    for augment in ("photometric", "scale"):
        augmented = train(augment)
        assert torch.equal(augmented, train(augment)) and not torch.equal(plain, augmented)


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="unknown augmentation 'sepia'; valid: \\['photometric', 'scale'\\]"):
        train("sepia")


def test_photometric_keeps_shape_and_input_and_is_seeded():
    x, y = data(n=64)
    before = x.clone()
    a, ay = photometric(x, y, torch.Generator().manual_seed(3))
    b, _ = photometric(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(x, before) and torch.equal(a, b) and a.shape == x.shape and ay is y
    changed = (a - x).abs().flatten(1).amax(1) > 1e-6
    assert 0 < int(changed.sum()) < 64  # some samples change, some are left as they are
    grey = (a[:, 0] == a[:, 1]).flatten(1).all(1) & (a[:, 1] == a[:, 2]).flatten(1).all(1)
    assert 3 <= int(grey.sum()) <= 25  # about one in five becomes grey
    # contrast is scaled around each sample's own channel means, which stay where they were
    assert torch.allclose(a.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)


def test_scale_jitter_moves_image_and_mask_together_and_ignores_the_margin():
    # a planted square of class 1 on class 0, with the image equal to the mask: after rescaling, every labelled
    # pixel must still show its own class's value (bilinear edges aside) and padding must be ignored, never class 0
    n, size = 32, 32
    y = torch.zeros(n, size, size, dtype=torch.long)
    y[:, 8:24, 8:24] = 1
    x = y[:, None].float().expand(-1, 3, -1, -1).clone()
    ax, ay = rescale(x, y, torch.Generator().manual_seed(5))
    again = rescale(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(ax, again[0]) and torch.equal(ay, again[1]) and ax.shape == x.shape and ay.shape == y.shape
    assert set(ay.unique().tolist()) <= {0, 1, 255}
    assert (ay == 255).any() and (ay[:, 16, 16] == 1).sum() > n // 2  # some views shrank; the centre mostly stays
    interior = ay != 255
    agree = (ax[:, 0].round().long() == ay)[interior].float().mean()
    assert agree > 0.97  # image and mask were moved by the same resize and crop
    assert torch.all(ax.permute(1, 0, 2, 3)[:, ay == 255] == 0)  # the margin is the mean colour
    sizes = (ay == 1).flatten(1).sum(1).float()
    assert sizes.min() < 16 * 16 < sizes.max()  # both smaller and larger objects than the original
