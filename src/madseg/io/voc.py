"""Reading a PASCAL VOC-layout split (S0 = train, T0 = val): names, RGB images and validated masks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from madseg.io.images import image_id, read_mask, read_rgb
from madseg.labels import ClassList


@dataclass
class VocSplit:
    names: list[str]
    ids: list[str]  # content hashes of the JPEG files
    images: list[np.ndarray]  # (H, W, 3) uint8
    masks: list[np.ndarray]  # (H, W) uint8, 255 = ignore


def split_names(voc_root: str | Path, split: str) -> list[str]:
    listing = Path(voc_root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing}: no such split listing (expected VOC layout under {voc_root})")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{listing}: empty split")
    return names


def iter_masks(voc_root: str | Path, split: str, classes: ClassList) -> Iterator[np.ndarray]:
    """The validated (H, W) uint8 masks of ``split``, one at a time in its listed order (255 = ignore)."""
    for name in split_names(voc_root, split):
        yield read_mask(Path(voc_root) / "SegmentationClass" / f"{name}.png", classes)


def read_split(dataset, split: str, classes: ClassList) -> VocSplit:
    """Read every image and mask of ``split`` under ``dataset.voc_root``; shapes must agree per image."""
    root = Path(dataset.voc_root)
    names = split_names(root, split)
    ids, images, masks = [], [], []
    for name in names:
        jpeg = root / "JPEGImages" / f"{name}.jpg"
        image = read_rgb(jpeg)
        mask = read_mask(root / "SegmentationClass" / f"{name}.png", classes)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{name}: image {image.shape[:2]} and mask {mask.shape} differ in size")
        ids.append(image_id(jpeg.read_bytes()))
        images.append(image)
        masks.append(mask)
    return VocSplit(names=names, ids=ids, images=images, masks=masks)
