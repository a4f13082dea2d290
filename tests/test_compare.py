"""`madseg compare`: a MAD competition between two models — planted answers, bad input, and the real command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from madseg.compare import competition_set, score_competition
from madseg.mining import area_bands
from tests.project import run
from tests.test_mining import CLASSES, DISC, SQUARE, _ids, make_store

ALL_BANDS = area_bands(
    np.ones((1, CLASSES.num_classes)) * 0.1, CLASSES, overrides={name: [0.0, 1.0] for name in CLASSES.names[1:]}
)


def _square(cls: int, lo: int = 2, hi: int = 6) -> np.ndarray:
    m = np.zeros((8, 8), np.uint8)
    m[lo:hi, lo:hi] = cls
    return m


def _planted(tmp_path: Path):
    """8 images whose truth is a disc; a is always right, b is wrong (square) on images 1, 4, 6."""
    ids = _ids(8)
    truth = {i: _square(DISC) for i in ids}
    wrong = {ids[1], ids[4], ids[6]}
    a_maps = [_square(DISC) for _ in ids]
    b_maps = [_square(SQUARE) if i in wrong else _square(DISC) for i in ids]
    a = make_store(tmp_path / "a", "a", ids, a_maps, shard_size=3)
    b = make_store(tmp_path / "b", "b", ids, b_maps, shard_size=3)
    return ids, truth, wrong, a, b


def test_competition_set_is_where_the_models_disagree(tmp_path):
    _, _, wrong, a, b = _planted(tmp_path)
    m = competition_set(a.iter_shards(), b.iter_shards(), ALL_BANDS, CLASSES, n=3)
    assert set(m["image_id"]) == wrong  # the 3 disagreements rank first in every group
    assert list(m["image_id"]) == sorted(m["image_id"])
    assert (m["best_distance"] > 0).all()


def test_scores_name_the_better_model_with_a_paired_interval(tmp_path):
    _, truth, wrong, a, b = _planted(tmp_path)
    m_ids = sorted(wrong)
    result = score_competition(
        m_ids, a.read_maps(m_ids), b.read_maps(m_ids), truth, CLASSES, names=("old", "new"), n_boot=200
    )
    s = result.scores
    assert s["old.miou"] == pytest.approx(1.0)
    assert s["new.miou"] < 0.5
    assert s["winner"] == "old"
    assert (s["wins.old"], s["wins.new"], s["ties"], s["n_images"]) == (3, 0, 0, 3)
    assert s["miou_difference_ci_low"] <= s["miou_difference"] <= s["miou_difference_ci_high"]
    assert s["miou_difference"] == pytest.approx(100 * (s["old.miou"] - s["new.miou"]))
    assert list(result.per_image.columns) == ["image_id", "miou_old", "miou_new"]
    assert (result.per_image["miou_old"] == 1.0).all()


def test_identical_models_tie(tmp_path):
    ids, truth, _, a, _ = _planted(tmp_path)
    s = score_competition(ids, a.read_maps(ids), a.read_maps(ids), truth, CLASSES).scores
    assert s["winner"] == "tie" and s["ties"] == len(ids) and s["miou_difference"] == 0


def test_bad_input_is_a_clear_error(tmp_path):
    ids, truth, _, a, b = _planted(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        score_competition([], {}, {}, truth, CLASSES)
    with pytest.raises(ValueError, match="no ground truth"):
        score_competition(ids, a.read_maps(ids), b.read_maps(ids), {}, CLASSES)
    other = make_store(tmp_path / "c", "c", _ids(9)[1:], [_square(DISC)] * 8, shard_size=3)
    with pytest.raises(ValueError, match="missing"):
        competition_set(a.iter_shards(), other.iter_shards(), ALL_BANDS, CLASSES, n=2)


@pytest.mark.slow
def test_command_compares_two_rounds_of_the_target(tiny_project, tmp_path):
    """The real command on the tiny demo: f_t^(0) against f_t^(1) on D_eval, simulated annotators, resumable."""
    for rel in ("params.yaml", "models/target_0.pt", "models/target_1.pt", "data/world/voc", "data/world/eval_pool"):
        src = tiny_project / rel
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / rel)
    eval_pool = tmp_path / "data/world/eval_pool"
    factors = pd.read_csv(eval_pool / "truth" / "factors.csv")
    pd.DataFrame(
        {"id": factors["image_id"], "path": [f"data/world/eval_pool/images/{n}.jpg" for n in factors["name"]]}
    ).to_csv(tmp_path / "eval.csv", index=False)
    cmd = [
        "madseg",
        "compare",
        "models/target_0.pt",
        "models/target_1.pt",
        "--pool",
        "eval.csv",
        "--truth",
        "data/world/eval_pool/truth",
        "--name",
        "r0-vs-r1",
        "--name-a",
        "round0",
        "--name-b",
        "round1",
        "--n",
        "2",
    ]
    run(cmd, tmp_path)
    scores = json.loads((tmp_path / "metrics/compare/r0-vs-r1.json").read_text())
    m = pd.read_csv(tmp_path / "data/compare/r0-vs-r1/M.csv")
    assert scores["n_images"] == len(m) > 0
    assert scores["winner"] in {"round0", "round1", "tie"}
    assert 0 <= scores["round0.miou"] <= 1 and 0 <= scores["round1.miou"] <= 1
    shard = next((tmp_path / "data/compare/r0-vs-r1/round0/shards").glob("*.npz"))
    before = shard.stat().st_mtime_ns
    run(cmd, tmp_path)  # finished shards and the receipt are reused; the scores are the same
    assert shard.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "metrics/compare/r0-vs-r1.json").read_text()) == scores

    missing = run([*cmd[:2], "models/nope.pt", *cmd[3:]], tmp_path, check=False)
    assert missing.returncode != 0 and "nope.pt" in missing.stderr
