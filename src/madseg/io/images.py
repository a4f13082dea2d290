"""Images and palette-PNG masks in the PASCAL VOC convention (class index per pixel, 255 = ignore)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from madseg.io.atomic import write_bytes
from madseg.labels import ClassList

ID_LENGTH = 16  # hex characters of the sha256 kept as the image id (64 bits)


def image_id(data: bytes) -> str:
    """The id of an image: the first 16 hex characters of the sha256 of its file bytes."""
    return hashlib.sha256(data).hexdigest()[:ID_LENGTH]


def decode_rgb(data: bytes, what: str = "image") -> np.ndarray:
    """Decode image bytes fully to RGB: (H, W, 3) uint8, EXIF orientation applied.

    Raises ValueError naming ``what`` if the bytes are not a complete, decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb_array(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what}: cannot decode image ({e})") from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode (L, P, RGBA, I;16, CMYK, ...) to (H, W, 3) uint8 RGB."""
    return np.asarray(to_rgb_image(im), dtype=np.uint8)


def to_rgb_image(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to an RGB PIL image (what :func:`to_rgb_array` returns, before the array copy)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image")
    return decode_rgb(path.read_bytes(), str(path))


def encode_mask(mask: np.ndarray, classes: ClassList) -> bytes:
    """Encode a label map (H, W) uint8 as palette-PNG bytes (deterministic)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    classes.validate_mask(mask, "mask")
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(classes.flat_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_mask(path: str | Path, mask: np.ndarray, classes: ClassList, *, durable: bool = True) -> None:
    """Write a label map (H, W) uint8 as a palette PNG, atomically (``durable``: see madseg.io.atomic)."""
    write_bytes(path, encode_mask(mask, classes), durable=durable)


def read_mask(path: str | Path, classes: ClassList | None = None) -> np.ndarray:
    """Read a VOC mask PNG as (H, W) uint8 class indices (255 = ignore).

    Palette ('P') and greyscale ('L') PNGs hold indices directly; an RGB mask is refused because its
    colours would have to be guessed. With ``classes`` the values are validated against the class list.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mask")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: mask must be a palette or greyscale PNG, got mode {im.mode}")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot decode mask ({e})") from None
    if classes is not None:
        classes.validate_mask(mask, str(path))
    return mask


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode (H, W, 3) uint8 as JPEG bytes (deterministic for the same libjpeg)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
