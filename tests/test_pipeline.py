"""End to end: `madseg demo` (the per-model stages side by side, the rounds by the real `dvc repro`, then the
evaluations side by side) of the whole loop on the tiny test configuration, in a scratch git repo.

Checks every stage's outputs and metrics, that a second repro is a no-op, that a stage the demo ran outside
`dvc repro` rebuilds to the same bytes inside it, that changing one round's parameter reruns only what depends
on it, and that a clone + `dvc pull` reproduces the metrics without recomputing.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.project import run as _sh

pytestmark = pytest.mark.slow


def test_every_stage_ran_and_wrote_its_outputs(tiny_project):
    status = _sh(["dvc", "status", "-q"], tiny_project, check=False)
    assert status.returncode == 0, status.stdout
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    index = pd.read_csv(tiny_project / "data/index/pool.csv", dtype={"id": str})
    assert index["id"].is_monotonic_increasing and len(index) > 0
    for key in params["rounds"]:
        ann = tiny_project / f"annotations/round_{key}"
        m = pd.read_csv(tiny_project / f"data/mining/round_{key}/M.csv", dtype={"image_id": str})
        t = pd.read_csv(ann / "T.csv", dtype={"image_id": str})
        s = pd.read_csv(ann / "S.csv", dtype={"image_id": str})
        assert len(t) == params["selection"]["t_size"] and set(t["image_id"]) <= set(m["image_id"])
        want_s = params["selection"]["n4"] if key in params["finetunes"] else 0
        assert len(s) <= want_s and (want_s == 0) == (len(s) == 0)
        masks = {p.stem for p in (ann / "masks").glob("*.png")}
        assert set(t["image_id"]) | set(s["image_id"]) == masks
        metrics = json.loads((tiny_project / f"metrics/rounds/round_{key}.json").read_text())
        for model in ["target", *params["models"]["competitors"]]:
            assert 0.0 <= metrics[f"{model}.T0.miou"] <= 1.0
            assert 0.0 <= metrics[f"{model}.T.miou"] <= 1.0
    for spec in params["finetunes"].values():
        assert (tiny_project / f"models/target_{spec['next']}.pt").exists()
    summary = json.loads((tiny_project / "metrics/summary.json").read_text())
    assert summary["round"] == max(int(k) for k in params["rounds"])
    table = pd.read_csv(tiny_project / "metrics/table1.csv")
    assert table["model"].iloc[0] == "target"
    validity = json.loads((tiny_project / "metrics/validity.json").read_text())
    for key in ("corner_miou_gain", "t0_drop", "precision_ratio_vs_random", "target_wrong_share"):
        assert isinstance(validity[key], float), key
    precision = json.loads((tiny_project / "metrics/mining_precision.json").read_text())
    ratio = precision["mad.mean_image_miou"] / precision["random.mean_image_miou"]
    assert validity["m_over_random_miou"] == pytest.approx(ratio, rel=1e-12)  # pandas parses the last digit its way
    # the cross-seed study has not run in this scratch repo: its margins are absent, not invented
    assert validity["mad_minus_entropy"] is None and validity["seeds"] is None


def test_second_repro_is_a_noop(tiny_project):
    out = _sh(["dvc", "repro"], tiny_project).stdout
    assert "Running stage" not in out, out


def test_side_by_side_pretraining_equals_dvc_repro(tiny_project):
    """The demo trained the models in parallel processes; `dvc repro -f -s` of one of them alone gives its bytes."""
    kept = {p: (tiny_project / p).read_bytes() for p in ("dvc.lock", "metrics/pretrain/fpn.json")}
    try:
        _sh(["dvc", "repro", "-f", "-s", "pretrain@fpn"], tiny_project)

        def model_out(lock: str) -> dict:
            outs = yaml.safe_load(lock)["stages"]["pretrain@fpn"]["outs"]
            return next(out for out in outs if out["path"] == "models/competitors/fpn")

        assert model_out((tiny_project / "dvc.lock").read_text()) == model_out(kept["dvc.lock"].decode())
    finally:  # the training time in fpn.json differs: put the recorded state back
        for p, data in kept.items():
            (tiny_project / p).write_bytes(data)
    assert _sh(["dvc", "status", "-q"], tiny_project, check=False).returncode == 0


def test_changing_one_round_reruns_only_its_dependants(tiny_project):
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    last = max(params["rounds"], key=int)
    # bootstrap resamples affect only evaluate@* and summarize; dry-run lists what would run
    out = _sh(["dvc", "repro", "--dry", f"evaluate@{last}"], tiny_project).stdout
    assert "Running stage" not in out
    params["evaluation"]["bootstrap"] = params["evaluation"]["bootstrap"] + 1
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = _sh(["dvc", "repro", "--dry"], tiny_project).stdout
        ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
        # only the stages that read evaluation params; their dependants rerun only if these outputs change
        assert ran == sorted(f"evaluate@{k}" for k in params["rounds"]), ran
    finally:
        params["evaluation"]["bootstrap"] -= 1
        (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_clone_and_pull_reproduces_without_recomputing(tiny_project, tmp_path):
    remote = tmp_path / "remote"
    _sh(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], tiny_project)
    _sh(["git", "add", "-A"], tiny_project)
    _sh(["git", "commit", "-qm", "results"], tiny_project)
    _sh(["dvc", "push", "-q"], tiny_project)
    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(tiny_project), str(clone)], tmp_path)
    _sh(["dvc", "pull", "-q"], clone)
    assert _sh(["dvc", "status", "-q"], clone, check=False).returncode == 0
    out = _sh(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out
    assert (clone / "metrics/summary.json").read_text() == (tiny_project / "metrics/summary.json").read_text()


def test_adding_a_round_runs_only_the_new_round(tiny_project):
    params_path = tiny_project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    last = max(params["rounds"], key=int)
    new = str(int(last) + 1)
    params["rounds"][last]["finetune"] = True
    params["rounds"][new] = {"prev": last, "finetune": False}
    params["final_round"] = new
    params["finetunes"][last] = {"prev": params["rounds"][last]["prev"], "next": new}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        # `dvc status` names every stage whose deps, params or outs changed (a dry run cannot look past the
        # new target checkpoint, which does not exist yet)
        ran = set(json.loads(_sh(["dvc", "status", "--json"], tiny_project).stdout))
        per_round = {name.split("@")[1] for name in ran if "@" in name}
        # the old last round now selects S and fine-tunes into f_t^(new); nothing of earlier rounds reruns
        assert per_round == {last, new}, ran
        assert not ran & {"make_world", "crawl_index", "pretrain_target"}
        assert {f"select_S@{last}", f"finetune@{last}", f"mine@{new}", f"evaluate@{new}"} <= ran
    finally:
        params_path.write_text(original)


def test_experiment_runs_a_variant_without_touching_the_main_line(tiny_project):
    """`dvc exp run --temp -S`: another mining strategy for round 0, the workspace left as it was (the variant
    stops at its M: what follows runs the same stages the main line's tests already cover)."""
    before = {p: (tiny_project / p).read_bytes() for p in ("params.yaml", "dvc.lock", "data/mining/round_0/M.csv")}
    _sh(["dvc", "exp", "run", "--temp", "-n", "random-r0", "-S", "mining.strategy=random", "mine@0"], tiny_project)
    assert {p: (tiny_project / p).read_bytes() for p in before} == before
    assert _sh(["dvc", "status", "-q"], tiny_project, check=False).returncode == 0
    shown = json.loads(_sh(["dvc", "exp", "show", "--json"], tiny_project).stdout)
    exps = [rev for commit in shown for exp in commit.get("experiments") or [] for rev in exp.get("revs", [])]
    variant = next(rev for rev in exps if rev.get("name") == "random-r0")
    assert variant["data"]["params"]["params.yaml"]["data"]["mining"]["strategy"] == "random"
    _sh(["dvc", "exp", "remove", "random-r0"], tiny_project)
