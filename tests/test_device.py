"""`device` and the input policy in params.yaml: wrong values fail when params load, with the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from madseg.config import ConfigError, load_params
from madseg.device import cpu_chunks, resolve_device
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import TorchPredictor

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path, **changes):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_fails_at_load_and_auto_uses_the_cpu(tmp_path):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"device: '{name}' asks for a GPU, but torch sees none"):
            load_params(_params(tmp_path, device=name))
    assert load_params(_params(tmp_path, device="auto")).device == "auto"
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


def test_bad_choice_values_fail_at_load_listing_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"):
        load_params(_params(tmp_path, device="tpu"))
    with pytest.raises(ConfigError, match="'squash' is not one of resize, shorter_side, tiles"):
        load_params(_params(tmp_path, models__input_policy__kind="squash"))
    params = load_params(_params(tmp_path, models__input_policy__kind="shorter_side"))
    policy = params.models.input_policy.policy(params.models.input_size)
    assert policy.kind == "shorter_side" and policy.size == (64, 64)


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [
        ((64, 3, 64, 64), [64]),  # the demo's batch: whole (2**18 pixels)
        ((65, 3, 64, 64), [64, 1]),
        ((10, 3, 224, 224), [5, 5]),  # the embedder's input
        ((3, 3, 384, 512), [1, 1, 1]),  # a photo alone is over the budget: one image per chunk
    ],
)
def test_cpu_chunks_split_a_batch_into_whole_images_within_the_pixel_budget(shape, sizes):
    batch = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    chunks = cpu_chunks(batch)
    assert [len(c) for c in chunks] == sizes
    assert torch.equal(torch.cat(chunks), batch)


def test_a_predictor_on_the_cpu_returns_every_image_of_a_chunked_batch_in_order():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, padding=1).double().eval()
    lut = torch.arange(4).numpy()
    predictor = TorchPredictor(
        net,
        device=torch.device("cpu"),
        batch_size=8,
        lut=lut,
        policy=InputPolicy(kind="resize", size=(300, 300)),
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    batch = torch.randn(6, 3, 300, 300, dtype=torch.float64)  # 90,000 pixels each: chunks of 2
    with torch.inference_mode():
        expected = torch.cat([net(image[None]) for image in batch])
    assert torch.equal(predictor.forward(batch), expected)
