"""The whole demo world: which images exist, of which kind, and their pixels; written by the make_world
stage."""

from __future__ import annotations

import functools
import io
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from madseg.config import WorldParams
from madseg.io.images import encode_jpeg
from madseg.workers import stop_with_parent
from madseg.world.scenes import FACTORS, render_scene, sample_scene

SPLIT_CODES = {"train": 0, "val": 1, "pool": 2, "eval_pool": 3, "dup": 4}
JPEG_QUALITY = 95


@dataclass
class WorldImage:
    split: str
    name: str
    kind: str  # normal | corner | ood
    factors: tuple[str, ...]
    jpeg: bytes
    label: np.ndarray  # (H, W) uint8
    background: str = ""  # the photo world's provenance: the background photo's name
    instances: tuple[str, ...] = ()  # and the pasted cut-outs' (<class>/<name>), in pasting order


def plan_kinds(
    n: int, params: WorldParams, rng: np.random.Generator, factors: Sequence[str] = FACTORS
) -> list[tuple[str, tuple[str, ...]]]:
    """Kinds and ``factors`` for ``n`` pool images: exact shares, shuffled; factors cycle so each one appears."""
    n_corner = round(n * params.corner_share)
    n_ood = round(n * params.ood_share)
    if n_corner + n_ood > n:
        raise ValueError(f"corner_share + ood_share exceed 1: {params.corner_share} + {params.ood_share}")
    plan: list[tuple[str, tuple[str, ...]]] = [("normal", ())] * (n - n_corner - n_ood) + [("ood", ())] * n_ood
    for i in range(n_corner):
        first = factors[i % len(factors)]
        k = int(rng.integers(1, params.max_factors + 1))
        others = [f for f in factors if f != first and {f, first} != {"tiny_scale", "huge_scale"}]
        extra = tuple(rng.choice(others, size=k - 1, replace=False)) if k > 1 else ()
        plan.append(("corner", tuple(sorted((first, *extra)))))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def render_image(params: WorldParams, split: str, index: int, kind: str, factors: tuple[str, ...]) -> WorldImage:
    """One image, seeded by (seed, split, index) alone so any subset renders the same bytes in any order."""
    rng = np.random.default_rng([params.seed, SPLIT_CODES[split], index])
    scene = sample_scene(rng, params.image_size, kind, factors)
    image, label = render_scene(scene, params.image_size, rng)
    return WorldImage(split, f"{split}_{index:06d}", kind, factors, encode_jpeg(image, JPEG_QUALITY), label)


def iter_world(params: WorldParams, split: str, workers: int = 1, classes: Sequence[str] = ()) -> Iterator[WorldImage]:
    """All images of one split in index order: train/val are benchmark images; pool/eval_pool follow the
    shares.

    ``workers`` > 1 renders them in that many processes: each image has its own seed, so the bytes are the
    same. ``classes`` (the dataset's names, background first) are the photo world's object classes.
    """
    render, factors = _renderer(params, classes)
    counts = {
        "train": params.n_train,
        "val": params.n_val,
        "pool": params.n_pool,
        "eval_pool": params.n_eval_pool,
    }
    n = counts[split]
    if split in ("train", "val"):
        plan = [("normal", ())] * n
    else:
        plan = plan_kinds(n, params, np.random.default_rng([params.seed, SPLIT_CODES[split], 10**9]), factors)
    jobs = [(params, split, index, kind, factors) for index, (kind, factors) in enumerate(plan)]
    if workers <= 1:
        yield from (render(*job) for job in jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=stop_with_parent) as pool:
        yield from pool.imap(functools.partial(_render_job, render), jobs, chunksize=64)


def _renderer(params: WorldParams, classes: Sequence[str]) -> tuple[Callable[..., WorldImage], tuple[str, ...]]:
    """The world kind's image renderer and corner-case factors."""
    if params.kind == "shapes":
        return render_image, FACTORS
    from madseg.world import photos

    # in this process first: a missing sources folder stops here with its message, not in every worker
    photos.world_sources(params, classes)
    return functools.partial(render_photo_image, classes=tuple(classes)), photos.PHOTO_FACTORS


def render_photo_image(
    params: WorldParams, split: str, index: int, kind: str, factors: tuple[str, ...], *, classes: tuple[str, ...]
) -> WorldImage:
    """One photo-world image (madseg.world.photos), seeded by (seed, split, index) alone as :func:`render_image`."""
    from madseg.world.photos import render_photo

    rng = np.random.default_rng([params.seed, SPLIT_CODES[split], index])
    image, label, background, instances = render_photo(rng, params, classes, split, kind, factors)
    name = f"{split}_{index:06d}"
    return WorldImage(split, name, kind, factors, encode_jpeg(image, JPEG_QUALITY), label, background, instances)


def _render_job(render: Callable[..., WorldImage], job: tuple) -> WorldImage:
    return render(*job)


def near_duplicate(jpeg: bytes, label: np.ndarray, how: str, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """A re-encoded, resized or lightly cropped copy of an image (what web crawls are full of), and its truth.

    The label map goes through the same geometry (nearest neighbour), so a copy the crawl does not catch still
    has a true mask for the simulated annotators.
    """
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    lab = Image.fromarray(label)
    w, h = im.size
    if how == "resized":
        size = (int(w * 1.5), int(h * 1.5))
        im, lab = im.resize(size, Image.BILINEAR), lab.resize(size, Image.NEAREST)
    elif how == "cropped":
        d = max(1, round(w * 0.04))
        box = (d, d, w - d, h - d)
        im, lab = im.crop(box).resize((w, h), Image.BILINEAR), lab.crop(box).resize((w, h), Image.NEAREST)
    quality = int(rng.integers(70, 85))
    return encode_jpeg(np.asarray(im), quality), np.asarray(lab)


@dataclass(frozen=True)
class PlantedCopy:
    """A near-duplicate planted in the pool: its file name, the image it copies, how (pool_resized, ...)."""

    name: str
    of_name: str
    kind: str
    jpeg: bytes
    label: np.ndarray


def plant_near_duplicates(
    params: WorldParams,
    pool: Mapping[str, tuple[bytes, np.ndarray]],
    benchmark: Mapping[str, tuple[bytes, np.ndarray]],
) -> list[PlantedCopy]:
    """Copies of pool images (``near_duplicates``) and leaked benchmark images (``benchmark_leaks``),
    re-encoded, resized or cropped in turn, named after the pool's last image; the crawl must merge or exclude
    them.

    ``pool`` and ``benchmark`` map an image's name to (JPEG bytes, (H, W) uint8 truth). Seeded by the world's
    seed alone, so the same world plants the same copies.
    """
    rng = np.random.default_rng([params.seed, SPLIT_CODES["dup"]])
    planted: list[PlantedCopy] = []
    for kind, images, n in (
        ("pool", pool, params.near_duplicates),
        ("benchmark", benchmark, params.benchmark_leaks),
    ):
        names = sorted(images)
        for k, of_name in enumerate(rng.choice(names, size=min(n, len(names)), replace=False)):
            how = ("reencoded", "resized", "cropped")[k % 3]
            data, label = near_duplicate(*images[of_name], how, rng)
            name = f"pool_{params.n_pool + len(planted):06d}"
            planted.append(PlantedCopy(name, str(of_name), f"{kind}_{how}", data, label))
    return planted
