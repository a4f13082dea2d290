"""Reading a world's hidden truth: a pool's factors.csv and masks/ (by image id), and a held-out pool D_eval
(images/ by name, truth/). Only the simulated annotators and the validity checks read it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.io.images import read_mask, read_rgb
from madseg.io.tables import read_csv
from madseg.labels import ClassList


def read_factors(truth_dir: str | Path) -> pd.DataFrame:
    """``truth_dir``/factors.csv: one row an image (image_id, kind, factors; '' for no factor)."""
    table = read_csv(Path(truth_dir) / "factors.csv", required=["image_id", "kind", "factors"])
    table["factors"] = table["factors"].fillna("").astype(str)
    return table


def read_pool_factors(truth_dir: str | Path) -> pd.Series:
    """The pool's truth factors: image id -> ';'-joined factor names ('' for none)."""
    return read_factors(truth_dir).set_index("image_id")["factors"]


def read_truth_masks(truth_dir: str | Path, ids: Iterable[str], classes: ClassList) -> dict[str, np.ndarray]:
    """The (H, W) uint8 truth masks of ``ids`` (255 = ignore), by image id."""
    return {i: read_mask(Path(truth_dir) / "masks" / f"{i}.png", classes) for i in ids}


@dataclass
class HeldOutPool:
    factors: pd.DataFrame  # one row an image: image_id, name, kind, factors
    images: list[np.ndarray]  # (H, W, 3) uint8, in the rows' order
    masks: list[np.ndarray]  # (H, W) uint8 truth, 255 = ignore


def read_held_out_pool(pool: str | Path, classes: ClassList) -> HeldOutPool:
    """D_eval under ``pool``: images/<name>.jpg, truth/factors.csv (with a name column) and truth/masks/<id>.png."""
    pool = Path(pool)
    factors = read_factors(pool / "truth")
    if "name" not in factors.columns:
        raise ValueError(f"{pool / 'truth' / 'factors.csv'}: lacks the column 'name' (the image's file name)")
    images = [read_rgb(pool / "images" / f"{name}.jpg") for name in factors["name"]]
    masks = [read_mask(pool / "truth" / "masks" / f"{i}.png", classes) for i in factors["image_id"]]
    return HeldOutPool(factors=factors, images=images, masks=masks)
