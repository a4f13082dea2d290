"""Which torch device a stage runs on: ``device: auto | cpu | cuda | cuda:N`` in params.yaml.

What is reproducible where: on the CPU, the same inputs give byte-identical weights and predictions on the same
CPU type with the same torch thread counts (params); from-scratch training differs in the last bits between CPU
types and grows apart. On CUDA, training and inference use mixed precision (float16 autocast), and results are
reproducible on the same GPU model and driver only. Teams share results with `dvc push` / `dvc pull`.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N")

# On the CPU a forward pass takes a batch in chunks of at most this many pixels: the activations of a chunk stay in
# the cache, where a batch of large images spills to memory. Measured on a 2-core AMD EPYC, one thread: MobileNetV2
# at 224² 4-6x faster in chunks of 4 than in a batch of 64, FPN (EfficientNet-Lite0) at 384x512 3.8x in chunks of
# 1 than of 8, 2x at 160² in chunks of 4 than of 64. The demo's batches (64 images of 64²) stay whole.
CPU_CHUNK_PIXELS = 2**18


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


def cpu_chunks(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, C, H, W) -> consecutive chunks of whole images, each of at most :data:`CPU_CHUNK_PIXELS` pixels
    (one image where a single one is larger)."""
    return batch.split(max(1, CPU_CHUNK_PIXELS // (batch.shape[-2] * batch.shape[-1])))
