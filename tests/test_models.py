"""Registry, checkpoints, predictors (checkpoint, TorchScript, ONNX, precomputed folder) and class mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from madseg.io.images import write_mask
from madseg.labels import IGNORE_INDEX, make_class_list
from madseg.models.checkpoint import load_checkpoint, make_meta, read_checkpoint, save_checkpoint
from madseg.models.predictors import class_lut, load_predictor
from madseg.models.registry import REGISTRY, build_model

ROOT = Path(__file__).resolve().parents[1]
CLASSES = make_class_list(["background", "a", "b"])
FAST = {"smp.PSPNet": {"encoder_depth": 3}}
SIDE = {"smp.PAN": 128}  # PAN's pyramid pooling needs a larger input


@pytest.mark.parametrize(
    "arch",
    [a for a in sorted(REGISTRY) if not a.endswith(("resnet101", "resnet50")) or a == "tv.fcn_resnet50"],
)
def test_every_architecture_builds_and_runs(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3, **FAST.get(arch, {})).eval()
    with torch.inference_mode():
        side = SIDE.get(arch, 64)
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, 3, side, side)


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown architecture 'smp.Nope'.*smp.Unet"):
        build_model("smp.Nope", 3)


def _checkpoint(path):
    torch.manual_seed(0)
    kwargs = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = build_model("smp.Unet", 3, **kwargs)
    meta = make_meta(
        arch="smp.Unet", kwargs=kwargs, classes=list(CLASSES.names), input_size=32, mean=[0.5] * 3, std=[0.25] * 3
    )
    save_checkpoint(path, model, meta, provenance={"test": 1})
    return model


def test_checkpoint_round_trip_rebuilds_the_model_alone(tmp_path):
    model = _checkpoint(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["arch"] == "smp.Unet" and payload["classes"] == list(CLASSES.names)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["provenance"] == {"test": 1} and meta["input_size"] == [32, 32]
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))


def test_corrupt_missing_and_foreign_checkpoints_get_clear_errors(tmp_path):
    _checkpoint(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable madseg checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="missing fields"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_predictions_folder_is_a_first_class_competitor(tmp_path):
    folder = tmp_path / "comp"
    (folder / "predictions").mkdir(parents=True)
    label = np.array([[0, 1], [2, 1]], np.uint8)
    write_mask(folder / "predictions" / "abc.png", label, CLASSES)
    (folder / "spec.json").write_text(json.dumps({"source": "predictions", "classes": None, "class_map": None}))
    predictor = load_predictor(folder, classes=CLASSES)
    pred = predictor.predict([np.zeros((2, 2, 3), np.uint8)], ["abc"])
    assert (pred.maps[0] == label).all() and pred.maxprob[0] == 1.0
    with pytest.raises(FileNotFoundError, match="image zzz"):
        predictor.predict([None], ["zzz"])


def test_class_map_translates_other_label_spaces_and_is_validated():
    lut = class_lut(["bg", "cat", "dog", "car"], CLASSES, {"bg": "background", "cat": "a", "dog": "a"})
    assert lut[:4].tolist() == [0, 1, 1, IGNORE_INDEX]
    with pytest.raises(ValueError, match="'horse' is not one of"):
        class_lut(["bg", "cat"], CLASSES, {"horse": "a"})
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        class_lut(["bg", "cat"], CLASSES, {"cat": "zebra"})
    with pytest.raises(ValueError, match="give a class_map"):
        class_lut(["bg", "cat"], CLASSES, None)


def test_torchscript_and_onnx_competitors_match_the_checkpoint(tmp_path):
    model = _checkpoint(tmp_path / "m.pt").eval()
    spec = {"classes": None, "class_map": None, "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    ts = tmp_path / "ts"
    ts.mkdir()
    torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save(str(ts / "model.ts"))
    (ts / "spec.json").write_text(json.dumps({**spec, "source": "torchscript"}))
    images = [np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)]
    reference = load_predictor(tmp_path / "m.pt", classes=CLASSES).predict(images)
    assert (load_predictor(ts, classes=CLASSES).predict(images).maps[0] == reference.maps[0]).all()
    assert reference.maps[0].shape == (40, 48)  # back at the image's own size
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ox = tmp_path / "ox"
    ox.mkdir()
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 32, 32),),
        str(ox / "model.onnx"),
        input_names=["x"],
        dynamic_axes={"x": {0: "n"}},
        dynamo=False,
    )
    (ox / "spec.json").write_text(json.dumps({**spec, "source": "onnx"}))
    got = load_predictor(ox, classes=CLASSES).predict(images)
    assert (got.maps[0] == reference.maps[0]).mean() > 0.99


def test_a_tta_in_params_reaches_an_adopted_target_and_every_competitor_but_precomputed_maps(tmp_path):
    from madseg.artefacts import adopt_target, competitor_spec
    from madseg.config import ModelSpec, load_params

    model = _checkpoint(tmp_path / "user.pt").eval()  # a user's checkpoint, made without TTA
    plain = ModelSpec(name="target", source="checkpoint", path=str(tmp_path / "user.pt"))
    adopt_target(plain, tmp_path / "plain.pt")
    assert (tmp_path / "plain.pt").read_bytes() == (tmp_path / "user.pt").read_bytes()
    adopt_target(ModelSpec(**{**vars(plain), "tta": "hflip"}), tmp_path / "t0.pt")
    meta = load_checkpoint(tmp_path / "t0.pt")[1]
    assert meta["tta"] == "hflip" and meta["provenance"] == {"test": 1}  # inherited by its fine-tuned descendants

    models = load_params(ROOT / "params.yaml").models
    assert "tta" not in competitor_spec(ModelSpec(name="ts", source="torchscript"), models)  # older folders' bytes
    folder = competitor_spec(ModelSpec(name="ts", source="torchscript", tta="hflip"), models)
    ts = tmp_path / "ts"
    ts.mkdir()
    torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save(str(ts / "model.ts"))
    (ts / "spec.json").write_text(json.dumps(folder | {"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}))
    images = [np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)]
    with_tta = load_predictor(tmp_path / "t0.pt", classes=CLASSES).predict(images)
    assert not (load_predictor(tmp_path / "user.pt", classes=CLASSES).predict(images).maps[0] == with_tta.maps[0]).all()
    assert (load_predictor(ts, classes=CLASSES).predict(images).maps[0] == with_tta.maps[0]).all()

    (tmp_path / "comp" / "predictions").mkdir(parents=True)
    (tmp_path / "comp" / "spec.json").write_text(json.dumps({"source": "predictions", "tta": "hflip"}))
    with pytest.raises(ValueError, match="precomputed predictions cannot take a test-time augmentation"):
        load_predictor(tmp_path / "comp", classes=CLASSES)


TRACE = """
import sys, torch
from madseg.models.checkpoint import save_torchscript
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)).eval()
traced = torch.jit.trace(model, torch.zeros(1, 3, 8, 8))
torch.jit.save(traced, sys.argv[1])
save_torchscript(traced, sys.argv[2])
"""


def test_saved_torchscript_does_not_depend_on_the_folder_it_was_traced_in(tmp_path):
    procs = []
    for folder in ("a", "b"):  # the same script in two folders, as in two checkouts, run side by side
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "trace.py").write_text(TRACE)
        # fresh processes: tracing twice in one would mangle the second module's class names
        procs.append(subprocess.Popen([sys.executable, "trace.py", "raw.ts", "saved.ts"], cwd=tmp_path / folder))
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "raw.ts").read_bytes() != (b / "raw.ts").read_bytes()  # plain torch.jit.save records the path
    assert (a / "saved.ts").read_bytes() == (b / "saved.ts").read_bytes()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(torch.jit.load(a / "saved.ts")(x), torch.jit.load(a / "raw.ts")(x))
