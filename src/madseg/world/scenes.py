"""Scene sampling and rendering: pure functions from a seeded RNG to an (image, label map) pair."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from madseg.labels import DEMO_CLASSES, IGNORE_INDEX

FACTORS: tuple[str, ...] = (
    "tiny_scale",
    "huge_scale",
    "rotation",
    "novel_texture",
    "colour_shift",
    "clutter",
    "occlusion",
    "heavy_noise",
    "blur",
    "low_contrast",
)

# colour family and texture of each demo class (index = class id; 0 = background)
BASE_COLOURS = np.array(
    [(0, 0, 0), (220, 60, 40), (40, 80, 210), (40, 170, 60), (230, 200, 40), (170, 50, 190), (40, 200, 210)],
    dtype=np.float32,
)
TEXTURES = ("none", "radial", "hstripes", "flat", "speckle", "checker", "dots")


@dataclass
class WorldObject:
    cls: int  # 1..6
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    colour: np.ndarray  # (3,) float32
    texture: str


@dataclass
class Scene:
    """What an image shows; ``kind`` is normal, corner or ood; ``factors`` lists corner-case factors."""

    kind: str
    factors: tuple[str, ...]
    objects: list[WorldObject] = field(default_factory=list)
    background: tuple = ()
    occluders: list[tuple[int, int, int, int, tuple]] = field(default_factory=list)
    distractors: list[tuple] = field(default_factory=list)
    ood_pattern: str = ""
    noise_sd: float = 4.0
    blur_sigma: float = 0.0
    contrast: float = 1.0


def _shape_mask(obj: WorldObject, size: int) -> np.ndarray:
    """(size, size) bool: pixels whose centre lies inside the object's shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - obj.cx, yy - obj.cy
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u = (c * dx + s * dy) / obj.radius
    v = (-s * dx + c * dy) / obj.radius
    rho = np.hypot(u, v)
    name = DEMO_CLASSES[obj.cls]
    if name == "disc":
        return rho <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # apex up (image y grows downwards)
        return (v <= 0.75) & (v >= -0.95) & (np.abs(u) <= (v + 0.95) * 0.55)
    if name == "ring":
        return (rho <= 1.0) & (rho >= 0.55)
    if name == "cross":
        return ((np.abs(u) <= 0.28) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.28) & (np.abs(u) <= 0.95))
    if name == "star":
        phi = np.arctan2(v, u) + np.pi / 2
        return rho <= 0.42 + 0.58 * ((0.5 + 0.5 * np.cos(5 * phi)) ** 2)
    raise ValueError(f"no shape for class {obj.cls}")


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 multiplicative modulation around 1.0."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if name == "radial":
        return 1.0 - 0.15 * np.cos(np.hypot(xx - size / 2, yy - size / 2) / 3.0)
    if name == "hstripes":
        return np.where((yy // 2) % 2 == 0, 1.15, 0.7)
    if name == "speckle":
        return 1.0 + 0.18 * rng.standard_normal((size, size)).astype(np.float32)
    if name == "checker":
        return np.where(((xx // 3) + (yy // 3)) % 2 == 0, 1.15, 0.65)
    if name == "dots":
        return np.where(((xx % 4) < 2) & ((yy % 4) < 2), 1.2, 0.8)
    if name == "diagonal":  # novel: never on a benchmark object
        return np.where(((xx + yy) // 3) % 2 == 0, 1.3, 0.45)
    if name == "marble":  # novel
        return 0.6 + 0.8 * (0.5 + 0.5 * np.sin(xx / 2.5 + 3 * np.sin(yy / 5.0)))
    return np.ones((size, size), np.float32)


def _background(size: int, spec: tuple, rng: np.random.Generator) -> np.ndarray:
    base, gradient, grain = spec
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = gradient[0] * (xx - 0.5) + gradient[1] * (yy - 0.5)
    img = np.asarray(base, np.float32)[None, None, :] * (1.0 + ramp[..., None])
    img += grain * rng.standard_normal((size, size, 1)).astype(np.float32)
    return img


def sample_scene(rng: np.random.Generator, size: int, kind: str, factors: tuple[str, ...] = ()) -> Scene:
    """Draw what one image shows. ``kind``: normal (benchmark-like), corner (with ``factors``) or ood."""
    grey = rng.uniform(70, 150)
    tint = rng.uniform(-15, 15, size=3)
    background = (
        tuple(np.clip(grey + tint, 30, 200)),
        tuple(rng.uniform(-0.35, 0.35, size=2)),
        float(rng.uniform(2, 6)),
    )
    scene = Scene(kind=kind, factors=tuple(factors), background=background)
    if kind == "ood":
        scene.ood_pattern = str(rng.choice(["scribbles", "grid", "blobs", "waves"]))
        scene.noise_sd = float(rng.uniform(3, 10))
        return scene
    n_objects = int(rng.integers(1, 4))
    for _ in range(n_objects):
        cls = int(rng.integers(1, len(DEMO_CLASSES)))
        radius = float(rng.uniform(8, 14))
        if "tiny_scale" in factors:
            radius = float(rng.uniform(3.5, 5.5))
        elif "huge_scale" in factors:
            radius = float(rng.uniform(22, 32))
        margin = min(radius * 0.6, size / 2 - 1)
        obj = WorldObject(
            cls=cls,
            cx=float(rng.uniform(margin, size - margin)),
            cy=float(rng.uniform(margin, size - margin)),
            radius=radius,
            angle=float(rng.uniform(-0.12, 0.12)),
            colour=BASE_COLOURS[cls] + rng.uniform(-18, 18, size=3).astype(np.float32),
            texture=TEXTURES[cls],
        )
        if "rotation" in factors:
            obj.angle = float(rng.uniform(0.5, np.pi - 0.5)) * float(rng.choice([-1, 1]))
        if "novel_texture" in factors:
            obj.texture = str(rng.choice(["diagonal", "marble"]))
        if "colour_shift" in factors:
            other = int(rng.integers(1, len(DEMO_CLASSES) - 1))
            obj.colour = BASE_COLOURS[(cls + other - 1) % (len(DEMO_CLASSES) - 1) + 1] * 0.9 + 25
        scene.objects.append(obj)
    if "clutter" in factors:
        for _ in range(int(rng.integers(5, 10))):
            scene.distractors.append(
                (
                    str(rng.choice(["ellipse", "bar"])),
                    float(rng.uniform(0, size)),
                    float(rng.uniform(0, size)),
                    float(rng.uniform(2, 7)),
                    float(rng.uniform(0, np.pi)),
                    tuple(rng.uniform(20, 240, size=3)),
                )
            )
    if "occlusion" in factors:
        for obj in scene.objects:
            w = int(max(2, obj.radius * rng.uniform(0.5, 0.9)))
            x0 = int(obj.cx - w / 2 + rng.uniform(-obj.radius / 2, obj.radius / 2))
            scene.occluders.append((x0, 0, x0 + w, size, tuple(rng.uniform(40, 200, size=3))))
    scene.noise_sd = float(rng.uniform(2, 6))
    if "heavy_noise" in factors:
        scene.noise_sd = float(rng.uniform(35, 55))
    if "blur" in factors:
        scene.blur_sigma = float(rng.uniform(1.6, 2.6))
    if "low_contrast" in factors:
        scene.contrast = float(rng.uniform(0.15, 0.3))
    return scene


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene: image (size, size, 3) uint8 and label map (size, size) uint8 with 255 on boundaries."""
    bg = _background(size, scene.background, rng)
    img = bg.copy()
    label = np.zeros((size, size), np.uint8)
    if scene.kind == "ood":
        img = _ood_pattern(img, scene.ood_pattern, size, rng)
    for obj in scene.objects:
        mask = _shape_mask(obj, size)
        texture = _texture(obj.texture, size, rng)
        colour = obj.colour[None, None, :] * texture[..., None]
        if scene.contrast < 1.0:  # low contrast: the object's colour is pulled towards the background
            colour = scene.contrast * colour + (1 - scene.contrast) * bg
        img[mask] = colour[mask]
        label[mask] = obj.cls
    for shape, x, y, r, angle, colour in scene.distractors:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        c, s = np.cos(angle), np.sin(angle)
        u, v = (c * (xx - x) + s * (yy - y)), (-s * (xx - x) + c * (yy - y))
        mask = (
            (u / r) ** 2 + (v / (r * 0.45)) ** 2 <= 1
            if shape == "ellipse"
            else (np.abs(u) <= r * 1.6) & (np.abs(v) <= 1.0)
        )
        img[mask] = colour
        label[mask] = 0
    for x0, y0, x1, y1, colour in scene.occluders:
        img[max(y0, 0) : y1, max(x0, 0) : x1] = colour
        label[max(y0, 0) : y1, max(x0, 0) : x1] = 0
    if scene.blur_sigma:
        img = ndimage.gaussian_filter(img, sigma=(scene.blur_sigma, scene.blur_sigma, 0))
    img += scene.noise_sd * rng.standard_normal(img.shape).astype(np.float32)
    label = _boundary_ignore(label)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), label


def _ood_pattern(img: np.ndarray, pattern: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if pattern == "grid":
        period = int(rng.integers(5, 11))
        mask = (xx % period < 1.5) | (yy % period < 1.5)
        img[mask] = rng.uniform(0, 255, size=3)
    elif pattern == "waves":
        phase = rng.uniform(0, 2 * np.pi, size=3)
        freq = rng.uniform(0.15, 0.5)
        for ch in range(3):
            img[..., ch] = 128 + 90 * np.sin(freq * xx + 0.7 * np.sin(freq * yy) * 4 + phase[ch])
    elif pattern == "blobs":
        field = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4)
        field = (field - field.min()) / (np.ptp(field) + 1e-6)
        img = np.stack([field * rng.uniform(60, 255) + rng.uniform(0, 60) for _ in range(3)], axis=-1).astype(
            np.float32
        )
    else:  # scribbles: random polylines
        for _ in range(int(rng.integers(3, 7))):
            pts = rng.uniform(0, size, size=(6, 2))
            colour = rng.uniform(0, 255, size=3)
            for (x0, y0), (x1, y1) in itertools.pairwise(pts):
                for t in np.linspace(0, 1, 40):
                    x, y = int(x0 + t * (x1 - x0)), int(y0 + t * (y1 - y0))
                    img[max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1] = colour
    return img


def _boundary_ignore(label: np.ndarray) -> np.ndarray:
    """Mark a 1-pixel band of background around objects as IGNORE (VOC's outline convention).

    Only the outer side is marked: at 64 px an inner band would swallow most of a tiny object.
    """
    out = label.copy()
    grown = ndimage.grey_dilation(label, size=3)
    out[(label == 0) & (grown != 0)] = IGNORE_INDEX
    return out
