"""What a user can get wrong ends in one short message naming the key, a non-zero exit and no traceback.

Most cases call the command line's entry point in this process (what the console script runs, seconds faster);
the last test runs real processes, with and without --debug.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from madseg.cli import main
from tests.project import ROOT, merge

DEMO = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args, cwd=...)``: `madseg ARGS` in folder ``cwd`` through its entry point, as a finished process."""
    monkeypatch.delenv("MADSEG_DEBUG", raising=False)

    def call(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["madseg", *args], code, out.out, out.err)

    return call


def madseg(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MADSEG_DEBUG": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "madseg.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_params(folder: Path, over: dict, drop: tuple[str, ...] = ()) -> Path:
    params = merge(DEMO, over)
    for key in drop:
        params.pop(key)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def assert_short(result: subprocess.CompletedProcess, *named: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    for text in named:
        assert text in out, out


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"selection": {"t_capp": 8}}, ["selection.t_capp: unknown key", "did you mean 't_cap'"]),
        ({"pretrain": {"steps": "four hundred"}}, ["pretrain.steps: 'four hundred' is not a whole number"]),
        ({"mining": {"n3": 2.5}}, ["mining.n3: 2.5 is not a whole number"]),
        (
            {"models": {"input_policy": {"kind": "shorter-side"}}},
            ["models.input_policy.kind: 'shorter-side' is not one of", "did you mean 'shorter_side'"],
        ),
        (
            {"dataset": {"classes": "background, circle, square"}},
            ["dataset.classes: 'background, circle, square' is one text", "[background, circle, square]"],
        ),
        (
            {"dataset": {"classes": ["background", "a", "b"]}, "selection": {"t_size": 40, "t_cap": 8}},
            ["selection.t_cap: a test set of 40 images cannot be filled", "raise t_cap to 20"],
        ),
        ({"models": {"target": {"arch": "smp.DeepLabV3plus"}}}, ["models.target.arch: unknown architecture"]),
        ({"dataset": {"voc_root": "nowhere/voc"}}, ["dataset.voc_root: nowhere/voc does not exist"]),
        (
            {"models": {"target": {"name": "", "source": "checkpoint", "path": "models/mine.pt"}}},
            ["models.target.path: models/mine.pt does not exist", "madseg import-model"],
        ),
        (
            {"models": {"target": {"name": "", "source": "checkpoint", "path": None}}},
            ["models.target.path: source checkpoint needs a path"],
        ),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_params_are_named_without_a_traceback(tmp_path, cli, over, named):
    write_params(tmp_path, over)
    result = cli("check", "--offline", cwd=tmp_path)
    assert_short(result, *named)
    assert result.returncode == 2
    assert "selection:" not in result.stderr.replace("selection.", "")  # no class problem filed under selection


def test_every_problem_is_reported_at_once(tmp_path, cli):
    write_params(tmp_path, {"pretrain": {"steps": "x"}, "mining": {"n3": 2.5}, "selction": {}})
    result = cli("run", "summarize", cwd=tmp_path)  # a stage checks params before it runs
    assert_short(result, "3 problems", "pretrain.steps", "mining.n3", "selction: unknown key")


def test_a_target_with_other_classes_is_told_to_reimport(tmp_path, cli):
    torch = pytest.importorskip("torch")
    from madseg.models.checkpoint import make_meta, save_checkpoint
    from madseg.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("smp.Unet", 3, encoder_name="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8])
    kwargs = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}
    meta = make_meta(
        arch="smp.Unet",
        kwargs=kwargs,
        classes=["background", "a", "b"],
        input_size=64,
        mean=[0.5] * 3,
        std=[0.2] * 3,
    )
    save_checkpoint(tmp_path / "mine.pt", model, meta, provenance={"form": "test"})
    write_params(tmp_path, {"models": {"target": {"source": "checkpoint", "path": "mine.pt"}}})
    result = cli("check", "--offline", cwd=tmp_path)
    assert_short(result, "models.target.path: the model predicts ['background', 'a', 'b']", "import the target again")
    assert "class_map" not in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["run", "mine"], ["mine: needs --round"]),
        (["run", "select_S", "--round", "0", "--model", "x"], ["takes no --model"]),
        (["run", "nope"], ["unknown stage 'nope'"]),
        (
            ["labelstudio-server", "--label-studio", "/nonexistent/label-studio"],
            ["Label Studio", "not found"],
        ),
        (
            ["init", "--voc", "nowhere", "--classes", "background,a"],
            ["--voc: nowhere is no folder"],
        ),
        (["import-model", "nowhere", "--form", "smp", "--out", "x.pt"], ["nowhere"]),
        (["check", "--params", "missing.yaml"], ["missing.yaml: no such params file", "madseg init"]),
    ],
    ids=lambda v: "-".join(v[:2]) if isinstance(v, list) and v and v[0] != "Label Studio" else None,
)
def test_command_line_mistakes(tmp_path, cli, args, named):
    write_params(tmp_path, {})
    assert_short(cli(*args, cwd=tmp_path), *named)


def test_debug_shows_the_traceback(tmp_path):
    write_params(tmp_path, {"mining": {"n3": 2.5}})
    for result in (
        madseg("--debug", "check", cwd=tmp_path),
        madseg("check", cwd=tmp_path, env={"MADSEG_DEBUG": "1"}),
    ):
        assert result.returncode == 2
        assert "Traceback" in result.stderr and "mining.n3" in result.stderr
