"""params.yaml and the config dataclasses: one source of defaults, and bad choices fail when params load."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from madseg.config import ConfigError, Params, _coerce, load_params

ROOT = Path(__file__).resolve().parents[1]


def _disagreements(cls, raw: dict, where: str) -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in raw or f.name in (
            "competitors",
            "rounds",
            "finetunes",
            "target",
            "folders",
            "reference_sets",
        ):
            continue  # the user's own models, rounds and data folders have no default (none: empty)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(raw[f.name], dict):
            out += _disagreements(hints[f.name], raw[f.name], f"{where}.{f.name}")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(default):
            continue
        value = _coerce(hints[f.name], raw[f.name], f"{where}.{f.name}", [])
        if isinstance(default, list):
            default = tuple(default)
        if value != default:
            out.append(f"{where}.{f.name}: dataclass {default!r}, params.yaml {value!r}")
    return out


def test_no_dataclass_default_disagrees_with_params_yaml():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert _disagreements(Params, raw, "params") == []


@pytest.mark.parametrize(
    ("dotted", "value", "valid"),
    [
        ("mining.strategy", "maad", "mad, entropy, random"),
        ("mining.distance", "iou", "miou, pixel_accuracy"),
        ("mining.rank_by", "vote", "pair, committee"),
        ("annotation.backend", "labelstudi0", "simulated, labelstudio"),
        ("models.input_policy.kind", "squash", "resize, shorter_side, tiles"),
    ],
)
def test_a_bad_choice_fails_at_load_listing_the_valid_values(tmp_path, dotted, value, valid):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"{dotted}: {value!r} is not one of {valid}"):
        load_params(tmp_path / "params.yaml")


def test_numbers_out_of_range_fail_at_load_all_at_once_with_what_to_write(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    wrong = {
        ("mining", "n3"): (-3, "-3 is out of range — write 1 or more (default: 20)"),
        ("selection", "n4"): (0, "0 is out of range — write 1 or more"),
        ("pretrain", "lr"): (0, "0.0 is out of range — write a number above 0"),
        ("finetune", "replay_ratio"): (1.5, "1.5 is out of range — write a number from 0 to 1"),
        ("finetune", "weight_average"): (0, "0.0 is out of range — write a number above 0 and at most 1"),
        ("mining", "seed"): (-1, "-1 is out of range — write 0 or more"),
        ("annotation", "labelstudio", "port"): (70000, "70000 is out of range — write a number from 1 to 65535"),
    }
    for (*section, key), (value, _) in wrong.items():
        node = raw
        for part in section:
            node = node[part]
        node[key] = value
    raw["models"]["target"]["steps"] = 0  # an optional number is checked too, and each number of a list
    raw["finetune"]["lr_grid"] = [0.01, -1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "params.yaml")
    for (*section, key), (_, message) in wrong.items():
        assert f"{'.'.join(section)}.{key}: {message}" in str(caught.value)
    assert "models.target.steps: 0 is out of range — write 1 or more" in str(caught.value)
    assert "finetune.lr_grid[1]: -1.0 is out of range — write a number above 0" in str(caught.value)
    assert "9 problems" in str(caught.value)


def test_an_overlay_merges_key_by_key_and_a_null_removes_an_entry(tmp_path):
    overlay = {
        "models": {"target": {"steps": 7, "kwargs": {"decoder_channels": None}}, "competitors": {"lraspp": None}},
        "crawl": {"url_list": None},  # a parameter that may be null defaults to null
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    base = load_params(ROOT / "params.yaml")
    params = load_params(ROOT / "params.yaml", overlay=tmp_path / "overlay.yaml")
    assert params.models.target.steps == 7 and params.models.target.arch == base.models.target.arch
    kept = {k: v for k, v in base.models.target.kwargs.items() if k != "decoder_channels"}
    assert params.models.target.kwargs == kept and "decoder_channels" in base.models.target.kwargs
    assert set(params.models.competitors) == set(base.models.competitors) - {"lraspp"}
    assert params.crawl.url_list is None and params.crawl.folders == base.crawl.folders
