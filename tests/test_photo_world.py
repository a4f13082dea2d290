"""The photo world (world.kind: photos) on a generated fixture of cut-outs and backgrounds, and the reading of its
Debian sources (ar, tar, Qt .rcc, DEP-5 copyright) on archives built here: no download."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from madseg.config import load_params
from madseg.io.images import read_mask, read_rgb
from madseg.labels import IGNORE_INDEX
from madseg.stages import make_world
from madseg.stops import BadInput, ConfigError
from madseg.world import files as world_files
from madseg.world import photo_sources
from madseg.world.generate import iter_world
from madseg.world.photos import PHOTO_FACTORS, Cutout, PhotoSources, compose, world_sources

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["background", "apple", "bolt", "cone"]
COLOURS = {"apple": (220, 40, 40), "bolt": (40, 60, 220), "cone": (240, 200, 30)}


def _cutout(rng: np.random.Generator, colour: tuple[int, int, int]) -> np.ndarray:
    """An RGBA ellipse (soft edge) on a transparent margin: (h, w, 4) uint8."""
    h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r = np.hypot((yy - h / 2) / (h / 2 - 4), (xx - w / 2) / (w / 2 - 4))
    alpha = np.clip((1.0 - r) * 8 + 0.5, 0, 1)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = np.asarray(colour) + rng.integers(-20, 20, size=3)
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    return rgba


def make_sources(root: Path, seed: int = 0) -> Path:
    """A sources folder as `madseg photos fetch` writes it: 5 cut-outs per class, 6 gradient-and-noise photos."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        for i in range(5):
            path = root / "objects" / name / f"{name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_cutout(rng, colour), "RGBA").save(path)
    (root / "backgrounds").mkdir(parents=True)
    for i in range(6):
        xx = np.mgrid[0:90, 0:120][1] / 120
        base = rng.uniform(40, 200, size=3)
        img = base * (0.7 + 0.6 * xx[..., None] * rng.uniform(0, 1, size=3)) + rng.normal(0, 6, (90, 120, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "backgrounds" / f"bg{i}.jpg")
    rows = [["backgrounds/bg0.jpg", "background", "fake-bg", "1.0", "usr/bg0.jpg", "CC0-1.0", "someone"]]
    pd.DataFrame(rows, columns=photo_sources.MANIFEST_COLUMNS).to_csv(root / "manifest.csv", index=False)
    return root


def _params(tmp: Path, sources: Path, out: str = "world"):
    params = load_params(ROOT / "params.yaml")
    world = dataclasses.replace(
        params.world,
        kind="photos",
        image_size=48,
        n_train=16,
        n_val=6,
        n_pool=40,
        n_eval_pool=20,
        near_duplicates=3,
        benchmark_leaks=2,
        out_dir=str(tmp / out),
        photos=dataclasses.replace(params.world.photos, sources=str(sources)),
    )
    return dataclasses.replace(params, world=world, dataset=dataclasses.replace(params.dataset, classes=CLASSES))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photo_world")
    params = _params(tmp, make_sources(tmp / "sources"))
    with pytest.MonkeyPatch.context() as mp:  # rendered in this process (spawning workers costs more here)
        mp.setattr(world_files.os, "cpu_count", lambda: 1)
        make_world.run(params)
    return params, Path(params.world.out_dir)


def test_splits_share_no_instance_and_no_background(world):
    _, root = world
    table = pd.read_csv(root / "sources.csv", keep_default_na=False)
    originals = table[table["copy_of"] == ""]
    assert len(originals) == 16 + 6 + 40 + 20
    part = originals["split"].replace({"eval_pool": "pool"})
    seen = {}
    for split in ("train", "val", "pool"):
        rows = originals[part == split]
        seen[split] = (
            set(";".join(rows["instances"]).split(";")) - {""},
            set(rows["background"]),
        )
        assert seen[split][0] and seen[split][1]
    for a, b in (("train", "val"), ("train", "pool"), ("val", "pool")):
        assert not seen[a][0] & seen[b][0], f"{a} and {b} share cut-outs"
        assert not seen[a][1] & seen[b][1], f"{a} and {b} share backgrounds"
    # the planted copies name their originals and carry their provenance
    copies = table[table["copy_of"] != ""]
    assert len(copies) == 3 + 2
    by_name = originals.set_index("name")
    for _, row in copies.iterrows():
        assert row["instances"] == by_name.loc[row["copy_of"], "instances"]


def test_truth_matches_images_and_their_instances(world):
    params, root = world
    classes = params.dataset.class_list()
    table = pd.read_csv(root / "sources.csv", keep_default_na=False).set_index("name")
    for split in ("train", "val"):
        for name in (root / "voc/ImageSets/Segmentation" / f"{split}.txt").read_text().split():
            image = read_rgb(root / "voc/JPEGImages" / f"{name}.jpg")
            mask = read_mask(root / "voc/SegmentationClass" / f"{name}.png", classes)
            assert image.shape[:2] == mask.shape == (48, 48)
            pasted = {classes.names.index(i.split("/")[0]) for i in table.loc[name, "instances"].split(";")}
            present = set(np.unique(mask)) - {0, IGNORE_INDEX}
            assert present <= pasted and present  # an object may hide another, never all of them
    factors = pd.read_csv(root / "eval_pool/truth/factors.csv", keep_default_na=False)
    for _, row in factors.iterrows():
        mask = read_mask(root / "eval_pool/truth/masks" / f"{row['image_id']}.png", classes)
        assert mask.shape == (48, 48)
        if row["kind"] == "ood":
            assert not ((mask > 0) & (mask != IGNORE_INDEX)).any()


def test_pasted_pixels_carry_their_class_and_the_rest_is_background():
    """Planted: opaque squares of one pure colour per class on a flat grey photo; the truth must say which is which."""
    cutouts = []
    for cls, colour in enumerate(COLOURS.values(), start=1):
        rgba = np.zeros((20, 20, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, 255
        cutouts.append(Cutout(cls, f"c{cls}", rgba, 400))
    grey = np.full((60, 60, 3), 128, np.uint8)
    sources = PhotoSources(tuple(cutouts), (("grey", grey),))
    for seed in range(20):
        image, label, background, instances = compose(
            np.random.default_rng(seed), sources, [0, 1, 2], [0], 48, "normal", ()
        )
        assert background == "grey" and 1 <= len(instances) <= 3
        colours = np.array([(128, 128, 128), *COLOURS.values()], np.float32)
        for cls in range(4):
            inside = ndimage.binary_erosion(label == cls, iterations=2)  # off the resampled edges
            if inside.any():
                assert np.abs(image[inside].astype(np.float32) - colours[cls]).max() <= 12, (seed, cls)


def test_corner_cases_record_their_factors_in_their_shares(world):
    params, root = world
    w = params.world
    for folder, n in (("pool_truth", w.n_pool), ("eval_pool/truth", w.n_eval_pool)):
        table = pd.read_csv(root / folder / "factors.csv", keep_default_na=False)
        table = table[table["name"].str[-6:].astype(int) < n]  # the planted copies repeat their originals' rows
        kinds = table["kind"].value_counts()
        assert kinds.get("corner", 0) == round(n * w.corner_share)
        assert kinds.get("ood", 0) == round(n * w.ood_share)
        for _, row in table.iterrows():
            got = [f for f in row["factors"].split(";") if f]
            assert (row["kind"] == "corner") == bool(got)
            assert len(got) <= w.max_factors and set(got) <= set(PHOTO_FACTORS)
            assert not {"tiny_scale", "huge_scale"} <= set(got)
    pool = pd.read_csv(root / "pool_truth/factors.csv", keep_default_na=False)
    assert set(";".join(pool["factors"]).split(";")) - {""} == set(PHOTO_FACTORS)  # 13 corners cycle all 10


def test_manifest_names_the_sources(world):
    import json

    _, root = world
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["kind"] == "photos"
    assert manifest["sources"]["packages"] == [
        {"package": "fake-bg", "version": "1.0", "files": 1, "licences": ["CC0-1.0"]}
    ]


def test_same_seed_gives_the_same_bytes(world, tmp_path, monkeypatch):
    params, root = world
    again = dataclasses.replace(params, world=dataclasses.replace(params.world, out_dir=str(tmp_path / "again")))
    monkeypatch.setattr(world_files.os, "cpu_count", lambda: 1)
    make_world.run(again)
    assert _digest(root) == _digest(tmp_path / "again")


def test_worker_processes_render_the_same_images(world):
    params, _ = world
    names = tuple(CLASSES)
    one = list(iter_world(params.world, "val", classes=names))
    two = list(iter_world(params.world, "val", workers=2, classes=names))
    assert [(a.jpeg, a.instances) for a in one] == [(b.jpeg, b.instances) for b in two]


def test_missing_sources_say_how_to_fetch_them_and_keep_the_old_world(tmp_path):
    params = _params(tmp_path, tmp_path / "nowhere")
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "manifest.json").write_text("{}")  # a world built before
    with pytest.raises(BadInput) as e:
        make_world.run(params)
    message = str(e.value)
    assert "madseg photos fetch" in message and "tuxpaint-stamps-default" in message
    assert (tmp_path / "world" / "manifest.json").exists()


def test_sources_fetched_by_an_older_selection_are_refused_and_keep_the_old_world(tmp_path):
    sources = make_sources(tmp_path / "sources")
    manifest = pd.read_csv(sources / "manifest.csv", dtype=str)
    # a background an older selection took from one of the shipped packages, dropped since (real objects in it)
    dropped = [
        "backgrounds/lomiri_Wine_by_Jakkub_Mede.jpg",
        "background",
        "lomiri-wallpapers-16.04",
        "16.04",
        "",
        "",
        "",
    ]
    manifest.loc[len(manifest)] = dropped
    manifest.to_csv(sources / "manifest.csv", index=False)
    params = _params(tmp_path, sources)
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "manifest.json").write_text("{}")
    with pytest.raises(BadInput, match=r"lomiri_Wine_by_Jakkub_Mede.*run `madseg photos fetch` again"):
        make_world.run(params)
    assert (tmp_path / "world" / "manifest.json").read_text() == "{}"


def test_a_class_without_cut_outs_is_named(tmp_path):
    sources = make_sources(tmp_path / "sources")
    params = _params(tmp_path, sources)
    params = dataclasses.replace(params, dataset=dataclasses.replace(params.dataset, classes=[*CLASSES, "dog"]))
    with pytest.raises(BadInput, match="'dog'"):
        make_world.run(params)


def test_a_class_made_of_several_folders_takes_the_cut_outs_of_each(tmp_path):
    params = _params(tmp_path, make_sources(tmp_path / "sources"))
    classes = ["background", "fruit_or_bolt", "cone"]
    photos = dataclasses.replace(params.world.photos, folders={"fruit_or_bolt": ["apple", "bolt"]})
    sources = world_sources(dataclasses.replace(params.world, photos=photos), classes)
    by_class = {c.cls: set() for c in sources.cutouts}
    for c in sources.cutouts:
        by_class[c.cls].add(c.name.split("/")[0])
    assert by_class == {1: {"apple", "bolt"}, 2: {"cone"}}
    assert len(sources.cutouts) == 15


@pytest.mark.parametrize(
    ("folders", "problem"),
    [({"dog": ["apple"]}, "['dog'] not among"), ({"apple": ["bolt"]}, "['bolt'] are given to more than one class")],
)
def test_folders_of_unknown_classes_or_given_twice_are_refused(tmp_path, folders, problem):
    params = tmp_path / "params.yaml"
    overlay = {"dataset": {"classes": CLASSES}, "world": {"kind": "photos", "photos": {"folders": folders}}}
    params.write_text(yaml.safe_dump(overlay))
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_params(ROOT / "params.yaml", overlay=params)


# ----------------------------------------------------------------------------------------------- the sources
def _rcc(files: dict[str, bytes], compress: set[str] = frozenset()) -> bytes:
    """A Qt binary resource archive (format 1) of ``files`` in one folder ``/res``: root, folder, files."""
    names, data, offsets = b"", b"", {}
    for name in ["res", *files]:
        offsets[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    nodes = [struct.pack(">iHii", 0, 2, 1, 1), struct.pack(">iHii", offsets["res"], 2, len(files), 2)]
    for name, content in files.items():
        payload = struct.pack(">I", len(content)) + zlib.compress(content) if name in compress else content
        nodes.append(struct.pack(">iHhhi", offsets[name], 1 if name in compress else 0, 0, 0, len(data)))
        data += struct.pack(">I", len(payload)) + payload
    tree = b"".join(nodes)
    header = 20
    return (
        b"qres"
        + struct.pack(">iiii", 1, header, header + len(tree), header + len(tree) + len(data))
        + tree
        + data
        + names
    )


def test_rcc_reader_reads_plain_and_zlib_entries():
    archive = _rcc({"a.txt": b"hello", "b.bin": b"x" * 500}, compress={"b.bin"})
    assert photo_sources.read_rcc(archive) == {"/res/a.txt": b"hello", "/res/b.bin": b"x" * 500}
    with pytest.raises(ValueError, match="qres"):
        photo_sources.read_rcc(b"nope" + archive[4:])


def _tar(files: dict[str, bytes], mode: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _deb(package: str, version: str, files: dict[str, bytes]) -> bytes:
    members = {
        "debian-binary": b"2.0\n",
        "control.tar.gz": _tar({"control": f"Package: {package}\nVersion: {version}\n".encode()}, "w:gz"),
        "data.tar.xz": _tar(files, "w:xz"),
    }
    out = b"!<arch>\n"
    for name, content in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode() + content
        out += b"\n" * (len(content) % 2)
    return out


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2020 Somebody
License: GPL-2+

Files: src/pics/photo.jpg
Copyright: 2021 A Photographer
License: CC-BY-4.0
 The licence text follows here.
"""


def _png(rgba: np.ndarray, mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    im = Image.fromarray(rgba, "RGBA")
    (im.convert("P") if mode == "P" else im).save(out, format="PNG")
    return out.getvalue()


def test_fetch_reads_debs_normalises_and_credits(tmp_path, monkeypatch):
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[10:30, 5:25] = (200, 30, 30, 255)  # the cut-out: 20 x 20 inside a transparent margin
    photo = io.BytesIO()
    Image.fromarray(np.full((700, 900, 3), 90, np.uint8)).save(photo, format="JPEG")
    files = {
        "usr/share/doc/fake/copyright": COPYRIGHT.encode(),
        "usr/share/fake/thing.png": _png(rgba),
        "usr/share/fake/res.rcc": _rcc({"photo.jpg": photo.getvalue()}, compress={"photo.jpg"}),
    }
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "fake_1.2-3_all.deb").write_bytes(_deb("fake", "1.2-3", files))
    selection = pd.DataFrame(
        [
            ["apple", "thing", "fake", "usr/share/fake/thing.png", ""],
            ["background", "photo", "fake", "usr/share/fake/res.rcc:/res/photo.jpg", ""],
        ],
        columns=["role", "name", "package", "path", "licence_file"],
    )
    monkeypatch.setattr(photo_sources, "read_selection", lambda: selection)
    dest = tmp_path / "sources"
    assert photo_sources.fetch_sources(dest, debs=debs) == {"apple": 1, "background": 1}
    cut = np.asarray(Image.open(dest / "objects/apple/thing.png"))
    assert cut.shape == (20, 20, 4) and (cut[..., 3] == 255).all()
    assert min(Image.open(dest / "backgrounds/photo.jpg").size) == photo_sources.BACKGROUND_SIDE
    manifest = pd.read_csv(dest / "manifest.csv", keep_default_na=False)
    assert list(manifest["file"]) == ["backgrounds/photo.jpg", "objects/apple/thing.png"]
    assert list(manifest["version"]) == ["1.2-3"] * 2
    assert list(manifest["licence"]) == ["CC-BY-4.0", "GPL-2+"]  # photo.jpg's own stanza, then Files: *
    assert (dest / "licences/fake/copyright").read_text() == COPYRIGHT
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    # a second fetch replaces the folder whole, with the same bytes
    before = _digest(dest)
    photo_sources.fetch_sources(dest, debs=debs)
    assert _digest(dest) == before


def test_fetch_without_apt_get_names_the_packages(tmp_path, monkeypatch):
    def no_apt(*args, **kwargs):
        raise FileNotFoundError("apt-get")

    monkeypatch.setattr(photo_sources.subprocess, "run", no_apt)
    with pytest.raises(BadInput) as e:
        photo_sources.fetch_sources(tmp_path / "sources")
    message = str(e.value)
    assert all(p in message for p in photo_sources.packages()) and "--debs" in message
    assert not (tmp_path / "sources").exists()


def test_the_shipped_selection_names_the_classes_of_the_preset():
    selection = photo_sources.read_selection()
    preset = load_params(ROOT / "params.yaml", overlay=ROOT / "presets/photos.yaml")
    folders = {f for names in preset.world.photos.folders_of(preset.dataset.classes) for f in names}
    assert set(selection["role"]) == {*folders, "background"}
    assert not selection.duplicated(["role", "name"]).any()
    assert not selection["path"].str.startswith("/").any()
    assert preset.world.kind == "photos"
