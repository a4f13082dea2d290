"""MOS, vetoes, S and T construction, and rater agreement."""

import krippendorff
import numpy as np
import pandas as pd
import pytest

from madseg.config import check_test_set_feasible
from madseg.selection import (
    build_test_set,
    krippendorff_alpha_ordinal,
    main_class,
    mean_opinion_scores,
    ratings_left_no_choice,
    select_lowest,
)


def _scores(rows):
    return pd.DataFrame(rows, columns=["image_id", "annotator", "score", "out_of_domain"])


def test_mos_averages_and_any_ood_vote_vetoes():
    scores = _scores(
        [
            ("a", "x", 1, False),
            ("a", "y", 2, False),
            ("b", "x", 1, False),
            ("b", "y", 1, True),
            ("c", "x", 4, False),
        ]
    )
    mos = mean_opinion_scores(scores, ["a", "b", "c"])
    assert mos["image_id"].tolist() == ["a", "c", "b"]
    assert mos.set_index("image_id").loc["a", "mos"] == 1.5
    assert np.isinf(mos.set_index("image_id").loc["b", "mos"])
    assert mos.set_index("image_id").loc["b", "vetoed"]


def test_mos_rejects_missing_ratings_and_bad_scores():
    with pytest.raises(ValueError, match="no rating"):
        mean_opinion_scores(_scores([("a", "x", 3, False)]), ["a", "b"])
    with pytest.raises(ValueError, match=r"outside 1\.\.5"):
        mean_opinion_scores(_scores([("a", "x", 7, False)]), ["a"])
    with pytest.raises(ValueError, match="not candidates"):
        mean_opinion_scores(_scores([("z", "x", 3, False)]), [])


def test_select_lowest_skips_vetoed_and_previous():
    scores = _scores([("a", "x", 1, False), ("b", "x", 1, True), ("c", "x", 2, False), ("d", "x", 3, False)])
    mos = mean_opinion_scores(scores, list("abcd"))
    chosen = select_lowest(mos, 2, exclude=["a"])
    assert chosen["image_id"].tolist() == ["c", "d"]
    assert select_lowest(mos, 10)["image_id"].tolist() == ["a", "c", "d"]  # never a vetoed image


def test_a_round_whose_ratings_choose_nothing_is_named_with_its_cause():
    # 10 images of M: 3 already fine-tuned on, 2 vetoed, so S may take 5
    mos = _mos_table(10, vetoed={"img008", "img009"})
    trained_on = ["img000", "img001", "img002", "elsewhere"]
    assert ratings_left_no_choice(mos, 4, exclude=trained_on) is None  # 4 of 5: the ratings still choose
    assert ratings_left_no_choice(mos, 0, exclude=trained_on) is None  # the last round selects no S
    warning = ratings_left_no_choice(mos, 5, exclude=trained_on)
    assert "all 5 images of M (10)" in warning and "3 already fine-tuned on, 2 vetoed" in warning
    assert "exclude_trained_on" in warning and "fewer than n4" not in warning
    short = ratings_left_no_choice(mos, 8)  # nothing fine-tuned on yet: only n3 can help
    assert "all 8 images" in short and "fewer than n4 = 8" not in short and "exclude_trained_on" not in short
    assert "fewer than n4 = 9" in ratings_left_no_choice(mos, 9)


def _mos_table(n, vetoed=()):
    ids = [f"img{i:03d}" for i in range(n)]
    return pd.DataFrame({"image_id": ids, "mos": np.linspace(1, 5, n), "vetoed": [i in vetoed for i in ids]})


def test_build_T_constraints_and_determinism():
    mos = _mos_table(60, vetoed={"img000", "img001"})
    classes = pd.Series(["disc"] * 30 + ["square"] * 20 + ["ring"] * 10, index=mos["image_id"])
    t1 = build_test_set(mos, classes, size=20, t_cap=8, seed=3, exclude=["img002", "img003"])
    t2 = build_test_set(mos, classes, size=20, t_cap=8, seed=3, exclude=["img002", "img003"])
    pd.testing.assert_frame_equal(t1, t2)
    assert len(t1) == 20 and t1["order"].tolist() == list(range(20))
    assert not set(t1["image_id"]) & {"img000", "img001", "img002", "img003"}
    assert t1["main_class"].value_counts().max() <= 8
    assert t1["image_id"].is_unique
    t3 = build_test_set(mos, classes, size=20, t_cap=8, seed=4)
    assert t3["image_id"].tolist() != t1["image_id"].tolist()


def test_build_T_errors_when_cap_cannot_fill():
    mos = _mos_table(30)
    classes = pd.Series(["disc"] * 30, index=mos["image_id"])
    with pytest.raises(ValueError, match=r"cannot|only 5"):
        build_test_set(mos, classes, size=10, t_cap=5, seed=0)
    with pytest.raises(ValueError, match="raise t_cap"):
        check_test_set_feasible(num_foreground=6, t_size=40, t_cap=6)
    check_test_set_feasible(num_foreground=6, t_size=40, t_cap=7)


