"""The names of the buildable architectures, apart from their builders (which import torch): params are checked
against them when they load, in a few milliseconds."""

from __future__ import annotations

import difflib

SMP_ARCHS = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3", "DeepLabV3Plus", "Linknet", "PSPNet", "PAN", "MAnet")
TV_ARCHS = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "lraspp_mobilenet_v3_large",
    "fcn_resnet50",
    "fcn_resnet101",
)
ARCHS = tuple(sorted([*(f"smp.{a}" for a in SMP_ARCHS), *(f"tv.{f}" for f in TV_ARCHS)]))


def check_arch(arch: str) -> None:
    """Raise ValueError for an unknown architecture name, suggesting the closest and listing the valid ones."""
    if arch in ARCHS:
        return
    close = difflib.get_close_matches(arch, ARCHS, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "name one of them"
    raise ValueError(f"unknown architecture {arch!r} — {hint} (valid: {', '.join(ARCHS)})")
