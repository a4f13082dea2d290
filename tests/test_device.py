"""`device` and the input policy in params.yaml: wrong values fail when params load, with the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from madseg.config import ConfigError, load_params
from madseg.device import resolve_device

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
