"""Self-consistency views: the transformations, maps mapped back, a shared failure that only a view finds, params."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from madseg.config import ConfigError, load_params
from madseg.inference import fingerprint, predict_pool
from madseg.io.images import encode_png, image_id
from madseg.io.store import PredictionStore
from madseg.labels import make_class_list
from madseg.mining import mine_mad
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import TorchPredictor, class_lut
from madseg.models.views import VIEWS, ViewPredictor, apply_view, competitor_name

ROOT = Path(__file__).resolve().parents[1]
CLASSES = make_class_list("demo")
K = CLASSES.num_classes
WIDE = np.array([[np.nan, np.nan]] + [[0.0, 1.0]] * (K - 1))  # no area filter


class BrightIsDisc(torch.nn.Module):
    """A per-pixel 'segmenter': disc where luma exceeds 0.6, background elsewhere (logits for every class)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        others = torch.full_like(luma, -50.0).expand(-1, K - 2, -1, -1)
        return torch.cat([torch.full_like(luma, 6.0), 10 * luma, others], dim=1)


def predictor(view: str | None = None):
    p = TorchPredictor(
        BrightIsDisc(),
        policy=InputPolicy(kind="resize", size=(32, 32)),
        mean=(0, 0, 0),
        std=(1, 1, 1),
        lut=class_lut(CLASSES.names, CLASSES, None),
        device=torch.device("cpu"),
    )
    return p if view is None else ViewPredictor(p, view)


