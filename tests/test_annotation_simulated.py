"""Simulated annotators: deterministic, order-independent, noisy (not an oracle), vetoes at the set rates; and
the four annotation stages end to end on the simulated backend in a tiny project folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from madseg import paths
from madseg.annotation.simulated import quality_level, simulate_ratings, true_miou
from madseg.config import AnnotationParams, SimulatedAnnotators, load_params
from madseg.io.atomic import read_json
from madseg.io.images import encode_png, read_mask, write_mask
from madseg.io.store import PredictionStore, Shard
from madseg.io.tables import read_csv, write_csv
from madseg.labels import make_class_list

CLASSES = make_class_list("demo")
SIM = SimulatedAnnotators()


def _ids(n: int) -> list[str]:
    return [f"{i:016x}" for i in range(n)]


def test_quality_levels_follow_the_thresholds():
    t = (0.3, 0.5, 0.7, 0.85)
    assert [quality_level(m, t) for m in (0.0, 0.29, 0.3, 0.6, 0.7, 0.9, 1.0)] == [1, 1, 2, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="4 increasing"):
        quality_level(0.5, (0.5, 0.3, 0.7, 0.8))


def test_ratings_are_deterministic_and_order_independent():
    miou = dict(zip(_ids(50), np.linspace(0, 1, 50), strict=True))
    a = simulate_ratings(miou, set(), SIM, annotators=3, round_key="0")
    b = simulate_ratings(dict(reversed(list(miou.items()))), set(), SIM, annotators=3, round_key="0")
    pd.testing.assert_frame_equal(a, b)
    few = simulate_ratings({k: miou[k] for k in _ids(50)[10:20]}, set(), SIM, annotators=3, round_key="0")
    pd.testing.assert_frame_equal(few, a[a["image_id"].isin(_ids(50)[10:20])].reset_index(drop=True))
    other_round = simulate_ratings(miou, set(), SIM, annotators=3, round_key="1")
    assert not other_round["score"].equals(a["score"])


def test_ratings_are_noisy_but_track_quality():
    miou = dict(zip(_ids(400), np.repeat([0.1, 0.6, 0.95], [134, 133, 133]), strict=True))
    table = simulate_ratings(miou, set(), SIM, annotators=3, round_key="0")
    assert table["score"].between(1, 5).all() and len(table) == 1200
    table["level"] = table["image_id"].map(lambda i: quality_level(miou[i], SIM.thresholds))
    exact = (table["score"] == table["level"]).mean()
    assert 0.4 < exact < 0.95  # noise is there: not an oracle
    means = table.groupby("level")["score"].mean()
    assert means.is_monotonic_increasing and means[1] < 2 < means[3] < 4 < means[5]
    # biases shift annotators: sim1 (+0.25) rates higher than sim2 (-0.25) on mid-quality images
    mid = table[table["level"] == 3].groupby("annotator")["score"].mean()
    assert mid["sim1"] > mid["sim2"]


def test_no_noise_and_no_bias_is_the_level():
    sim = dataclasses.replace(SIM, noise_sd=0.0, bias=(0.0, 0.0, 0.0), false_veto_rate=0.0)
    miou = {"a": 0.2, "b": 0.75}
    assert simulate_ratings(miou, set(), sim, annotators=3, round_key="0")["score"].tolist() == [
        1,
        1,
        1,
        4,
        4,
        4,
    ]


def test_vetoes_at_their_rates():
    ids = _ids(2000)
    ood = set(ids[:1000])
    table = simulate_ratings(dict.fromkeys(ids, 0.5), ood, SIM, annotators=3, round_key="0")
    on_ood = table[table["image_id"].isin(ood)]["out_of_domain"].mean()
    off_ood = table[~table["image_id"].isin(ood)]["out_of_domain"].mean()
    assert 0.77 < on_ood < 0.83 and 0.003 < off_ood < 0.02
    with pytest.raises(ValueError, match="not an oracle"):
        simulate_ratings({"a": 0.5}, set(), dataclasses.replace(SIM, ood_veto_prob=1.0), annotators=3, round_key="0")
    with pytest.raises(ValueError, match="need as many biases"):
        simulate_ratings({"a": 0.5}, set(), SIM, annotators=4, round_key="0")


def test_true_miou_needs_truth():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[:2] = 1
    assert true_miou({"x": a}, {"x": a}, 7) == {"x": 1.0}
    assert true_miou({"x": b}, {"x": a}, 7)["x"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no truth"):
        true_miou({"y": a}, {"x": a}, 7)


# ------------------------------------------------------------------------- stages on the simulated backend
@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_tiny_project()


TRUTH = Path("my_labelled_pool") / "truth"  # a user's own fully labelled pool, outside data/world (a dry run)


def make_tiny_project() -> tuple[list[str], dict[str, np.ndarray]]:
    """In the current folder: a pool of 6 images, their truth, round 0's predictions, M and overlays."""
    rng = np.random.default_rng(0)
    ids = sorted(_ids(6))
    truth, preds = {}, {}
    for n, i in enumerate(ids):
        t = np.zeros((8, 10), np.uint8)
        t[2:6, 2 + n % 3 : 7] = 1 + n % 6
        p = t.copy()
        p[rng.random(t.shape) < 0.1 * n] = 0  # quality falls with n
        truth[i], preds[i] = t, p
        write_mask(TRUTH / "masks" / f"{i}.png", t, CLASSES)
        (paths.POOL_IMAGES).mkdir(parents=True, exist_ok=True)
        (paths.POOL_IMAGES / f"{i}.png").write_bytes(encode_png(np.zeros((8, 10, 3), np.uint8)))
    kinds = ["normal", "corner", "ood", "normal", "normal", "ood"]
    write_csv(TRUTH / "factors.csv", pd.DataFrame({"image_id": ids, "name": ids, "kind": kinds, "factors": ""}))
    pool_paths = [str(paths.POOL_IMAGES / f"{i}.png") for i in ids]
    write_csv(paths.POOL_INDEX, pd.DataFrame({"id": ids, "path": pool_paths, "width": 10, "height": 8}))
    store = PredictionStore(paths.target_predictions("0"))
    n = len(ids)
    shard = Shard(
        ids=ids,
        maps=[preds[i] for i in ids],
        area=np.zeros((n, 7), np.float32),
        entropy=np.zeros(n, np.float32),
        maxprob=np.ones(n, np.float32),
    )
    store.write_shard(0, shard, "fp")
    store.finalize(model="target", classes=CLASSES.names, shard_size=64, ids=ids, fingerprint="fp")
    mining = paths.mining_dir("0")
    write_csv(mining / "M.csv", pd.DataFrame({"image_id": ids[::-1], "pair": "x"}))
    for i in ids:
        (mining / "overlays" / "rater").mkdir(parents=True, exist_ok=True)
        (mining / "overlays" / "rater" / f"{i}.png").write_bytes(encode_png(np.zeros((8, 20, 3), np.uint8)))
    return ids, truth


