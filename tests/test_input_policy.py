"""Input policies: photos of any size and aspect in, maps at the image's own size out, through the whole path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from madseg.annotation.brush import mask_to_results, results_to_mask
from madseg.evaluation import per_image_confusions, score_set
from madseg.inference import fingerprint, predict_pool
from madseg.io.images import encode_jpeg, image_id
from madseg.io.store import PredictionStore
from madseg.labels import make_class_list
from madseg.mining import mine_mad
from madseg.models.checkpoint import make_meta, save_checkpoint
from madseg.models.input_policy import RESIZE_FINGERPRINT, InputPolicy
from madseg.models.predictors import TorchPredictor, class_lut, load_predictor
from madseg.models.registry import build_model

CLASSES = make_class_list(["background", "bright", "dark"])
ODD_SIZES = [(683, 1024), (1500, 2000), (517, 333)]  # (H, W): a landscape photo, a large one, an odd portrait
# the same shapes at half the side for the whole path (a real network on every pixel): still more than one
# tile of 256 in each direction, and a side below it that is padded
NATIVE_SIZES = [(341, 512), (750, 1000), (259, 167)]


class Pointwise(torch.nn.Module):
    """A per-pixel model with a known answer: class 1 where the red channel is high, 2 where it is low."""

    def forward(self, x):
        r = x[:, :1]
        return torch.cat([torch.zeros_like(r), 4 * (r - 0.5), 4 * (-0.5 - r)], dim=1)


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    image[h // 4 : h // 2, w // 3 : w // 2] = (250, 10, 10)  # a bright object at a known place
    return image


def _pointwise_truth(image):
    r = image[..., 0].astype(np.float32) / 255.0
    return np.where(r - 0.5 > 0, 1, np.where(-0.5 - r > 0, 2, 0)).astype(np.uint8) * (np.abs(r - 0.5) > 1e-6)


def test_geometry_keeps_the_aspect_and_caps_the_longer_side():
    policy = InputPolicy(kind="shorter_side", shorter_side=384, max_side=1024)
    assert policy.scaled_shape(683, 1024) == (384, 576)
    assert policy.scaled_shape(1500, 2000) == (384, 512)
    assert InputPolicy(kind="shorter_side", shorter_side=384, max_side=480).scaled_shape(1500, 2000) == (
        360,
        480,
    )
    tiles = InputPolicy(kind="tiles", tile=512, overlap=0.25)
    corners = tiles.windows(1500, 2000)
    covered = np.zeros((1500, 2000), bool)
    for y, x in corners:
        covered[y : y + 512, x : x + 512] = True
    assert covered.all() and len(corners) == 4 * 5
    assert tiles.windows(300, 200) == [(0, 0)]
    with pytest.raises(ValueError, match=r"unknown input policy 'squash'.*resize, shorter_side, tiles"):
        InputPolicy(kind="squash")


@pytest.mark.parametrize("kind", ["shorter_side", "tiles"])
def test_maps_come_out_at_the_image_size_with_the_planted_answer(kind):
    policy = InputPolicy(kind=kind, shorter_side=683, max_side=4000, tile=256, overlap=0.25)
    predictor = TorchPredictor(
        Pointwise(),
        policy=policy,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        lut=class_lut(CLASSES.names, CLASSES, None),
        device=torch.device("cpu"),
    )
    images = [_photo(h, w, i) for i, (h, w) in enumerate(ODD_SIZES)]
    pred = predictor.predict(images)
    for image, label in zip(images, pred.maps, strict=True):
        assert label.shape == image.shape[:2] and label.dtype == np.uint8
        assert (label[image.shape[0] // 4 + 2 : image.shape[0] // 2 - 2, image.shape[1] // 3 + 2] == 1).all()
    # a pointwise model at native resolution (tiles, or a shorter side the image already has) is exact
    exact = pred.maps[0] == _pointwise_truth(images[0])
    assert exact.mean() > (0.999 if kind == "tiles" else 0.99)
    # an image's result does not depend on the batch it came in
    alone = predictor.predict(images[2:])
    assert (alone.maps[0] == pred.maps[2]).all() and alone.entropy[0] == pred.entropy[2]


def test_resize_policy_keeps_the_fingerprint_of_earlier_stores(tmp_path):
    assert InputPolicy().fingerprint() == RESIZE_FINGERPRINT
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    fps = {fingerprint(model, ["a"], InputPolicy(kind=k)) for k in ("resize", "shorter_side", "tiles")}
    assert len(fps) == 3 and fingerprint(model, ["a"]) == fingerprint(model, ["a"], InputPolicy())


def test_training_views_match_inference():
    images = [_photo(h, w, i) for i, (h, w) in enumerate([(100, 150), (40, 30)])]
    masks = [np.full(im.shape[:2], 1, np.uint8) for im in images]
    x, y = InputPolicy(kind="shorter_side", size=(64, 64), shorter_side=64, max_side=128, overlap=0.0).training_views(
        images, masks, [0.5] * 3, [0.25] * 3
    )
    assert x.shape[1:] == (3, 64, 64) and y.shape[1:] == (64, 64) and len(x) == 2 + 2  # 64x96 and 85x64: 2 crops each
    assert set(y.unique().tolist()) == {1}
    x, y = InputPolicy(kind="tiles", tile=64).training_views(images, masks, [0.5] * 3, [0.25] * 3)
    assert x.shape[1:] == (3, 64, 64) and (y[-1, 40:, :] == 255).all()  # a small image: padded with ignore
    x, y = InputPolicy(size=(32, 48)).training_views(images, masks, [0.5] * 3, [0.25] * 3)
    assert x.shape == (2, 3, 32, 48) and y.shape == (2, 32, 48)


def _checkpoint(path, seed, policy):
    torch.manual_seed(seed)
    kwargs = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = build_model("smp.Unet", CLASSES.num_classes, **kwargs)
    meta = make_meta(
        arch="smp.Unet",
        kwargs=kwargs,
        classes=list(CLASSES.names),
        input_size=64,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        input_policy=policy,
    )
    save_checkpoint(path, model, meta, provenance={"test": seed})
    return path


@pytest.mark.parametrize("kind", ["shorter_side", "tiles"])
def test_native_resolution_through_infer_mine_tasks_evaluate(tmp_path, kind):
    policy = InputPolicy(kind=kind, size=(64, 64), shorter_side=96, max_side=160, tile=256)
    rows, truth = [], {}
    for i, (h, w) in enumerate(NATIVE_SIZES):
        data = encode_jpeg(_photo(h, w, i))
        (tmp_path / f"{i}.jpg").write_bytes(data)
        rows.append({"id": image_id(data), "path": str(tmp_path / f"{i}.jpg")})
        truth[rows[-1]["id"]] = _pointwise_truth(_photo(h, w, i))
    index = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    stores = {}
    for name, seed in (("target", 0), ("rival", 1)):
        ckpt = _checkpoint(tmp_path / f"{name}.pt", seed, policy)
        predictor = load_predictor(ckpt, classes=CLASSES, batch_size=2)
        stores[name] = PredictionStore(tmp_path / name)
        predict_pool(
            predictor,
            index,
            stores[name],
            model_name=name,
            classes=CLASSES,
            shard_size=2,
            batch_size=2,
            workers=0,
            fingerprint=fingerprint(ckpt, index["id"].tolist(), predictor.policy),
        )
    maps = stores["target"].read_maps(index["id"].tolist())
    sizes = {r["id"]: s for r, s in zip(rows, NATIVE_SIZES, strict=True)}
    assert all(maps[i].shape == sizes[i] for i in maps)

    bands = np.array([[np.nan, np.nan], [0.0, 1.0], [0.0, 1.0]])
    m = mine_mad(stores["target"].iter_shards(), {"rival": stores["rival"].iter_shards()}, bands, CLASSES, n3=3)
    assert len(m) and set(m["image_id"]) <= set(index["id"])

    first = index["id"].iloc[0]
    results = mask_to_results(maps[first], CLASSES)  # the Label Studio pre-annotation, at the photo's size
    assert all((r["original_height"], r["original_width"]) == sizes[first] for r in results)
    assert (results_to_mask(results, CLASSES, height=sizes[first][0], width=sizes[first][1]) == maps[first]).all()

    ids = index["id"].tolist()
    cms = per_image_confusions(maps, truth, ids, CLASSES.num_classes)
    assert cms.shape == (3, 3, 3) and cms.sum() == sum(h * w for h, w in NATIVE_SIZES)
    assert 0.0 <= score_set(cms, CLASSES.names, n_boot=10, seed=0)["miou"] <= 1.0
