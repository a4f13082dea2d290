"""Class lists, palette and ignore index: the only place this logic lives.

A :class:`ClassList` is built from the ``dataset`` section of params.yaml: either a preset name
(``voc`` or ``demo``) or an explicit list of class names (index 0 is background by convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

DEMO_CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross", "star")

PRESETS: dict[str, tuple[str, ...]] = {"voc": VOC_CLASSES, "demo": DEMO_CLASSES}


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: (n, 3) uint8, entry i is the colour of class i (bit-interleaved)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


@dataclass(frozen=True)
class ClassList:
    """An ordered list of class names; index i is the label value i in every mask and prediction."""

    names: tuple[str, ...]
    palette: np.ndarray  # (256, 3) uint8; entries past len(names) are unused, 255 is the ignore colour

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a class list needs background and at least one class, got {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names in {list(self.names)}")
        if len(self.names) >= IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX - 1} classes are supported, got {len(self.names)}")
        if self.palette.shape != (256, 3) or self.palette.dtype != np.uint8:
            raise ValueError(f"palette must be (256, 3) uint8, got {self.palette.shape} {self.palette.dtype}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def foreground(self) -> range:
        """Indices of the foreground classes (all but background at index 0)."""
        return range(1, len(self.names))

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown class {name!r}; valid classes: {list(self.names)}") from None

    def validate_mask(self, mask: np.ndarray, what: str) -> None:
        """Raise ValueError if ``mask`` (H, W) integer holds a value that is neither a class nor ignore."""
        values = np.unique(mask)
        bad = values[(values >= self.num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            raise ValueError(
                f"{what}: label values {bad.tolist()} are outside the class list "
                f"(0..{self.num_classes - 1}, ignore {IGNORE_INDEX})"
            )

    def flat_palette(self) -> list[int]:
        """The palette as PIL wants it for mode 'P' images: 768 ints."""
        return self.palette.reshape(-1).tolist()


def make_class_list(classes: str | Sequence[str], palette: Sequence[Sequence[int]] | None = None) -> ClassList:
    """Build a ClassList from a preset name or an explicit list of names, with an optional palette."""
    if isinstance(classes, str):
        if classes not in PRESETS:
            if "," in classes:  # `classes: background, cat, dog` is one string in YAML
                names = ", ".join(c.strip() for c in classes.split(","))
                raise ValueError(f"{classes!r} is one text, not a list — write it as a list: [{names}]")
            raise ValueError(f"unknown class preset {classes!r} — name one of {sorted(PRESETS)} or list your classes")
        names = PRESETS[classes]
    else:
        names = tuple(str(c) for c in classes)
    full = voc_palette()
    if palette is not None:
        given = np.asarray(palette, dtype=np.int64)
        if given.ndim != 2 or given.shape[1] != 3 or given.shape[0] != len(names):
            raise ValueError(f"palette must list one [r, g, b] per class ({len(names)}), got shape {given.shape}")
        if given.min() < 0 or given.max() > 255:
            raise ValueError("palette entries must lie in 0..255")
        full[: len(names)] = given.astype(np.uint8)
    full[IGNORE_INDEX] = (224, 224, 192)  # VOC's boundary colour
    return ClassList(names=names, palette=full)
