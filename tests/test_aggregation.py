"""The rater model: planted biases and inconsistencies recovered, missing ratings, degenerate and bad input,
and the same biases as Netflix's sureal on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from madseg.rater_model import estimate


def _ratings(bias: dict, spread: dict, n: int = 300, seed: int = 0, rounded: bool = False) -> tuple:
    rng = np.random.default_rng(seed)
    quality = rng.uniform(1.5, 4.5, n)
    rows = []
    for j, q in enumerate(quality):
        for rater in bias:
            score = q + bias[rater] + spread[rater] * rng.normal()
            rows.append(
                {
                    "image_id": f"{j:04d}",
                    "annotator": rater,
                    "score": float(np.clip(np.round(score), 1, 5)) if rounded else score,
                }
            )
    return pd.DataFrame(rows), quality


def test_planted_biases_and_inconsistencies_are_recovered():
    bias = {"a": 0.0, "b": 0.4, "c": -0.3, "d": -0.1}
    spread = {"a": 0.3, "b": 0.6, "c": 0.4, "d": 0.8}
    scores, quality = _ratings(bias, spread)
    model = estimate(scores)
    planted = np.array(list(bias.values())) - np.mean(list(bias.values()))  # the model's origin: zero-mean
    assert np.sqrt(np.mean((model.bias[list(bias)].to_numpy() - planted) ** 2)) < 0.1
    assert np.allclose(model.inconsistency[list(spread)].to_numpy(), list(spread.values()), atol=0.1)
    # the most consistent rater weighs most, so quality beats the plain mean of the scores
    plain = scores.groupby("image_id")["score"].mean().to_numpy()
    assert np.abs(model.quality.to_numpy() - quality).mean() < np.abs(plain - np.mean(planted) - quality).mean()


def test_the_simulated_annotators_biases_within_a_tenth():
    bias = {
        "sim0": 0.0,
        "sim1": 0.25,
        "sim2": -0.25,
    }  # params.yaml's simulated annotators, 1..5 integer scores
    scores, _ = _ratings(bias, dict.fromkeys(bias, 0.5), rounded=True, seed=1)
    model = estimate(scores)
    assert np.sqrt(np.mean((model.bias[list(bias)].to_numpy() - np.array(list(bias.values()))) ** 2)) < 0.1


def test_missing_ratings_and_vetoes_are_skipped():
    scores, _ = _ratings({"a": 0.0, "b": 0.5, "c": -0.5}, {"a": 0.3, "b": 0.3, "c": 0.3}, n=200)
    sparse = scores.sample(frac=0.7, random_state=0)  # every image rated by some raters only
    sparse.loc[sparse.index[:5], "score"] = np.nan  # out-of-domain vetoes carry no score
    model = estimate(sparse)
    assert abs(model.bias["b"] - model.bias["c"] - 1.0) < 0.15
    assert model.quality.index.is_unique and len(model.quality) <= 200


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="lack columns"):
        estimate(pd.DataFrame({"image_id": ["a"], "score": [3.0]}))
    with pytest.raises(ValueError, match="no rating"):
        estimate(pd.DataFrame({"image_id": ["a"], "annotator": ["x"], "score": [np.nan]}))


def test_same_biases_as_sureal():
    sureal = pytest.importorskip("sureal.subjective_model", reason="sureal is a dev dependency")
    from types import SimpleNamespace

    from sureal.dataset_reader import RawDatasetReader

    bias = {"a": 0.0, "b": 0.4, "c": -0.3}
    scores, _ = _ratings(bias, {"a": 0.5, "b": 0.6, "c": 0.4}, n=120, seed=2)
    table = scores.pivot(index="image_id", columns="annotator", values="score")
    dataset = SimpleNamespace(
        dataset_name="madseg",
        yuv_fmt="yuv420p",
        width=1,
        height=1,
        ref_videos=[{"content_id": 0, "content_name": "pool", "path": "ref"}],
        dis_videos=[
            {"content_id": 0, "asset_id": n, "path": image, "os": row.to_dict()}
            for n, (image, row) in enumerate(table.iterrows())
        ],
    )
    theirs = sureal.MaximumLikelihoodEstimationModelContentOblivious(RawDatasetReader(dataset)).run_modeling()
    ours = estimate(scores)
    assert np.allclose(ours.bias[list(table.columns)].to_numpy(), theirs["observer_bias"], atol=0.02)


def test_bias_rmse_against_planted_biases_is_small_and_order_sensitive():
    from madseg.validity import rater_bias_rmse

    bias = {"a": 0.5, "b": -0.2, "c": -0.3}
    scores, _ = _ratings(bias, {"a": 0.3, "b": 0.3, "c": 0.3}, n=300, seed=4)
    assert rater_bias_rmse(scores, list(bias), list(bias.values())) < 0.05
    # a constant offset of every planted bias changes nothing: both are measured from the raters' average
    assert rater_bias_rmse(scores, list(bias), [b + 1 for b in bias.values()]) < 0.05
    assert rater_bias_rmse(scores, list(bias), [0.5, -0.3, -0.2]) > 0.05  # names and biases paired in order
