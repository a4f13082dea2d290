"""Failure slices: cheap attributes that mean what they say, a planted slice found first, no truth needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from madseg.attributes import image_attributes
from madseg.slices import (
    factors_recovered,
    find_slices,
    hindsight_rules,
    kmeans,
    nearest,
    robust_units,
    round_slices,
)

CLASSES = ["background", "disc", "square"]


def test_attributes_measure_contrast_noise_sharpness_and_colour():
    rng = np.random.default_rng(0)
    flat = np.full((64, 96, 3), 128, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 25, (64, 96, 1)), 0, 255).astype(np.uint8)  # grey noise: luma sigma 25
    edges = np.zeros((64, 96, 3), np.uint8)
    edges[:, ::8] = 255
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 0] = 220
    a = {name: image_attributes(im) for name, im in (("flat", flat), ("noisy", noisy), ("edges", edges), ("red", red))}
    assert a["flat"]["contrast"] == 0 and a["flat"]["noise"] == 0 and a["flat"]["sharpness"] == 0
    assert a["noisy"]["noise"] == pytest.approx(25 / 255, rel=0.15)  # Immerkaer's estimate of the planted sigma
    assert a["edges"]["sharpness"] > a["noisy"]["sharpness"] > 0 and a["edges"]["noise"] < a["noisy"]["noise"]
    assert a["red"]["colourfulness"] > 5 * a["noisy"]["colourfulness"]
    assert a["red"]["colour_cast"] > 0.3 and a["flat"]["colour_cast"] == 0 and a["red"]["saturation"] > 0.8
    assert a["flat"]["rms_contrast"] == 0 < a["edges"]["rms_contrast"]
    # edges are measured after a blur: stripes are edges, the noisy flat grey barely has any
    assert a["edges"]["edge_density"] > 0.2 > a["noisy"]["edge_density"] and a["flat"]["edge_density"] == 0
    yy, xx = np.mgrid[0:64, 0:96]
    diagonal = np.repeat((((xx + yy) // 4) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2)
    assert image_attributes(diagonal)["oblique_edges"] > 0.9 > 0.1 > a["edges"]["oblique_edges"]
    assert a["flat"]["aspect"] == 1.5 and a["flat"]["megapixels"] == pytest.approx(64 * 96 / 1e6)
    with pytest.raises(ValueError, match="expected an"):
        image_attributes(np.zeros((4, 4), np.uint8))


def _pool(n=2000, seed=0):
    """A pool whose attributes scatter around a bulk, with a planted tail: 50 low-contrast images."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "brightness": rng.normal(0.5, 0.1, n),
            "contrast": rng.normal(0.5, 0.1, n),
            "colourfulness": rng.normal(0.3, 0.1, n),
            "sharpness": rng.normal(0.1, 0.03, n),
            "noise": rng.normal(0.02, 0.005, n),
            "main_class": rng.choice(["disc", "square"], n),
        },
        index=[f"{i:04d}" for i in range(n)],
    )
    planted = table.index[:50]
    table.loc[planted, "contrast"] = rng.uniform(0.0, 0.1, 50)  # a low-contrast group ...
    in_m = table.index.isin(planted[:40]) | (rng.random(n) < 0.02)  # ... where failures concentrate
    return table, in_m, planted


def test_a_planted_low_contrast_slice_is_found_first():
    table, in_m, planted = _pool()
    slices = find_slices(table, in_m, top=5)
    first = slices.iloc[0]
    assert first["rule"].startswith("contrast <") and first["lift"] > 5
    assert len(set(first["examples"].split(";")) - set(planted)) == 0
    assert first["group_size"] >= 38 and first["pool_size"] <= 80
    assert first["rule_precision"] > 0.9 and first["rule_recall"] > 0.9  # the rule names the cluster
    # slices are clusters: no image in two of them, so one finding is not reported twice
    members = [set(ids.split(";")) for ids in slices["group_ids"]]
    assert sum(map(len, members)) == len(set().union(*members))


def test_slices_are_deterministic_and_scale_by_sampling(monkeypatch):
    import madseg.slices as slices_module

    table, in_m, planted = _pool(seed=3)
    first = find_slices(table, in_m, seed=7)
    pd.testing.assert_frame_equal(first, find_slices(table, in_m, seed=7))
    # a pool larger than FIT_ROWS: centres fitted on M and a sample of the rest; the planted kind survives
    monkeypatch.setattr(slices_module, "FIT_ROWS", 300)
    sampled = find_slices(table, in_m, seed=7)
    assert set(sampled.iloc[0]["group_ids"].split(";")) >= set(planted[:40])
    with pytest.raises(ValueError, match="clusters must be at least 1"):
        find_slices(table, in_m, clusters=0)
    with pytest.raises(ValueError, match="in_group has 3 entries"):
        find_slices(table, np.ones(3, bool))


