"""The photo world (``world.kind: photos``): real-photo cut-outs pasted on crops of real scene photos.

Each image is a random crop of a background photo with 1-3 cut-outs of the dataset's classes pasted on it (scaled
to cover 3-40 % of the frame, flipped, slightly rotated; later ones occlude earlier ones); the truth comes from the
alpha (alpha >= 128 -> the class) with a 1-pixel ignore band around objects, as the shapes world has. Corner cases
carry 1..max_factors of :data:`PHOTO_FACTORS`; out-of-domain images are a background turned into a pencil sketch,
a posterised cartoon or a false-colour map, with no class in them.

Cut-out instances (per class) and background photos are split disjointly by a seeded permutation into train / val /
pool (``world.photos.shares``); the pool and D_eval draw from the pool's share, so both show objects and scenes
that training never saw. The sources folder is what ``madseg photos fetch`` writes (madseg.world.photo_sources).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from madseg.config import WorldParams
from madseg.labels import IGNORE_INDEX
from madseg.stops import BadInput

PHOTO_FACTORS: tuple[str, ...] = (
    "tiny_scale",  # objects cover 1-3 % of the frame
    "huge_scale",  # 45-80 %
    "rotation",  # 40-180 degrees instead of a slight tilt
    "occlusion",  # a band of another part of the scene covers part of each object
    "partial",  # objects cut by the frame
    "blur",
    "heavy_noise",
    "colour_shift",  # the objects' colour channels swapped
    "low_contrast",
    "dark",  # low light
)
OOD_STYLES = ("sketch", "posterised", "false_colour")
ASSET_SPLIT = {"train": "train", "val": "val", "pool": "pool", "eval_pool": "pool"}
COVER = (0.03, 0.40)  # share of the frame one normal object covers (log-uniform)
ALPHA_TRUTH = 128
SWAPS = ([1, 2, 0], [2, 0, 1], [2, 1, 0], [0, 2, 1], [1, 0, 2])  # colour_shift: every channel order but RGB


@dataclass(frozen=True)
class Cutout:
    cls: int  # 1..K-1, the class's index in the dataset's class list
    name: str  # <class>/<instance>
    rgba: np.ndarray  # (h, w, 4) uint8, cropped to the alpha's bounding box
    area: int  # pixels with alpha >= ALPHA_TRUTH


@dataclass(frozen=True)
class PhotoSources:
    """The loaded sources folder: cut-outs sorted by (class, name), backgrounds by name."""

    cutouts: tuple[Cutout, ...]
    backgrounds: tuple[tuple[str, np.ndarray], ...]  # (name, (H, W, 3) uint8)


def load_sources(
    folder: str | Path, classes: Sequence[str], folders: Sequence[Sequence[str]] | None = None
) -> PhotoSources:
    """Read the cut-outs of every class but the first (background) and ``folder``/backgrounds/*.jpg.

    A class's cut-outs are ``folder``/objects/<f>/*.png for each folder f of its entry in ``folders`` (one per
    foreground class, in order; by default the class's own name). Raises BadInput saying how to fetch them when
    the sources folder or a class's folder is missing, or was fetched by an older selection.
    """
    from madseg.world.photo_sources import dropped_files, how_to_fetch

    root = Path(folder)
    if len(classes) < 2:
        raise ValueError(f"the photo world needs background and at least one class, got {list(classes)}")
    if not (root / "backgrounds").is_dir() or not (root / "objects").is_dir():
        raise BadInput(
            f"world.photos.sources: {root} holds no photo sources (objects/, backgrounds/) — {how_to_fetch()}"
        )
    manifest = read_sources_manifest(root)
    if manifest is not None and (dropped := dropped_files(manifest)):
        raise BadInput(
            f"world.photos.sources: {root} was fetched by an older madseg and holds {len(dropped)} file(s) its "
            f"selection no longer takes, e.g. {dropped[0]} — run `madseg photos fetch` again"
        )
    cutouts = []
    per_class = folders or [[name] for name in classes[1:]]
    for cls, (name, class_folders) in enumerate(zip(classes[1:], per_class, strict=True), start=1):
        for sub in class_folders:
            files = sorted((root / "objects" / sub).glob("*.png"))
            if not files:
                have = sorted(p.name for p in (root / "objects").iterdir() if p.is_dir())
                raise BadInput(
                    f"world.photos.sources: no cut-outs in {root / 'objects' / sub} for class {name!r} (objects/ "
                    f"has {have}) — name dataset.classes after its folders, or map them in world.photos.folders"
                )
            for path in files:
                rgba = np.asarray(Image.open(path).convert("RGBA"))
                cutouts.append(Cutout(cls, f"{sub}/{path.stem}", rgba, int((rgba[..., 3] >= ALPHA_TRUTH).sum())))
    backgrounds = tuple(
        (p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in sorted((root / "backgrounds").glob("*.jpg"))
    )
    if len(backgrounds) < 3:
        raise BadInput(f"world.photos.sources: {root / 'backgrounds'} holds {len(backgrounds)} photos, 3 at least")
    return PhotoSources(tuple(cutouts), backgrounds)


def world_sources(params: WorldParams, classes: Sequence[str]) -> PhotoSources:
    """The sources of ``params.photos`` for ``classes``, loaded once per process (every rendering worker loads
    them once)."""
    return _cached_sources(params.photos.sources, tuple(classes), params.photos.folders_of(classes))


@functools.lru_cache(maxsize=2)
def _cached_sources(folder: str, classes: tuple[str, ...], folders: tuple[tuple[str, ...], ...]) -> PhotoSources:
    return load_sources(folder, classes, folders)


def read_sources_manifest(folder: str | Path) -> pd.DataFrame | None:
    """The sources folder's manifest.csv (file, role, package, version, path, licence, copyright), if any."""
    path = Path(folder) / "manifest.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else None


def split_assets(sources: PhotoSources, seed: int, shares: Sequence[float]) -> dict[str, tuple[list[int], list[int]]]:
    """Disjoint (cut-out indices, background indices) of train / val / pool: a seeded permutation per class (and
    one of the backgrounds) cut at ``shares`` (train, val, pool), each part at least one. Raises ValueError when a
    class has fewer than 3 instances."""
    if len(shares) != 3 or min(shares) <= 0:
        raise ValueError(f"world.photos.shares: three positive shares (train, val, pool), got {list(shares)}")
    parts: dict[str, tuple[list[int], list[int]]] = {s: ([], []) for s in ("train", "val", "pool")}
    groups = {}
    for i, c in enumerate(sources.cutouts):
        groups.setdefault(c.cls, []).append(i)
    groups[0] = list(range(len(sources.backgrounds)))  # key 0: the backgrounds
    total = sum(shares)
    for key, members in sorted(groups.items()):
        n = len(members)
        if n < 3:
            what = "backgrounds" if key == 0 else f"instances of class {key}"
            raise ValueError(f"{n} {what}: train, val and pool need one each at least")
        order = np.random.default_rng([seed, 7, key]).permutation(n)
        n_val = max(1, round(n * shares[1] / total))
        n_pool = max(1, round(n * shares[2] / total))
        n_val, n_pool = min(n_val, n - 2), min(n_pool, n - 1 - min(n_val, n - 2))
        cuts = {"train": order[: n - n_val - n_pool], "val": order[n - n_val - n_pool : n - n_pool]}
        cuts["pool"] = order[n - n_pool :]
        for split, idx in cuts.items():
            parts[split][0 if key else 1].extend(sorted(members[i] for i in idx))
    return parts


def render_photo(
    rng: np.random.Generator,
    params: WorldParams,
    classes: tuple[str, ...],
    split: str,
    kind: str,
    factors: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, str, tuple[str, ...]]:
    """One photo-world image of ``split`` drawn with ``rng`` (madseg.world.generate seeds it by (seed, split,
    index)): :func:`compose` on that split's cut-outs and backgrounds of the sources, loaded once per process."""
    sources = world_sources(params, classes)
    cutouts, backgrounds = split_assets(sources, params.seed, params.photos.shares)[ASSET_SPLIT[split]]
    return compose(rng, sources, cutouts, backgrounds, params.image_size, kind, factors)


def compose(
    rng: np.random.Generator,
    sources: PhotoSources,
    cutouts: Sequence[int],
    backgrounds: Sequence[int],
    size: int,
    kind: str,
    factors: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, str, tuple[str, ...]]:
    """Compose one image from the allowed ``cutouts`` and ``backgrounds`` (indices into ``sources``).

    Returns the image (size, size, 3) uint8, its truth (size, size) uint8 (class ids, 0 background, 255 the
    ignore band), the background's name and the pasted instances' names in pasting order.
    """
    bg_name, photo = sources.backgrounds[backgrounds[int(rng.integers(len(backgrounds)))]]
    canvas = _crop(photo, size, rng)
    label = np.zeros((size, size), np.uint8)
    if kind == "ood":
        return _ood(canvas, str(rng.choice(OOD_STYLES)), rng), label, bg_name, ()
    by_class: dict[int, list[int]] = {}
    for i in cutouts:
        by_class.setdefault(sources.cutouts[i].cls, []).append(i)
    present = sorted(by_class)
    instances, boxes = [], []
    for _ in range(int(rng.integers(1, 4))):
        group = by_class[present[int(rng.integers(len(present)))]]  # classes equally often, whatever their size
        cutout = sources.cutouts[group[int(rng.integers(len(group)))]]
        low, high = (0.01, 0.03) if "tiny_scale" in factors else (0.45, 0.8) if "huge_scale" in factors else COVER
        cover = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        scale = np.sqrt(cover * size * size / max(cutout.area, 1))
        angle = float(rng.uniform(40, 180) * rng.choice([-1, 1])) if "rotation" in factors else rng.uniform(-10, 10)
        obj = _transform(cutout.rgba, scale, float(angle), bool(rng.random() < 0.5))
        if "colour_shift" in factors:
            obj[..., :3] = obj[..., SWAPS[int(rng.integers(len(SWAPS)))]]
        y0, x0 = _place(obj.shape[:2], size, "partial" in factors, rng)
        _paste(canvas, label, obj, y0, x0, cutout.cls)
        instances.append(cutout.name)
        boxes.append((y0, x0, obj.shape[0], obj.shape[1]))
    if "occlusion" in factors:  # a band of another part of the same photo hides 30-60 % of each object
        other = _crop(photo, size, rng)
        for y0, x0, h, w in boxes:
            vertical = rng.random() < 0.5
            extent = w if vertical else h
            band = max(2, int(extent * rng.uniform(0.3, 0.6)))
            start = (x0 if vertical else y0) + int(rng.uniform(0, max(extent - band, 1)))
            rows = slice(max(y0, 0), max(y0 + h, 0)) if vertical else slice(max(start, 0), max(start + band, 0))
            cols = slice(max(start, 0), max(start + band, 0)) if vertical else slice(max(x0, 0), max(x0 + w, 0))
            canvas[rows, cols] = other[rows, cols]
            label[rows, cols] = 0
    canvas = _photometric(canvas, factors, rng)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), boundary_ignore(label), bg_name, tuple(instances)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of 45-100 % of the photo's shorter side, flipped half the time, as (size, size, 3)
    float32."""
    h, w = photo.shape[:2]
    side = max(8, int(min(h, w) * rng.uniform(0.45, 1.0)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    im = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    out = np.asarray(im, np.float32)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out.copy()


def _transform(rgba: np.ndarray, scale: float, angle: float, flip: bool) -> np.ndarray:
    """The cut-out scaled, rotated (degrees) and flipped: (h, w, 4) float32, colour premultiplied by alpha 0..1.

    Premultiplied so that resampling does not drag the colour of transparent pixels into the edges.
    """
    im = Image.fromarray(rgba, "RGBA").convert("RGBa")
    h, w = rgba.shape[:2]
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if abs(angle) > 0.5:
        im = im.rotate(angle, resample=Image.BILINEAR, expand=True)
    out = np.asarray(im, np.float32).copy()
    out[..., 3] /= 255.0
    return out


def _place(shape: tuple[int, int], size: int, partial: bool, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of an (h, w) object: inside the frame where it fits (centred range where it does not), or
    with 30-60 % of it beyond one edge when ``partial``."""
    h, w = shape
    y0 = int(rng.integers(min(0, size - h), max(0, size - h) + 1))
    x0 = int(rng.integers(min(0, size - w), max(0, size - w) + 1))
    if partial:
        cut = rng.uniform(0.3, 0.6)
        side = int(rng.integers(4))
        if side == 0:
            x0 = -int(w * cut)
        elif side == 1:
            x0 = size - int(w * (1 - cut))
        elif side == 2:
            y0 = -int(h * cut)
        else:
            y0 = size - int(h * (1 - cut))
    return y0, x0


def _paste(canvas: np.ndarray, label: np.ndarray, obj: np.ndarray, y0: int, x0: int, cls: int) -> None:
    """Alpha-composite the premultiplied ``obj`` at (y0, x0), clipped to the frame; its opaque part takes ``cls``."""
    size = canvas.shape[0]
    ys, xs = slice(max(y0, 0), min(y0 + obj.shape[0], size)), slice(max(x0, 0), min(x0 + obj.shape[1], size))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    part = obj[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    alpha = part[..., 3:]
    canvas[ys, xs] = canvas[ys, xs] * (1 - alpha) + part[..., :3]
    label[ys, xs][part[..., 3] >= ALPHA_TRUTH / 255] = cls


def _photometric(canvas: np.ndarray, factors: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    if "dark" in factors:  # underexposed: dimmed and gamma-darkened
        canvas = 255 * (canvas / 255) ** rng.uniform(1.3, 1.8) * rng.uniform(0.2, 0.4)
    if "low_contrast" in factors:
        mean = canvas.mean(axis=(0, 1), keepdims=True)
        canvas = mean + (canvas - mean) * rng.uniform(0.2, 0.35)
    if "blur" in factors:
        sigma = rng.uniform(1.5, 2.5)
        canvas = ndimage.gaussian_filter(canvas, sigma=(sigma, sigma, 0))
    if "heavy_noise" in factors:
        canvas = canvas + rng.uniform(20, 35) * rng.standard_normal(canvas.shape).astype(np.float32)
    return canvas


def _ood(canvas: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """A scene turned into what no benchmark image looks like: pencil sketch, posterised cartoon, false colour."""
    grey = canvas @ np.array([0.299, 0.587, 0.114], np.float32)
    if style == "sketch":
        edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
        sketch = 255 - np.clip(edges * rng.uniform(0.4, 0.8), 0, 255)
        return np.clip(np.repeat(sketch[..., None], 3, axis=2) + 0.5, 0, 255).astype(np.uint8)
    if style == "posterised":
        levels = int(rng.integers(2, 4))
        smooth = ndimage.gaussian_filter(canvas, sigma=(1.5, 1.5, 0))
        poster = np.round(smooth / 255 * levels) / levels * 255
        edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)) > 120
        poster[edges] = 20
        return np.clip(poster + 0.5, 0, 255).astype(np.uint8)
    t = grey / 255  # false colour: a thermal-camera-like map of the brightness
    phase = rng.uniform(0, 2 * np.pi)
    rgb = np.stack([np.sin(np.pi * t * 1.5 + phase + k * 2.1) for k in range(3)], axis=-1)
    return np.clip(127.5 + 127.5 * rgb, 0, 255).astype(np.uint8)


def boundary_ignore(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> the same with a 1-pixel band of background around objects marked IGNORE (the alpha's soft
    edge lies there), as the shapes world marks its outlines."""
    out = label.copy()
    grown = ndimage.grey_dilation(label, size=3)
    out[(label == 0) & (grown != 0)] = IGNORE_INDEX
    return out
