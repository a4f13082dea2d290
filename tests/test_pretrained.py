"""Pretrained weights: the packaged ImageNet files, local files in other key layouts, and fast clear failures."""

from __future__ import annotations

import pytest
import torch
import torchvision

from madseg.models import weights
from madseg.models.registry import build_model
from madseg.models.weights import PACKAGED, WeightsNotFound, find_local, init_pretrained

FETCH = "run `madseg weights fetch` (make test does) to put the packaged ImageNet files in the torch hub cache"


def _packaged(filename):
    path = find_local(filename)
    assert path is not None, f"{filename} not found: {FETCH}"
    return path, next(p for p in PACKAGED if p.filename == filename)


def test_packaged_mobilenet_v2_is_torchvisions_file_and_loads_exactly_into_smp():
    path, packaged = _packaged("mobilenet_v2-b0353104.pth")
    kwargs = {"encoder_name": "mobilenet_v2", "encoder_weights": "imagenet"}
    model = build_model("smp.Unet", 3, **kwargs)
    (record,) = init_pretrained(model, "smp.Unet", 3, kwargs)
    assert record["file_sha256"] == packaged.sha256 and record["part"] == "encoder"
    file = torch.load(path, weights_only=True)
    encoder = model.encoder.state_dict()
    assert set(file) - set(encoder) == {"classifier.1.weight", "classifier.1.bias"}
    assert all(torch.equal(tensor, file[key]) for key, tensor in encoder.items())
    # and it is torchvision's own MobileNetV2, strictly
    torchvision.models.mobilenet_v2().load_state_dict(file, strict=True)


def test_packaged_efficientnet_lite0_maps_in_order_onto_timm():
    path, packaged = _packaged("efficientnet-lite0-57934424.pth")
    kwargs = {"encoder_name": "tu-tf_efficientnet_lite0", "encoder_weights": "imagenet"}
    model = build_model("smp.FPN", 4, **kwargs)
    (record,) = init_pretrained(model, "smp.FPN", 4, kwargs)
    assert record["file_sha256"] == packaged.sha256 and record["unused_keys"] == 8  # the classifier's conv head
    file = list(torch.load(path, weights_only=True).values())
    assert all(torch.equal(t, file[i]) for i, t in enumerate(model.encoder.state_dict().values()))


def test_a_local_file_with_a_prefix_and_a_head_loads_and_records_its_provenance(tmp_path):
    reference = torchvision.models.mobilenet_v2()
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    kwargs = {"encoder_name": "mobilenet_v2", "encoder_weights_path": str(path)}
    model = build_model("smp.Linknet", 3, **kwargs)
    (record,) = init_pretrained(model, "smp.Linknet", 3, kwargs)
    assert record["source"] == "file" and record["file"] == "mine.pth" and len(record["file_sha256"]) == 64
    assert torch.equal(model.encoder.features[0][0].weight, reference.features[0][0].weight)


def test_a_file_that_does_not_fit_lists_the_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3, 3), "features.0.0.weight": torch.zeros(1)}, path)
    kwargs = {"encoder_name": "mobilenet_v2", "encoder_weights_path": str(path)}
    with pytest.raises(ValueError, match=r"missing keys \['features.0.0.weight'.*unexpected keys"):
        init_pretrained(build_model("smp.Unet", 3, **kwargs), "smp.Unet", 3, kwargs)
    kwargs["encoder_weights_path"] = str(tmp_path / "absent.pth")
    with pytest.raises(WeightsNotFound, match=r"absent\.pth: no such weights file"):
        init_pretrained(build_model("smp.Unet", 3, **kwargs), "smp.Unet", 3, kwargs)


def test_missing_weights_fail_at_once_naming_the_file_and_the_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    probes = []
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=3.0: probes.append(url) or False)
    kwargs = {"weights_backbone": "DEFAULT"}
    model = build_model("tv.lraspp_mobilenet_v3_large", 3, **kwargs)
    folder = str(tmp_path / "torch" / "hub" / "checkpoints")
    with pytest.raises(WeightsNotFound, match=rf"mobilenet_v3_large-5c1a4163.pth in {folder}"):
        init_pretrained(model, "tv.lraspp_mobilenet_v3_large", 3, kwargs)
    kwargs = {"encoder_name": "resnet18", "encoder_weights": "imagenet"}
    with pytest.raises(WeightsNotFound, match=r"not in the Hugging Face cache.*encoder_weights_path"):
        init_pretrained(build_model("smp.FPN", 3, **kwargs), "smp.FPN", 3, kwargs)
    assert len(probes) == 2  # one probe each, no retries
    with pytest.raises(ValueError, match="unknown weights 'NOPE'"):
        init_pretrained(model, "tv.lraspp_mobilenet_v3_large", 3, {"weights": "NOPE"})