def disc_image(inside: float, outside: float, x0: int = 4, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(int(inside * 100))
    img = np.full((size, size, 3), outside * 255, np.float32)
    img[8:20, x0 : x0 + 10] = inside * 255
    return np.clip(img + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_keeps_an_image_an_image(view):
    img = disc_image(0.8, 0.2)
    out = apply_view(view, img)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape == ((16, 16, 3) if view == "half_scale" else img.shape)
    maps = predictor(view).predict([img]).maps
    assert maps[0].shape == img.shape[:2]  # every view's map lies on the image's own pixels


def test_geometric_views_map_back_onto_the_image():
    img = disc_image(0.9, 0.1, x0=2)  # a disc on the left
    plain = predictor().predict([img]).maps[0]
    assert plain[10:18, 3:11].min() == 1 and plain[:, 16:].max() == 0
    # a per-pixel model is equivariant: mirrored, predicted and mirrored back, the map is the plain one
    np.testing.assert_array_equal(predictor("hflip").predict([img]).maps[0], plain)
    half = predictor("half_scale").predict([img]).maps[0]
    assert (half == plain).mean() > 0.9


def test_views_are_checked_and_change_the_fingerprint(tmp_path):
    with pytest.raises(ValueError, match="unknown view"):
        apply_view("sepia", disc_image(0.5, 0.5))
    with pytest.raises(ValueError, match="unknown view"):
        ViewPredictor(predictor(), "sepia")
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    prints = {fingerprint(model, ["a"], None, v) for v in (None, *VIEWS)}
    assert len(prints) == len(VIEWS) + 1  # a view's store never passes for the plain target's


def test_a_view_finds_a_failure_every_model_shares(tmp_path):
    """Low-contrast discs: the target and its twin competitor both miss them (a shared failure, so MAD between
    them proposes nothing there); the target seen through a contrast stretch finds them, and only them."""
    normal = [disc_image(0.9, 0.15 + 0.02 * i) for i in range(6)]
    faint = [disc_image(0.45, 0.33 + 0.01 * i) for i in range(4)]  # the planted failure
    rows = []
    for i, img in enumerate(normal + faint):
        data = encode_png(img)
        path = tmp_path / "pool" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        rows.append({"id": image_id(data), "path": str(path), "faint": i >= len(normal)})
    index = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    stores = {}
    for name, view in (
        ("target", None),
        ("twin", None),
        (competitor_name("contrast_stretch"), "contrast_stretch"),
    ):
        stores[name] = PredictionStore(tmp_path / name)
        predict_pool(
            predictor(view),
            index,
            stores[name],
            model_name=name,
            classes=CLASSES,
            fingerprint=name,
            shard_size=4,
            batch_size=3,
            workers=0,
        )
    comps = {n: s.iter_shards() for n, s in stores.items() if n != "target"}
    candidates = mine_mad(stores["target"].iter_shards(), comps, WIDE, CLASSES, n3=4, distance="miou")
    found = candidates[candidates["distance"] > 0]
    faint_ids = set(index.loc[index["faint"], "id"])
    assert set(found["image_id"]) == faint_ids
    assert set(found["competitor"]) == {"self_contrast_stretch"}  # provenance: the view that found them


def test_params_name_views_and_keep_self_names_for_them(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["mining"]["self_consistency"] == []  # the paper's MAD by default

    def load(edit) -> object:
        changed = copy.deepcopy(raw)
        edit(changed)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(changed))
        return load_params(path)

    got = load(lambda r: r["mining"].update(self_consistency=["contrast_stretch", "hflip"]))
    assert list(got.mining.self_consistency) == ["contrast_stretch", "hflip"]
    with pytest.raises(ConfigError, match=r"mining\.self_consistency: unknown view"):
        load(lambda r: r["mining"].update(self_consistency=["sepia"]))
    with pytest.raises(ConfigError, match="listed twice"):
        load(lambda r: r["mining"].update(self_consistency=["hflip", "hflip"]))
    with pytest.raises(ConfigError, match="the target's views"):
        load(lambda r: r["models"]["competitors"].update(self_unet=r["models"]["competitors"]["unet"]))


class LooksLeft(torch.nn.Module):
    """A per-row 'segmenter' that is not mirror-symmetric: each pixel's logits weigh its left neighbour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.nn.functional.pad(x, (1, 0))[..., :-1]
        score = (2 * left - x).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(score), score, torch.full_like(score, -50.0).expand(-1, K - 2, -1, -1)], 1)


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror_image():
    def plain(tta=None) -> TorchPredictor:
        policy = InputPolicy(kind="resize", size=(16, 16))
        lut = class_lut(CLASSES.names, CLASSES, None)
        return TorchPredictor(LooksLeft(), policy=policy, mean=(0,) * 3, std=(1,) * 3, lut=lut, tta=tta)

    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model, averaged = LooksLeft(), plain("hflip").forward(x)
    np.testing.assert_allclose(averaged, (model(x) + model(x.flip(-1)).flip(-1)) / 2, atol=1e-6)
    assert not torch.allclose(averaged, plain().forward(x))  # the model itself is not symmetric ...
    np.testing.assert_allclose(plain("hflip").forward(x.flip(-1)), averaged.flip(-1), atol=1e-6)  # ... its TTA is
    with pytest.raises(ValueError, match="unknown test-time augmentation 'vflip'"):
        plain("vflip")


def test_a_targets_tta_is_kept_in_its_checkpoint_and_its_view_refused(tmp_path):
    from madseg.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
    from madseg.models.predictors import load_predictor
    from madseg.models.registry import build_model

    kwargs = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    common = {"arch": "smp.Unet", "kwargs": kwargs, "classes": list(CLASSES.names), "input_size": 32}
    assert "tta" not in make_meta(**common, mean=[0] * 3, std=[1] * 3)  # checkpoints without it keep their bytes
    meta = make_meta(**common, mean=[0] * 3, std=[1] * 3, tta="hflip")
    save_checkpoint(tmp_path / "t.pt", build_model("smp.Unet", K, **kwargs), meta, provenance={})
    assert load_checkpoint(tmp_path / "t.pt")[1]["tta"] == "hflip"
    assert load_predictor(tmp_path / "t.pt", classes=CLASSES, device=torch.device("cpu")).tta == "hflip"

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"]["target"]["tta"] = "hflip"
    raw["mining"]["self_consistency"] = ["hflip"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"self_consistency: the target averages over its hflip view"):
        load_params(tmp_path / "params.yaml")
    raw["mining"]["self_consistency"] = ["contrast_stretch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").models.target.tta == "hflip"
    competitor = next(iter(raw["models"]["competitors"]))
    raw["models"]["competitors"][competitor] |= {"source": "predictions", "path": "maps", "tta": "hflip"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"competitors.{competitor}.tta: its maps are precomputed"):
        load_params(tmp_path / "params.yaml")
