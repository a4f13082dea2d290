"""Perceptual hashes (64-bit DCT pHash) and 8x8 colour layouts: the signatures of near-duplicate search."""

from __future__ import annotations

import numpy as np
import scipy.fft
from PIL import Image


def _dct_rows(n: int, k: int) -> np.ndarray:
    """The first k rows of the orthonormal DCT-II matrix of size n: (k, n) float64."""
    return scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)[:k]


_DCT_32_8 = _dct_rows(32, 8)  # a constant: the 8 lowest frequencies of a 32-point DCT


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image (H, W, 3) or (H, W) uint8.

    The image is resized to 32x32 (antialiased bilinear), its luminance transformed by an orthonormal 2-D
    DCT-II, of which only the 8x8 lowest frequencies are computed (two small matrix products). Each of those
    64 coefficients is compared with the median of the 63 non-DC ones (the DC term only measures brightness):
    bit = coefficient > median, row-major, first bit most significant. Re-encoding, resizing and light
    cropping flip few of these bits; different scenes differ in about half of them.
    """
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3):
        raise ValueError(f"phash needs (H, W, 3) or (H, W) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    return _phash_of_thumb(_thumb(Image.fromarray(rgb)))


def color_layout(rgb: np.ndarray) -> bytes:
    """The image's colours averaged over an 8x8 grid: 192 bytes (8, 8, 3) uint8, row-major.

    pHash sees luminance only, so two different scenes with one big blob each (a blue disc, a red one of
    the same brightness) can hash alike; their colour layouts cannot. Copies (re-encoded, resized, lightly
    cropped) keep it.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"color_layout needs (H, W, 3) uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    return _layout_of_thumb(_thumb(Image.fromarray(rgb)))


def _thumb(im: Image.Image) -> Image.Image:
    # one 32x32 thumbnail feeds both signatures: the only pass over the full-resolution pixels
    # reducing_gap: an integer box reduction first, then bilinear over >= 2x the target (same look, faster)
    return im.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _phash_of_thumb(thumb: Image.Image) -> int:
    lum = np.asarray(thumb if thumb.mode == "L" else thumb.convert("L"), dtype=np.float64)
    low = (_DCT_32_8 @ lum @ _DCT_32_8.T).ravel()
    median = np.partition(low[1:], 31)[31]  # the median of 63 values, without a full sort
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def _layout_of_thumb(thumb: Image.Image) -> bytes:
    return thumb.resize((8, 8), Image.Resampling.BOX).tobytes()  # 4x4 block means of the thumbnail


def color_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference (0..255) between two colour layouts; 0.0 if either is unknown (empty)."""
    if not a or not b:
        return 0.0
    if len(a) != len(b):
        raise ValueError(f"colour layouts differ in length: {len(a)} vs {len(b)}")
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


def phash_hex(h: int) -> str:
    """A 64-bit hash as 16 lowercase hex characters (the form stored in pool.csv)."""
    return f"{h:016x}"


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()
