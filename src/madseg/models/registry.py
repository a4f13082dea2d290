"""One mapping from architecture names to builders of bare (randomly initialised) networks.

Names are ``smp.<Architecture>`` (segmentation-models-pytorch, any encoder via ``encoder_name``) and
``tv.<function>`` (torchvision's segmentation models). Every model returns logits (N, K, H, W).
Kwargs that name pretrained weights (``encoder_weights``, ``weights``, ...) are accepted and set aside here:
:func:`madseg.models.weights.init_pretrained` loads them once before training, so that rebuilding a model from
its checkpoint never looks for weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torchvision.models.segmentation as tvseg
from torch import nn

from madseg.models.archs import SMP_ARCHS, TV_ARCHS, check_arch
from madseg.models.weights import split_weight_kwargs


class TorchvisionLogits(nn.Module):
    """Wraps a torchvision segmentation model so that forward returns the 'out' logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _smp_builder(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **kwargs: Any) -> nn.Module:
        kwargs, _ = split_weight_kwargs(kwargs)
        kwargs.update(encoder_weights=None)
        kwargs.setdefault("encoder_name", "resnet18")
        return getattr(smp, arch)(classes=num_classes, **kwargs)

    return build


def _tv_builder(fn: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **kwargs: Any) -> nn.Module:
        kwargs, _ = split_weight_kwargs(kwargs)
        kwargs.update(weights=None, weights_backbone=None)
        if fn.startswith(("deeplabv3", "fcn")):
            kwargs.setdefault("aux_loss", False)
        return TorchvisionLogits(getattr(tvseg, fn)(num_classes=num_classes, **kwargs))

    return build


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **{f"smp.{a}": _smp_builder(a) for a in SMP_ARCHS},
    **{f"tv.{f}": _tv_builder(f) for f in TV_ARCHS},
}


def build_model(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the bare network (no weights loaded); an unknown ``arch`` raises ValueError listing the valid names."""
    check_arch(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return REGISTRY[arch](num_classes, **dict(kwargs))
