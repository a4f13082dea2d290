"""Which torch device a stage runs on: ``device: auto | cpu | cuda | cuda:N`` in params.yaml.

What is reproducible where: on the CPU, the same inputs give byte-identical weights and predictions on the same
CPU type with the same torch thread counts (params); from-scratch training differs in the last bits between CPU
types and grows apart. On CUDA, training and inference use mixed precision (float16 autocast), and results are
reproducible on the same GPU model and driver only. Teams share results with `dvc push` / `dvc pull`.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """The torch device that ``name`` means here; ValueError when it names a GPU that is not present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"{name!r} asks for a GPU, but torch sees none here (use auto or cpu)")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"{name!r}: only {torch.cuda.device_count()} GPU(s) here (cuda:0..)")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
