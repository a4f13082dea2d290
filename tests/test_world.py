"""The demo world: deterministic, VOC-readable, truth kept apart, every factor present, shares respected."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from madseg.config import load_params
from madseg.io.images import image_id, read_mask, read_rgb
from madseg.labels import IGNORE_INDEX
from madseg.stages import make_world
from madseg.world import files as world_files
from madseg.world.generate import iter_world
from madseg.world.scenes import FACTORS

ROOT = Path(__file__).resolve().parents[1]


def _tiny(tmp: Path):
    params = load_params(ROOT / "params.yaml")
    world = dataclasses.replace(
        params.world,
        n_train=24,
        n_val=8,
        n_pool=120,
        n_eval_pool=40,
        near_duplicates=6,
        benchmark_leaks=3,
        out_dir=str(tmp / "world"),
    )
    return dataclasses.replace(params, world=world)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    params = _tiny(tmp)
    with pytest.MonkeyPatch.context() as mp:  # rendered in this process (spawning workers costs more here)
        mp.setattr(world_files.os, "cpu_count", lambda: 1)
        make_world.run(params)
    return params, Path(params.world.out_dir)


def test_same_seed_gives_byte_identical_files(world, tmp_path, monkeypatch):
    params, root = world
    again = dataclasses.replace(params, world=dataclasses.replace(params.world, out_dir=str(tmp_path / "w2")))
    monkeypatch.setattr(world_files.os, "cpu_count", lambda: 1)
    make_world.run(again)
    assert _digest(root) == _digest(tmp_path / "w2")


def test_rendering_in_processes_gives_the_same_images(world):
    """One split of every kind (the demo's make_world renders all splits so, on every core)."""
    params, _ = world
    one = list(iter_world(params.world, "eval_pool"))
    two = list(iter_world(params.world, "eval_pool", workers=2))
    assert {a.kind for a in one} == {"normal", "corner", "ood"}
    assert [(a.name, a.kind, a.factors, a.jpeg) for a in one] == [(b.name, b.kind, b.factors, b.jpeg) for b in two]
    assert all(np.array_equal(a.label, b.label) for a, b in zip(one, two, strict=True))


def test_voc_layout_is_readable(world):
    params, root = world
    classes = params.dataset.class_list()
    for split, n in (("train", 24), ("val", 8)):
        names = (root / "voc/ImageSets/Segmentation" / f"{split}.txt").read_text().split()
        assert len(names) == n
        for name in names:
            image = read_rgb(root / "voc/JPEGImages" / f"{name}.jpg")
            mask = read_mask(root / "voc/SegmentationClass" / f"{name}.png", classes)
            assert image.shape[:2] == mask.shape == (64, 64)
            assert (mask == IGNORE_INDEX).any() and (mask > 0).any()


def test_pool_truth_is_apart_and_complete(world):
    _, root = world
    pool_files = sorted((root / "pool/images").iterdir())
    assert all(p.suffix == ".jpg" for p in pool_files)  # no masks or tables beside the pool images
    assert not any(k in p.name for p in pool_files for k in ("corner", "ood", "normal"))
    factors = pd.read_csv(root / "pool_truth/factors.csv", keep_default_na=False)
    assert len(factors) == 120 + 9  # the planted duplicates carry their transformed truth too
    for _, row in factors.iterrows():
        data = (root / "pool/images" / f"{row['name']}.jpg").read_bytes()
        assert image_id(data) == row["image_id"]
        mask = read_mask(root / "pool_truth/masks" / f"{row['image_id']}.png")
        if row["kind"] == "ood":
            assert not ((mask > 0) & (mask != IGNORE_INDEX)).any()
    shares = factors["kind"].value_counts(normalize=True)
    assert shares["normal"] >= 0.6
    present = set(";".join(factors["factors"]).split(";")) - {""}
    assert present == set(FACTORS)


def test_planted_duplicates_are_listed(world):
    _, root = world
    dups = pd.read_csv(root / "pool_truth/duplicates.csv")
    assert len(dups) == 9
    for _, row in dups.iterrows():
        assert (root / "pool/images" / f"{row['name']}.jpg").exists()
    assert set(dups["kind"].str.split("_").str[0]) == {"pool", "benchmark"}


def test_eval_pool_has_same_mix(world):
    _, root = world
    factors = pd.read_csv(root / "eval_pool/truth/factors.csv", keep_default_na=False)
    assert len(factors) == 40 and set(factors["kind"]) == {"normal", "corner", "ood"}
    assert len(list((root / "eval_pool/truth/masks").glob("*.png"))) == 40
    assert np.isin(factors["image_id"], [p.stem for p in (root / "pool_truth/masks").glob("*.png")]).sum() == 0
