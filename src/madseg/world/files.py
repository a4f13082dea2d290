"""Writing the demo world to disk: what the make_world stage leaves under ``world.out_dir``.

Layout: ``voc/`` (S0/T0: JPEGImages, SegmentationClass, ImageSets/Segmentation), ``pool/images/`` (D, with planted
near-duplicates and leaked benchmark images), ``pool_truth/`` (D's masks by image id, factors.csv, duplicates.csv:
read only by the simulated annotators and the validity checks), ``eval_pool/`` (D_eval: images/, truth/) and
``manifest.json``; the photo world adds ``sources.csv`` (every image's background photo and cut-outs) and the
sources' packages and licences to the manifest.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from madseg.config import WorldParams
from madseg.io.atomic import write_bytes, write_json, write_text
from madseg.io.images import image_id, write_mask
from madseg.io.tables import write_csv
from madseg.labels import ClassList
from madseg.world.generate import PlantedCopy, WorldImage, iter_world, plant_near_duplicates
from madseg.world.photos import read_sources_manifest, world_sources


def write_world(world: WorldParams, classes: ClassList) -> dict[str, dict[str, int]]:
    """Write the whole demo world under ``world.out_dir`` (replacing it): S0/T0 in VOC layout, the pool D with its
    planted near-duplicates and benchmark leaks, D's truth apart (masks/, factors.csv, duplicates.csv), and the
    held-out D_eval (images/, truth/). Returns the counts per split, kind and factor (also in manifest.json)."""
    root = Path(world.out_dir)
    if world.kind == "photos":  # missing sources stop the stage before the previous world is removed
        world_sources(world, classes.names)
    if root.exists():
        shutil.rmtree(root)
    voc, pool, truth, eval_pool = (
        root / "voc",
        root / "pool" / "images",
        root / "pool_truth",
        root / "eval_pool",
    )
    # the world is deleted and rebuilt on every run: a file-by-file fsync (16 of 38 s) would protect nothing
    write_file = functools.partial(write_bytes, durable=False)
    write_label = functools.partial(write_mask, classes=classes, durable=False)
    counts: dict[str, dict[str, int]] = {}
    workers = os.cpu_count() or 1  # every image has its own seed: the bytes do not depend on this
    benchmark: dict[str, tuple[bytes, np.ndarray]] = {}
    provenance: list[dict] = []  # the photo world's: which photo and cut-outs each image shows
    render = functools.partial(iter_world, classes=classes.names)

    for split in ("train", "val"):
        names = []
        for item in tqdm(
            render(world, split, workers=workers),
            total=getattr(world, f"n_{split}"),
            desc=f"world {split}",
        ):
            write_file(voc / "JPEGImages" / f"{item.name}.jpg", item.jpeg)
            write_label(voc / "SegmentationClass" / f"{item.name}.png", item.label)
            names.append(item.name)
            benchmark[item.name] = (item.jpeg, item.label)
            provenance.append(_provenance(item, ""))
        write_text(voc / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(names) + "\n")
        counts[split] = {"normal": len(names)}

    pool_items: dict[str, tuple[bytes, np.ndarray]] = {}
    pool_rows: list[dict] = []
    for split, image_dir, truth_dir, n in (
        ("pool", pool, truth, world.n_pool),
        ("eval_pool", eval_pool / "images", eval_pool / "truth", world.n_eval_pool),
    ):
        rows = []
        for item in tqdm(render(world, split, workers=workers), total=n, desc=f"world {split}"):
            write_file(image_dir / f"{item.name}.jpg", item.jpeg)
            ident = image_id(item.jpeg)
            provenance.append(_provenance(item, ident))
            write_label(truth_dir / "masks" / f"{ident}.png", item.label)
            rows.append({"image_id": ident, "name": item.name, "kind": item.kind, "factors": ";".join(item.factors)})
            if split == "pool":
                pool_items[item.name] = (item.jpeg, item.label)
        if split == "pool":
            pool_rows = rows  # written after the planted duplicates join them
        else:
            counts |= _write_truth_table(truth_dir, rows, split)

    # near-duplicates, as web crawls have them: copies of pool images and leaked benchmark images
    by_name = {row["name"]: row for row in pool_rows}
    planted = plant_near_duplicates(world, pool_items, benchmark)
    for copy in planted:
        write_file(pool / f"{copy.name}.jpg", copy.jpeg)
        write_label(truth / "masks" / f"{image_id(copy.jpeg)}.png", copy.label)
        original = by_name.get(copy.of_name, {"kind": "normal", "factors": ""})  # benchmark leaks are normal
        pool_rows.append(
            {
                "image_id": image_id(copy.jpeg),
                "name": copy.name,
                "kind": original["kind"],
                "factors": original["factors"],
            }
        )
    counts |= _write_truth_table(truth, pool_rows, "pool")
    duplicates = pd.DataFrame([(c.name, c.of_name, c.kind) for c in planted], columns=["name", "of_name", "kind"])
    write_csv(truth / "duplicates.csv", duplicates)
    manifest = {"counts": counts, "duplicates": len(planted), "image_size": world.image_size}
    if world.kind == "photos":
        manifest |= _photo_provenance(world, root, provenance, planted)
    write_json(root / "manifest.json", manifest)
    return counts


def _provenance(item: WorldImage, ident: str) -> dict:
    return {
        "name": item.name,
        "split": item.split,
        "image_id": ident,
        "kind": item.kind,
        "factors": ";".join(item.factors),
        "background": item.background,
        "instances": ";".join(item.instances),
        "copy_of": "",
    }


def _photo_provenance(world: WorldParams, root: Path, rows: list[dict], planted: list[PlantedCopy]) -> dict:
    """Write ``root``/sources.csv (each image's background photo and cut-outs; planted copies name their
    original in copy_of) and return the manifest's ``kind`` and ``sources`` (packages, versions, licences)."""
    by_name = {row["name"]: row for row in rows}
    for copy in planted:
        rows.append(by_name[copy.of_name] | {"name": copy.name, "split": "pool", "copy_of": copy.of_name})
        rows[-1]["image_id"] = image_id(copy.jpeg)
    write_csv(root / "sources.csv", pd.DataFrame(rows))
    table = read_sources_manifest(world.photos.sources)
    packages = []
    if table is not None:
        for (package, version), group in table.groupby(["package", "version"], sort=True):
            licences = sorted(set(group["licence"]) - {""})
            packages.append({"package": package, "version": version, "files": len(group), "licences": licences})
    return {"kind": "photos", "sources": {"folder": world.photos.sources, "packages": packages}}


def _write_truth_table(truth_dir: Path, rows: list[dict], split: str) -> dict[str, dict[str, int]]:
    """Write factors.csv (sorted by image id) and return its counts per kind and per factor."""
    table = pd.DataFrame(rows).sort_values("image_id").reset_index(drop=True)
    write_csv(truth_dir / "factors.csv", table)
    factors = table["factors"].str.split(";").explode()
    return {
        split: table["kind"].value_counts().sort_index().to_dict(),
        f"{split}_factors": factors[factors != ""].value_counts().sort_index().to_dict(),
    }
