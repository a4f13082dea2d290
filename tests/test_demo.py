"""`madseg demo`'s side-by-side runner on a scratch DVC repository of trivial stages (the real runs are in
test_pipeline, whose tiny project is built by `madseg demo`)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest
import yaml

from madseg import demo
from madseg.demo import run_side_by_side
from madseg.stops import StagesNotRun
from tests.project import run as sh

DVC = str(Path(sys.executable).parent / "dvc")


def _write(path: str, text: str) -> str:
    return f"python -c \"import pathlib; pathlib.Path('{path}').write_text({text})\""


def _project(tmp_path, stages: dict) -> Path:
    """A git + DVC repository whose dvc.yaml holds ``stages``, in the order given."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "x"],
    ):
        sh(cmd, tmp_path)
    return tmp_path


@pytest.fixture
def repo(tmp_path):
    stages = {
        "source": {"cmd": _write("u.txt", "'u'"), "outs": ["u.txt"]},
        "a": {"cmd": _write("a.txt", "pathlib.Path('u.txt').read_text() + 'a'"), "deps": ["u.txt"], "outs": ["a.txt"]},
        "b": {"cmd": "python -c 'raise SystemExit(3)'", "deps": ["u.txt"], "outs": ["b.txt"]},
        "after_a": {
            "cmd": _write("c.txt", "pathlib.Path('a.txt').read_text() + 'c'"),
            "deps": ["a.txt"],
            "outs": ["c.txt"],
        },
        "after_b": {"cmd": _write("d.txt", "'d'"), "deps": ["b.txt"], "outs": ["d.txt"]},
    }
    return _project(tmp_path, stages)


def test_stages_run_after_what_they_need_and_a_failure_keeps_the_rest(repo):
    with pytest.raises(StagesNotRun, match=r"b \(failed\), after_b \(blocked\)") as stopped:
        run_side_by_side(repo, ["a", "b", "after_a", "after_b"], jobs=2, dvc=DVC)
    assert stopped.value.exit_code == 3  # b's own exit code: a caller can tell "people must answer" apart
    assert (repo / "c.txt").read_text() == "uac"  # after_a started once a had written a.txt
    assert not (repo / "d.txt").exists()
    status = sh(["dvc", "status", "--json"], repo).stdout
    changed = set(yaml.safe_load(status))
    assert changed == {"b", "after_b"}  # upstream `source`, a and after_a are committed as dvc repro would


def test_up_to_date_stages_do_not_run(repo):
    sh(["dvc", "repro", "after_a"], repo)
    (repo / "c.txt").write_text("mine")  # a run of after_a would overwrite it; it is recorded, so it must not
    sh(["dvc", "commit", "-f", "-q", "after_a"], repo)
    assert run_side_by_side(repo, ["a", "after_a"], jobs=2, dvc=DVC) == []
    assert (repo / "c.txt").read_text() == "mine"


def test_a_chain_upstream_of_the_targets_is_reproduced_first(repo):
    assert run_side_by_side(repo, ["after_a"], jobs=2, dvc=DVC) == ["after_a"]  # `dvc repro a` ran source too
    assert (repo / "c.txt").read_text() == "uac"
    status = yaml.safe_load(sh(["dvc", "status", "--json"], repo).stdout)
    assert set(status) == {"b", "after_b"}


def test_the_stage_heading_the_longest_chain_starts_first(tmp_path):
    project = _project(
        tmp_path,
        {
            "source": {"cmd": _write("u.txt", "'u'"), "outs": ["u.txt"]},
            "leaf": {"cmd": _write("l.txt", "'l'"), "deps": ["u.txt"], "outs": ["l.txt"]},
            "head": {"cmd": _write("h.txt", "'h'"), "deps": ["u.txt"], "outs": ["h.txt"]},
            "after_head": {"cmd": _write("n.txt", "'n'"), "deps": ["h.txt"], "outs": ["n.txt"]},
        },
    )
    # one at a time: the order they ran in is the order they started in; leaf and after_head tie: dvc.yaml's order
    assert run_side_by_side(project, None, jobs=1, dvc=DVC) == ["source", "head", "leaf", "after_head"]


def test_the_runner_records_stages_in_the_bytes_dvc_commit_writes(repo):
    # `dvc repro source` records source; the runner records a and after_a with its own writer of the lock file
    assert run_side_by_side(repo, ["a", "after_a"], jobs=2, dvc=DVC) == ["a", "after_a"]
    dvc_yaml = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("+ 'a'", "+ 'A'"))  # a's entry, between two others, changes
    assert run_side_by_side(repo, ["a", "after_a"], jobs=2, dvc=DVC) == ["a", "after_a"]
    recorded = (repo / "dvc.lock").read_bytes()
    assert list(yaml.safe_load(recorded)["stages"]) == ["source", "a", "after_a"]
    assert b"+ 'A'" in recorded
    sh(["dvc", "commit", "-f", "-q", "a", "after_a"], repo)  # DVC rewrites the whole lock file
    assert (repo / "dvc.lock").read_bytes() == recorded
    assert set(yaml.safe_load(sh(["dvc", "status", "--json"], repo).stdout)) == {"b", "after_b"}


def test_a_rerun_starts_without_the_stale_outputs_as_dvc_repro_would(tmp_path):
    write_dir = (
        "import pathlib; d = pathlib.Path('out'); d.mkdir(exist_ok=True); "
        "(d / 'x.txt').write_text(pathlib.Path('in.txt').read_text())"
    )
    (tmp_path / "in.txt").write_text("1")
    project = _project(tmp_path, {"make": {"cmd": f'python -c "{write_dir}"', "deps": ["in.txt"], "outs": ["out"]}})
    run_side_by_side(project, None, jobs=2, dvc=DVC)
    (project / "out" / "stray.txt").write_text("left by hand")
    (project / "in.txt").write_text("2")
    assert run_side_by_side(project, None, jobs=2, dvc=DVC) == ["make"]
    assert sorted(p.name for p in (project / "out").iterdir()) == ["x.txt"]
    assert (project / "out" / "x.txt").read_text() == "2"


@pytest.mark.parametrize("preloaded", [True, False])
def test_a_madseg_stage_runs_in_a_preloaded_process_once_it_is_ready_and_its_failure_is_reported(
    tmp_path, monkeypatch, caplog, preloaded
):
    project = _project(tmp_path, {"bogus": {"cmd": "madseg run no_such_stage", "outs": ["never.txt"]}})
    caplog.set_level(logging.INFO, logger="madseg.demo")
    monkeypatch.setattr(demo, "_preloaded", threading.Event())
    if preloaded:
        demo._start_preloaded_process()
        assert demo._preloaded.wait(120)
        monkeypatch.setattr(demo.subprocess, "run", None)  # the stage must fork from the preloaded process
    else:
        monkeypatch.setattr(demo, "_fork_once", lambda: None)  # never ready: the stage starts as a plain process
    monkeypatch.setenv("PATH", str(tmp_path))  # in neither way may it need a shell to find madseg
    with pytest.raises(StagesNotRun, match=r"bogus \(failed\)"):
        run_side_by_side(project, None, jobs=2, dvc=DVC)
    # madseg's own exit code for an unknown stage (a params mistake: 2); a shell that cannot find madseg gives 127
    assert "bogus FAILED (2)" in caplog.text