def test_main_class_is_largest_foreground_area():
    area = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "area_background": [0.9, 0.5, 1.0],
            "area_disc": [0.02, 0.3, 0.0],
            "area_ring": [0.08, 0.2, 0.0],
        }
    )
    got = main_class(area, ["background", "disc", "ring"])
    assert got.to_dict() == {"a": "ring", "b": "disc", "c": "background"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_matches_reference_package(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, size=40)
    rows = []
    for i, t in enumerate(truth):
        for a in range(3):
            if rng.random() < 0.9:
                rows.append((f"i{i}", f"a{a}", int(np.clip(t + rng.integers(-1, 2), 1, 5)), False))
    scores = _scores(rows)
    ours = krippendorff_alpha_ordinal(scores)
    pivot = scores.pivot_table(index="annotator", columns="image_id", values="score").to_numpy(float)
    ref = krippendorff.alpha(reliability_data=pivot, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    assert ours == pytest.approx(ref, abs=1e-9)


def test_krippendorff_alpha_perfect_agreement_is_one():
    scores = _scores([(f"i{i}", a, 1 + i % 5, False) for i in range(10) for a in ("x", "y")])
    assert krippendorff_alpha_ordinal(scores) == pytest.approx(1.0)


def test_rater_model_scores_undo_a_lenient_raters_bias():
    from madseg.selection import opinion_scores

    # image "b" is rated only by the lenient rater: its mean looks good, its modelled quality does not
    rows = []
    for i in range(60):
        q = 1 + (i % 5)
        rows += [
            {"image_id": f"{i:02d}", "annotator": "fair", "score": q, "out_of_domain": False},
            {"image_id": f"{i:02d}", "annotator": "lenient", "score": min(q + 1, 5), "out_of_domain": False},
        ]
    rows += [
        {"image_id": "b", "annotator": "lenient", "score": 3, "out_of_domain": False},
        {"image_id": "a", "annotator": "fair", "score": 3, "out_of_domain": False},
        {"image_id": "v", "annotator": "fair", "score": 1, "out_of_domain": True},
    ]
    scores = pd.DataFrame(rows)
    candidates = sorted(set(scores["image_id"]))
    mean = opinion_scores(scores, candidates).set_index("image_id")
    model = opinion_scores(scores, candidates, "rater_model").set_index("image_id")
    assert mean.at["b", "mos"] == mean.at["a", "mos"] == 3
    assert model.at["b", "mos"] < model.at["a", "mos"]  # the lenient rater's 3 is worth less than the fair one's
    assert model.at["v", "mos"] == np.inf and model.index[-1] == "v"
    with pytest.raises(ValueError, match="unknown score aggregation"):
        opinion_scores(scores, candidates, "median")


def test_round_robin_spreads_s_over_the_groups_within_its_quota():
    from madseg.selection import select_lowest, select_round_robin

    # group A holds the 8 worst images, B and C milder ones, D only good ones beyond the pool
    rows, mos = [], []
    for group, ids, base in (
        ("A", range(8), 1.0),
        ("B", range(8, 12), 2.0),
        ("C", range(12, 16), 2.5),
        ("D", range(16, 20), 4.5),
    ):
        for i in ids:
            rows.append({"image_id": f"{i:02d}", "competitor": group, "class": "disc", "direction": "t"})
            mos.append({"image_id": f"{i:02d}", "mos": base + i / 100, "vetoed": False})
    rows.append({"image_id": "00", "competitor": "B", "class": "disc", "direction": "t"})  # found twice
    mos.append({"image_id": "zz", "mos": float("inf"), "vetoed": True})
    table = pd.DataFrame(mos).sort_values(["mos", "image_id"]).reset_index(drop=True)
    candidates = pd.DataFrame(rows)
    lowest = select_lowest(table, 6)
    assert set(lowest["image_id"]) == {f"{i:02d}" for i in range(6)}  # all from A
    chosen = select_round_robin(table, candidates, 6, pool_factor=2.0)  # pool: the 12 lowest (A and B)
    group_of = candidates.drop_duplicates("image_id", keep="first").set_index("image_id")["competitor"]
    counts = group_of[chosen["image_id"]].value_counts()
    assert len(chosen) == 6 and counts.max() - counts.min() <= 1 and set(counts.index) == {"A", "B"}
    assert chosen["mos"].is_monotonic_increasing and "zz" not in set(chosen["image_id"])
    wide = select_round_robin(table, candidates, 6, exclude=["00", "01"], pool_factor=2.3)  # 14: A, B, C
    counts = group_of[wide["image_id"]].value_counts()
    assert dict(counts) == {"A": 2, "B": 2, "C": 2} and not {"00", "01"} & set(wide["image_id"])
    with pytest.raises(ValueError, match="pool_factor"):
        select_round_robin(table, candidates, 6, pool_factor=0.5)
