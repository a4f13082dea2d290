"""`madseg demo`'s side-by-side runner on a scratch DVC repository of trivial stages (the real runs are in
test_pipeline, whose tiny project is built by `madseg demo`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from madseg.demo import run_side_by_side
from tests.project import run as sh

DVC = str(Path(sys.executable).parent / "dvc")


def _write(path: str, text: str) -> str:
    return f"python -c \"import pathlib; pathlib.Path('{path}').write_text({text})\""


@pytest.fixture
def repo(tmp_path):
    stages = {
        "source": {"cmd": _write("u.txt", "'u'"), "outs": ["u.txt"]},
        "a": {"cmd": _write("a.txt", "pathlib.Path('u.txt').read_text() + 'a'"), "deps": ["u.txt"], "outs": ["a.txt"]},
        "b": {"cmd": "python -c 'raise SystemExit(3)'", "deps": ["u.txt"], "outs": ["b.txt"]},
        "after_a": {"cmd": _write("c.txt", "pathlib.Path('a.txt').read_text() + 'c'"), "deps": ["a.txt"], "outs": ["c.txt"]},
        "after_b": {"cmd": _write("d.txt", "'d'"), "deps": ["b.txt"], "outs": ["d.txt"]},
    }  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "x"],
    ):
        sh(cmd, tmp_path)
    return tmp_path


def test_stages_run_after_what_they_need_and_a_failure_keeps_the_rest(repo):
    with pytest.raises(SystemExit, match=r"b \(failed\), after_b \(blocked\)"):
        run_side_by_side(repo, ["a", "b", "after_a", "after_b"], jobs=2, dvc=DVC)
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