def test_kmeans_separates_planted_blobs_and_keeps_tails_far():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 100)
    x = centres[truth] + rng.normal(0, 0.5, (300, 2))
    labels, _ = nearest(x, kmeans(x, 3, seed=0))
    assert len({(t, lab) for t, lab in zip(truth, labels, strict=True)}) == 3  # each blob one cluster
    units = robust_units(pd.DataFrame({"a": np.r_[np.linspace(0, 1, 99), 1e6], "flat": 1.0}))
    assert units.shape == (100, 1) and units[-1, 0] == 5.0  # clipped; the constant column is dropped


def test_a_truthless_pool_gives_slices_and_factors_validate_them():
    table, in_m, planted = _pool(seed=1)
    attributes = table.drop(columns=["main_class"])
    stats = pd.DataFrame(
        {
            "id": table.index,
            "area_background": 0.8,
            "area_disc": 0.2,
            "area_square": 0.0,
            "entropy": np.random.default_rng(2).uniform(0, 1, len(table)),
        }
    )
    m_ids = table.index[in_m].tolist()
    mos = pd.DataFrame({"image_id": m_ids, "mos": np.where(np.isin(m_ids, planted), 1.0, 4.0), "vetoed": False})
    slices = round_slices(attributes, stats, CLASSES, m_ids, mos)
    # embeddings at weight 0 (the default) are not even looked at: none of these ids has a row, and no error
    unread = round_slices(
        attributes, stats, CLASSES, m_ids, mos, embedding_ids=[], embeddings=np.zeros((0, 4)), embedding_weight=0.0
    )
    pd.testing.assert_frame_equal(unread, slices)
    with pytest.raises(ValueError, match="no embedding for"):
        round_slices(attributes, stats, CLASSES, m_ids, mos, embedding_ids=[], embeddings=np.zeros((0, 4)))
    assert {"rule", "pool_size", "group_share", "lift", "worst_share", "examples", "group_ids"} <= set(slices)
    assert slices.iloc[0]["rule"].startswith("contrast <") and slices.iloc[0]["worst_share"] > 0.9
    assert round_slices(attributes, stats, CLASSES, m_ids, None)["worst_share"].isna().all()  # no ratings yet
    assert round_slices(attributes, stats, CLASSES, [], None).empty  # nothing mined: no slice, no error
    # a pool whose images all look alike: one kind, and no rule to tell it apart
    alike = pd.DataFrame(0.5, index=table.index[:30], columns=attributes.columns)
    same = round_slices(alike, stats.head(30).assign(entropy=0.5), CLASSES, list(table.index[:10]), None)
    assert same["rule"].tolist() == ["(no rule separates it)"] and same.iloc[0]["group_size"] == 10
    factors = pd.Series({i: ("low_contrast" if i in set(planted) else "blur") for i in m_ids})
    assert factors_recovered(slices, factors, ["low_contrast", "blur", "rotation"]) == ["low_contrast"]


def test_hindsight_rules_isolate_a_planted_factor_and_not_a_rare_one():
    table, in_m, planted = _pool()
    m_ids = table.index[in_m]
    factors = pd.Series("", index=m_ids)
    factors[m_ids[np.isin(m_ids, planted)]] = "low_contrast"
    factors[m_ids[~np.isin(m_ids, planted)][:2]] = "rare"  # two carriers cannot fill a slice of five
    rules = hindsight_rules(table, in_m, factors, ["low_contrast", "rare", "absent"])
    assert rules["low_contrast"].startswith("contrast <") and rules["rare"] is None and rules["absent"] is None
    # the rule found does recover the factor by factors_recovered's test
    attribute, _, value = rules["low_contrast"].split()
    members = [i for i in m_ids if table.loc[i, attribute] < float(value)]
    assert factors_recovered(pd.DataFrame({"group_ids": [";".join(members)]}), factors, ["low_contrast"])
    assert hindsight_rules(table, np.zeros(len(table), bool), factors, ["low_contrast"]) == {"low_contrast": None}
