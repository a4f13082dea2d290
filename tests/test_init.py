"""`madseg init` turns a clone into a campaign on the user's data; `madseg init --demo` brings the demo back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from madseg.labels import make_class_list
from tests.project import ROOT, run
from tests.test_cli_errors import madseg

CLASSES = make_class_list(["background", "leaf", "stone"])


def make_user_data(folder: Path, size: tuple[int, int] = (500, 375), n_train: int = 4, n_pool: int = 6) -> None:
    """A VOC set of ``size`` photos (w, h) with the classes above, and a pool folder of the same kind."""
    rng = np.random.default_rng(0)
    w, h = size
    voc = folder / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for split, n in (("train", n_train), ("val", 2)):
        names = [f"{split}{i}" for i in range(n)]
        for name in names:
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            label = np.zeros((h, w), np.uint8)
            label[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(1, 3)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=80)
            mask = Image.fromarray(label, "P")
            mask.putpalette(CLASSES.flat_palette())
            mask.save(voc / "SegmentationClass" / f"{name}.png")
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (folder / "pool/sub").mkdir(parents=True)
    for i in range(n_pool):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / "pool" / ("sub" if i % 2 else "") / f"p{i}.jpg", quality=80)


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh clone as `madseg init` meets it: git + DVC, the demo's params.yaml, dvc.yaml and presets."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("params.yaml", "dvc.yaml", ".dvcignore"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "presets", project / "presets")
    run(["git", "init", "-q"], project)
    run(["dvc", "init", "-q"], project)
    return project


def test_init_writes_a_campaign_that_checks_clean(clone, tmp_path):
    make_user_data(tmp_path / "mine")
    result = madseg(
        "init",
        "--voc",
        "../mine/voc",
        "--pool",
        "../mine/pool",
        "--classes",
        "background,leaf,stone",
        cwd=clone,
    )
    assert result.returncode == 0, result.stderr
    assert "Next:" in result.stdout and "madseg check" in result.stdout and "dvc repro" in result.stdout
    assert "selection.n4: 100 -> 1" in result.stdout  # a pool of 6 images: a tenth of it

    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["dataset"]["classes"] == ["background", "leaf", "stone"]
    assert params["models"]["input_policy"]["kind"] == "shorter_side"  # chosen from the photos' 500x375
    assert params["models"]["target"]["kwargs"]["encoder_weights"] == "imagenet"  # the pretrained preset
    assert "world" not in params and params["crawl"]["reference_sets"] == ["data/voc/JPEGImages"]
    assert (clone / "data/voc.dvc").exists() and (clone / "data/pool.dvc").exists()
    assert sorted(p.name for p in (clone / "data/pool").rglob("*.jpg")) == [f"p{i}.jpg" for i in range(6)]

    check = madseg("check", "--offline", cwd=clone)
    assert check.returncode == 0, check.stderr
    assert "shorter_side" in check.stderr
    stages = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]
    assert "make_world" not in stages and "validity" not in stages
    assert "metrics/validity.json" not in stages["report"]["deps"]
    status = run(["dvc", "status"], clone).stdout
    assert "make_world" not in status and "validity" not in status and "data/world" not in status

    again = madseg("init", "--voc", "../mine/voc", "--pool", "../mine/pool", "--classes", "background,a,b", cwd=clone)
    assert again.returncode == 2 and "--force" in again.stderr

    demo = madseg("init", "--demo", cwd=clone)
    assert demo.returncode == 0, demo.stderr
    assert (clone / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert yaml.safe_load((clone / "dvc.yaml").read_text()) == yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_a_demo_preset_never_inherits_the_default_worlds_study(clone):
    (clone / "metrics").mkdir()
    (clone / "metrics/study.json").write_text('{"mad_minus_entropy": 0.78}')  # measured on the default world
    demo = madseg("init", "--demo", "--preset", "photos", cwd=clone)
    assert demo.returncode == 0, demo.stderr
    for name in ("study.json", "study_options.json"):
        assert json.loads((clone / "metrics" / name).read_text()) == {"status": "not run"}
    assert yaml.safe_load((clone / "params.yaml").read_text())["world"]["kind"] == "photos"


def test_init_keeps_data_in_place_as_external_dependencies(clone, tmp_path):
    make_user_data(tmp_path / "mine", size=(64, 64))
    args = [
        "--voc",
        str(tmp_path / "mine/voc"),
        "--pool",
        str(tmp_path / "mine/pool"),
        "--classes",
        "background,a,b",
    ]
    result = madseg("init", *args, "--data", "external", "--rounds", "1", cwd=clone)
    assert result.returncode == 0, result.stderr
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["dataset"]["voc_root"] == str(tmp_path / "mine/voc")
    assert params["models"]["input_policy"]["kind"] == "resize" and params["models"]["input_size"] == 64
    assert list(params["rounds"]) == ["0", "1"] and params["final_round"] == "1"
    assert not (clone / "data/voc").exists()
    crawl = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]["crawl_index"]["deps"]
    assert str(tmp_path / "mine/pool") in crawl  # an external dependency DVC hashes where it lies


def test_init_refuses_bad_arguments_before_writing(clone, tmp_path):
    before = (clone / "params.yaml").read_text()
    result = madseg("init", "--voc", "nowhere", "--pool", "nothere", "--classes", "background", cwd=clone)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for named in ("--voc: nowhere is no folder", "--pool: nothere is no folder", "--classes:"):
        assert named in result.stderr
    assert "JPEGImages" not in result.stderr  # one line for a missing folder, not one per part of the layout
    (tmp_path / "bare").mkdir()
    bare = madseg(
        "init", "--voc", str(tmp_path / "bare"), "--pool", "../mine/pool", "--classes", "background,a", cwd=clone
    )
    assert f"--voc: {tmp_path / 'bare' / 'JPEGImages'} does not exist" in bare.stderr
    assert (clone / "params.yaml").read_text() == before
    typo = madseg("init", "--demo", "--preset", "photo", cwd=clone)
    assert typo.returncode == 2 and "photo is no preset — name one of ['photos', 'pretrained']" in typo.stderr
    elsewhere = madseg("init", "--demo", "--preset", "photos", cwd=tmp_path)  # not a clone: no .dvc/, no presets/
    assert (
        elsewhere.returncode == 2 and "holds no .dvc/ — run madseg init at the root of your clone" in elsewhere.stderr
    )
    (clone / "presets" / "photos.yaml").unlink()
    (clone / "presets" / "pretrained.yaml").unlink()
    assert "no presets/ folder in" in madseg("init", "--demo", "--preset", "photos", cwd=clone).stderr
    assert (clone / "params.yaml").read_text() == before and not (tmp_path / "params.yaml").exists()


def test_a_brought_target_is_a_dependency_and_writes_no_curve(clone, tmp_path):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch = pytest.importorskip("torch")
    make_user_data(tmp_path / "mine", size=(75, 50))
    torch.manual_seed(0)
    kwargs = {
        "encoder_name": "resnet18",
        "encoder_weights": None,
        "encoder_depth": 3,
        "decoder_channels": [8, 8, 8],
    }
    smp.Unet(classes=3, **kwargs).save_pretrained(str(tmp_path / "unet"))
    args = ["--voc", "../mine/voc", "--pool", "../mine/pool", "--classes", "background,leaf,stone"]
    result = madseg("init", *args, "--target", "../unet", "--form", "smp", cwd=clone)
    assert result.returncode == 0, result.stderr
    stage = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]["pretrain_target"]
    assert "models/imported/target.pt" in stage["deps"]
    assert "plots" not in stage  # an imported model writes no loss curve
    assert (clone / "models/imported/target.pt.dvc").exists()

    smp.Unet(classes=3, **kwargs).save_pretrained(str(tmp_path / "unet2"))  # other weights, the same path
    reimport = madseg("import-model", "../unet2", "--form", "smp", "--out", "models/imported/target.pt", cwd=clone)
    assert reimport.returncode == 0, reimport.stderr
    assert "models/imported/target.pt" in run(["dvc", "status", "pretrain_target"], clone).stdout


def test_params_input_policy_applies_at_prediction_time(tmp_path):
    torch = pytest.importorskip("torch")
    from madseg.config import InputPolicyParams
    from madseg.models.checkpoint import make_meta, save_checkpoint
    from madseg.models.predictors import load_predictor
    from madseg.models.registry import build_model

    torch.manual_seed(0)
    kwargs = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}
    meta = make_meta(
        arch="smp.Unet",
        kwargs=kwargs,
        classes=list(CLASSES.names),
        input_size=64,
        mean=[0.5] * 3,
        std=[0.2] * 3,
    )
    save_checkpoint(tmp_path / "t.pt", build_model("smp.Unet", 3, **kwargs), meta, provenance={})
    baked = load_predictor(tmp_path / "t.pt", classes=CLASSES)
    assert baked.policy.kind == "resize"  # what the checkpoint recorded: the default without params
    params = InputPolicyParams(kind="shorter_side", shorter_side=96, max_side=192)
    predictor = load_predictor(tmp_path / "t.pt", classes=CLASSES, policy=params.overrides())
    assert (predictor.policy.kind, predictor.policy.shorter_side, predictor.policy.size) == (
        "shorter_side",
        96,
        (64, 64),
    )
    image = np.zeros((50, 75, 3), np.uint8)
    assert predictor.predict([image]).maps[0].shape == (50, 75)