def test_building_from_a_checkpoint_never_looks_for_weights():
    # kwargs naming weights are kept in checkpoints; rebuilding must not need the files
    model = build_model(
        "smp.Unet", 3, encoder_name="resnet18", encoder_weights="imagenet", encoder_depth=3, decoder_channels=[16, 8, 4]
    )
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_the_pretrain_stage_records_where_the_weights_came_from_in_checkpoint_and_model_card(tiny_project, tmp_path):
    import yaml

    from madseg.io.atomic import read_json
    from madseg.models.checkpoint import read_checkpoint
    from tests.project import run

    (tmp_path / "data").mkdir()
    # the whole world, not only S0/T0: params are checked at once, the pool folders and their truth included
    (tmp_path / "data" / "world").symlink_to(tiny_project / "data" / "world")
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["models"]["target"]["kwargs"] = {
        "encoder_name": "mobilenet_v2",
        "encoder_weights": "imagenet",
        "decoder_channels": 64,
    }
    params["models"]["target"]["steps"] = 2  # what is checked is where the weights came from, not training
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run(["madseg", "run", "pretrain", "--model", "target"], tmp_path)
    (record,) = read_checkpoint(tmp_path / "models" / "target_0.pt")["provenance"]["pretrained"]
    assert record["file"] == "mobilenet_v2-b0353104.pth" and record["file_sha256"] == PACKAGED[0].sha256
    assert read_json(tmp_path / "metrics" / "pretrain" / "target.json")["pretrained"] == "encoder: imagenet"
    final = params["final_round"]
    (tmp_path / "models" / f"target_{final}.pt").write_bytes((tmp_path / "models" / "target_0.pt").read_bytes())
    run(["madseg", "run", "export"], tmp_path)
    card = read_json(tmp_path / "models" / "export" / "model_card.json")
    assert card["pretrained"][0]["file_sha256"] == PACKAGED[0].sha256


def test_weights_in_the_libraries_own_caches_load_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf
    from safetensors.torch import save_file

    path, _ = _packaged("mobilenet_v2-b0353104.pth")
    encoder = {k: v for k, v in torch.load(path, weights_only=True).items() if not k.startswith("classifier")}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no local copy: smp must use its HF cache
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=3.0: False)
    repo = tmp_path / "hf" / "models--smp-hub--mobilenet_v2.imagenet"
    snapshot = repo / "snapshots" / "e67aa804e17f7b404b629127eabbd224c4e0690b"  # the revision smp 0.6 pins
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in encoder.items()}, str(snapshot / "model.safetensors"))
    kwargs = {"encoder_name": "mobilenet_v2", "encoder_weights": "imagenet"}
    model = build_model("smp.Unet", 3, **kwargs)
    (record,) = init_pretrained(model, "smp.Unet", 3, kwargs)
    assert record["source"] == "library cache (HF_HOME)"
    assert all(torch.equal(t, encoder[k]) for k, t in model.encoder.state_dict().items())

    # torchvision reads its own cache ($TORCH_HOME/hub/checkpoints) before it would download
    backbone = torchvision.models.mobilenet_v3_large()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(backbone.state_dict(), cache / "mobilenet_v3_large-5c1a4163.pth")
    kwargs = {"weights_backbone": "DEFAULT"}
    model = build_model("tv.lraspp_mobilenet_v3_large", 3, **kwargs)
    (record,) = init_pretrained(model, "tv.lraspp_mobilenet_v3_large", 3, kwargs)
    assert record["file"] == "mobilenet_v3_large-5c1a4163.pth" and record["part"] == "backbone"
    assert torch.equal(model.model.backbone["0"][0].weight, backbone.features[0][0].weight)
