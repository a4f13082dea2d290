"""`madseg import-model`: a model trained elsewhere becomes a target checkpoint that predicts exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision.models.segmentation as tvseg

from madseg.cli import main
from madseg.labels import make_class_list
from madseg.models.checkpoint import load_checkpoint, save_checkpoint
from madseg.models.importing import ClassMismatch, import_model
from madseg.models.input_policy import InputPolicy
from madseg.models.predictors import TorchPredictor, class_lut, load_predictor
from madseg.models.registry import TorchvisionLogits

ROOT = Path(__file__).resolve().parents[1]
CLASSES = make_class_list(["background", "disc", "bar"])
POLICY = InputPolicy(kind="shorter_side", size=(64, 64), shorter_side=64, max_side=128)
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((75, 100, 3), (120, 90, 3))]


def _round_trip(original: torch.nn.Module, tmp_path, **import_kwargs):
    """Predictions of the original module and of the imported checkpoint, with the same policy."""
    model, meta, provenance = import_model(classes=CLASSES.names, policy=POLICY, **NORM, **import_kwargs)
    save_checkpoint(tmp_path / "imported.pt", model, meta, provenance=provenance)
    lut = class_lut(CLASSES.names, CLASSES, None)
    before = TorchPredictor(original.eval(), policy=POLICY, lut=lut, device=torch.device("cpu"), **NORM)
    after = load_predictor(tmp_path / "imported.pt", classes=CLASSES, device=torch.device("cpu"))
    a, b = before.predict(_images()), after.predict(_images())
    assert all((x == y).all() for x, y in zip(a.maps, b.maps, strict=True))
    assert np.array_equal(a.entropy, b.entropy)
    _, saved = load_checkpoint(tmp_path / "imported.pt")
    assert saved["classes"] == list(CLASSES.names) and saved["input_policy"]["kind"] == "shorter_side"
    assert len(saved["provenance"]["imported"]["file_sha256"]) == 64
    return saved


def test_an_smp_save_pretrained_folder(tmp_path):
    torch.manual_seed(0)
    original = smp.Unet(
        encoder_name="resnet18", encoder_weights=None, classes=3, encoder_depth=3, decoder_channels=[32, 16, 8]
    )
    original.save_pretrained(tmp_path / "unet")
    saved = _round_trip(original, tmp_path, form="smp", source=tmp_path / "unet")
    assert saved["arch"] == "smp.Unet" and saved["kwargs"]["encoder_depth"] == 3


def test_a_torchvision_state_dict_with_its_auxiliary_head(tmp_path):
    torch.manual_seed(0)
    tv = tvseg.deeplabv3_mobilenet_v3_large(num_classes=3, weights=None, weights_backbone=None, aux_loss=True)
    torch.save(tv.state_dict(), tmp_path / "deeplab.pth")
    tv.aux_classifier = None
    _round_trip(
        TorchvisionLogits(tv),
        tmp_path,
        form="torchvision",
        source=tmp_path / "deeplab.pth",
        arch="tv.deeplabv3_mobilenet_v3_large",
    )


def test_a_plain_state_dict_saved_from_data_parallel(tmp_path):
    torch.manual_seed(0)
    kwargs = {
        "encoder_name": "resnet18",
        "encoder_depth": 3,
        "decoder_pyramid_channels": 64,
        "decoder_segmentation_channels": 32,
    }
    original = smp.FPN(encoder_weights=None, classes=3, **kwargs)
    torch.save({f"module.{k}": v for k, v in original.state_dict().items()}, tmp_path / "fpn.pt")
    _round_trip(original, tmp_path, form="state_dict", source=tmp_path / "fpn.pt", arch="smp.FPN", kwargs=kwargs)


def test_other_classes_are_refused_before_anything_is_written(tmp_path):
    smp.Unet(
        encoder_name="resnet18", encoder_weights=None, classes=5, encoder_depth=3, decoder_channels=[32, 16, 8]
    ).save_pretrained(tmp_path / "unet5")
    with pytest.raises(ClassMismatch, match=r"predicts 5 classes.*dataset.classes has 3"):
        import_model(form="smp", source=tmp_path / "unet5", classes=CLASSES.names, policy=POLICY, **NORM)
    voc = tvseg.lraspp_mobilenet_v3_large(num_classes=21, weights=None, weights_backbone=None)
    torch.save(voc.state_dict(), tmp_path / "voc.pth")
    with pytest.raises(ClassMismatch, match="predicts 21 classes"):
        import_model(
            form="torchvision",
            source=tmp_path / "voc.pth",
            arch="tv.lraspp_mobilenet_v3_large",
            classes=CLASSES.names,
            policy=POLICY,
            **NORM,
        )
    with pytest.raises(ValueError, match="unknown model form 'keras'"):
        import_model(form="keras", source=tmp_path / "voc.pth", classes=CLASSES.names, policy=POLICY, **NORM)


def test_the_command_writes_a_checkpoint_and_explains_failures(tmp_path, capsys):
    demo = make_class_list("demo")
    unet = smp.Unet(
        encoder_name="resnet18",
        encoder_weights=None,
        classes=demo.num_classes,
        encoder_depth=3,
        decoder_channels=[32, 16, 8],
    )
    unet.save_pretrained(tmp_path / "unet")
    out = tmp_path / "models" / "target.pt"
    params = ["--params", str(ROOT / "params.yaml")]
    main(["import-model", str(tmp_path / "unet"), "--form", "smp", "--out", str(out), *params])
    _, meta = load_checkpoint(out)
    assert meta["classes"] == list(demo.names) and meta["input_size"] == [64, 64]
    with pytest.raises(SystemExit) as stopped:
        main(["import-model", str(tmp_path / "nope"), "--form", "smp", "--out", str(out), *params])
    assert stopped.value.code == 9  # bad input: one line, no traceback
    assert "no such model folder" in capsys.readouterr().err
