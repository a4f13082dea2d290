"""Failure slices: cheap attributes that mean what they say, a planted slice found first, no truth needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from madseg.slices import factors_recovered, find_slices, image_attributes, round_slices

CLASSES = ["background", "disc", "square"]


def test_attributes_measure_contrast_noise_sharpness_and_colour():
    rng = np.random.default_rng(0)
    flat = np.full((64, 96, 3), 128, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 25, (64, 96, 1)), 0, 255).astype(
        np.uint8
    )  # grey noise: luma sigma 25
    edges = np.zeros((64, 96, 3), np.uint8)
    edges[:, ::8] = 255
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 0] = 220
    a = {
        name: image_attributes(im)
        for name, im in (("flat", flat), ("noisy", noisy), ("edges", edges), ("red", red))
    }
    assert a["flat"]["contrast"] == 0 and a["flat"]["noise"] == 0 and a["flat"]["sharpness"] == 0
    assert a["noisy"]["noise"] == pytest.approx(
        25 / 255, rel=0.15
    )  # Immerkaer's estimate of the planted sigma
    assert a["edges"]["sharpness"] > a["noisy"]["sharpness"] > 0 and a["edges"]["noise"] < a["noisy"]["noise"]
    assert a["red"]["colourfulness"] > 5 * a["noisy"]["colourfulness"]
    assert a["flat"]["aspect"] == 1.5 and a["flat"]["megapixels"] == pytest.approx(64 * 96 / 1e6)
    with pytest.raises(ValueError, match="expected an"):
        image_attributes(np.zeros((4, 4), np.uint8))


def _pool(n=600, seed=0):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "brightness": rng.uniform(0.2, 0.8, n), "contrast": rng.uniform(0.2, 0.8, n),
        "colourfulness": rng.uniform(0, 1, n), "sharpness": rng.uniform(0, 1, n), "noise": rng.uniform(0, 1, n),
        "main_class": rng.choice(["disc", "square"], n),
    }, index=[f"{i:04d}" for i in range(n)])  # fmt: skip
    planted = table.index[:50]
    table.loc[planted, "contrast"] = rng.uniform(0.0, 0.1, 50)  # a low-contrast group ...
    in_m = table.index.isin(planted[:40]) | (rng.random(n) < 0.04)  # ... where failures concentrate
    return table, in_m, planted


def test_a_planted_low_contrast_slice_is_found_first():
    table, in_m, planted = _pool()
    slices = find_slices(table, in_m, top=5)
    first = slices.iloc[0]
    assert first["rule"].startswith("contrast <") and first["lift"] > 5
    assert len(set(first["examples"].split(";")) - set(planted)) == 0
    assert first["group_size"] >= 38 and first["pool_size"] <= 80
    # ten thresholds on contrast are one finding: the next slices say something else
    assert not any(rule.startswith("contrast <") for rule in slices["rule"].iloc[1:])


def test_a_truthless_pool_gives_slices_and_factors_validate_them():
    table, in_m, planted = _pool(seed=1)
    attributes = table.drop(columns=["main_class"])
    stats = pd.DataFrame({"id": table.index, "area_background": 0.8, "area_disc": 0.2, "area_square": 0.0,
                          "entropy": np.linspace(0, 1, len(table))})  # fmt: skip
    m_ids = table.index[in_m].tolist()
    mos = pd.DataFrame(
        {"image_id": m_ids, "mos": np.where(np.isin(m_ids, planted), 1.0, 4.0), "vetoed": False}
    )
    slices = round_slices(attributes, stats, CLASSES, m_ids, mos)
    assert {"rule", "pool_size", "group_share", "lift", "worst_share", "examples", "group_ids"} <= set(slices)
    assert slices.iloc[0]["rule"].startswith("contrast <") and slices.iloc[0]["worst_share"] > 0.9
    assert round_slices(attributes, stats, CLASSES, m_ids, None)["worst_share"].isna().all()  # no ratings yet
    assert round_slices(attributes, stats, CLASSES, [], None).empty  # nothing mined: no slice, no error
    factors = pd.Series({i: ("low_contrast" if i in set(planted) else "blur") for i in m_ids})
    assert factors_recovered(slices, factors, ["low_contrast", "blur", "rotation"]) == ["low_contrast"]