def _params():
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    annotation = params.annotation
    simulated = dataclasses.replace(annotation.simulated, truth_dir=str(TRUTH))
    return dataclasses.replace(params, annotation=dataclasses.replace(annotation, simulated=simulated))


def test_stages_on_the_simulated_backend(project):
    from madseg.stages import export_pixel_tasks, export_weak_tasks, import_masks, import_scores

    ids, truth = project
    params = _params()
    assert params.annotation.backend == "simulated"
    export_weak_tasks.run(params, round_key="0")
    receipt = read_json("annotations/round_0/weak_export.json")
    assert receipt["backend"] == "simulated" and receipt["images"] == ids and receipt["simulated"]["noise_sd"] == 0.5
    import_scores.run(params, round_key="0")
    scores = read_csv("annotations/round_0/scores.csv", required=["image_id", "annotator", "score", "out_of_domain"])
    assert len(scores) == 18 and sorted(scores["annotator"].unique()) == ["sim0", "sim1", "sim2"]
    raw = read_json("annotations/round_0/weak_raw.json")
    assert raw["backend"] == "simulated" and raw["simulated"]["ood_veto_prob"] == 0.8 and len(raw["answers"]) == 18
    metrics = read_json("metrics/annotation/weak_round_0.json")
    assert metrics["ratings_requested"] == 18 and metrics["ratings_received"] == 18
    assert metrics["ratings_lead_time_total_s"] is None  # nothing was timed
    first = Path("annotations/round_0/scores.csv").read_bytes()
    import_scores.run(params, round_key="0")
    assert Path("annotations/round_0/scores.csv").read_bytes() == first  # byte-identical re-run

    write_csv("annotations/round_0/S.csv", pd.DataFrame({"image_id": ids[:3]}))
    write_csv("annotations/round_0/T.csv", pd.DataFrame({"image_id": ids[2:5]}))
    export_pixel_tasks.run(params, round_key="0")
    import_masks.run(params, round_key="0")
    table = read_csv("annotations/round_0/masks.csv", required=["image_id", "role", "annotator"])
    assert table["role"].tolist() == ["S", "S", "both", "T", "T"]
    for i in ids[:5]:
        np.testing.assert_array_equal(read_mask(f"annotations/round_0/masks/{i}.png", CLASSES), truth[i])
    assert read_json("metrics/annotation/pixel_round_0.json")["masks_received"] == 5


def test_missing_overlay_and_wrong_receipt_are_errors(project):
    from madseg.stages import export_weak_tasks, import_masks

    ids, _ = project
    params = _params()
    (paths.mining_dir("0") / "overlays" / "rater" / f"{ids[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 rater overlays missing"):
        export_weak_tasks.run(params, round_key="0")
    paths.annotations_dir("0").mkdir(parents=True, exist_ok=True)
    (paths.annotations_dir("0") / "pixel_export.json").write_text('{"backend": "labelstudio", "kind": "pixel"}')
    with pytest.raises(ValueError, match="re-run the export stage"):
        import_masks.run(params, round_key="0")
    assert not (paths.annotations_dir("0") / "masks").exists()


def test_unknown_backend_lists_the_valid_ones():
    from madseg.annotation.backend import make_backend

    with pytest.raises(ValueError, match="valid backends"):
        make_backend(AnnotationParams(backend="mturk"), classes=CLASSES)
