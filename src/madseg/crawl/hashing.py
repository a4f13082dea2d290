"""Perceptual hashes (64-bit DCT pHash) and 8x8 colour layouts, and a multi-index for near-duplicate search."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

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


class HashIndex:
    """Multi-index hashing over a fixed set of 64-bit hashes: 4 bands of 16 bits, one bucket table per band.

    If two hashes are within Hamming distance t, one of the 4 bands differs by at most t // 4 bits
    (pigeonhole), so a query probes each band's buckets within that radius (4 * C(16, <= t//4) buckets: 68
    for t < 8, 548 for t < 12, 2788 for t < 16) and verifies the candidates' distances, instead of scanning
    every stored hash. Buckets are a CSR table (hashes sorted by band value + 65,537 offsets), so a whole
    query is a few numpy operations. Expected candidates per query: probes * N / 65,536.

    hashes: (N,) ints in [0, 2**64); entry i is reported as index i.
    """

    BANDS = 4
    BAND_BITS = 16

    def __init__(self, hashes: Sequence[int], threshold: int) -> None:
        if not 0 <= threshold <= 64:
            raise ValueError(f"threshold must be in 0..64 bits, got {threshold}")
        self.threshold = threshold
        radius = threshold // self.BANDS
        flips = [
            sum(1 << b for b in bits)
            for r in range(radius + 1)
            for bits in itertools.combinations(range(self.BAND_BITS), r)
        ]
        self._flips = np.array(flips, dtype=np.int64)
        self._hashes = np.array([int(h) for h in hashes], dtype=np.uint64).reshape(-1)
        self._tables = []
        for b in range(self.BANDS):
            sub = ((self._hashes >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)
            order = np.argsort(sub, kind="stable")
            offsets = np.zeros(65537, dtype=np.int64)
            np.cumsum(np.bincount(sub, minlength=65536), out=offsets[1:])
            self._tables.append((order, offsets))

    def __len__(self) -> int:
        return len(self._hashes)

    def query(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Entries within the threshold of ``h``: (indices (M,) int64, distances (M,) int64), sorted by
        (distance, index)."""
        _, indices, dists = self.query_many([h])
        return indices, dists

    def query_many(
        self, hashes: Sequence[int], chunk: int = 512
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, entry) pairs within the threshold, for many queries at once (vectorised over chunks).

        Returns (query positions (M,), entry indices (M,), distances (M,)), int64, sorted by
        (query, distance, entry).
        """
        qs = np.array([int(h) for h in hashes], dtype=np.uint64).reshape(-1)
        out_q, out_i, out_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if not len(self._hashes) or not len(qs):
            return out_q[0], out_i[0], out_d[0]
        for lo in range(0, len(qs), chunk):
            q = qs[lo : lo + chunk]
            found_q, found_i = [], []
            for b, (order, offsets) in enumerate(self._tables):
                sub = ((q >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)
                keys = (sub[:, None] ^ self._flips[None, :]).ravel()  # (chunk * probes,)
                starts, lens = offsets[keys], offsets[keys + 1] - offsets[keys]
                hit = np.flatnonzero(lens)
                if not len(hit):
                    continue
                starts, lens = starts[hit], lens[hit]
                # concatenated ranges [start, start + len) without a Python loop
                firsts = np.cumsum(lens) - lens
                pos = np.arange(lens.sum()) - np.repeat(firsts, lens) + np.repeat(starts, lens)
                found_q.append(np.repeat(hit // len(self._flips), lens) + lo)
                found_i.append(order[pos])
            if not found_q:
                continue
            pq, pi = np.concatenate(found_q), np.concatenate(found_i)
            dist = np.bitwise_count(self._hashes[pi] ^ qs[pq]).astype(np.int64)
            close = dist <= self.threshold  # filter before de-duplicating: most candidates are far
            pq, pi, dist = pq[close], pi[close], dist[close]
            # the same pair can be found through several bands
            _, first = np.unique(pq * len(self._hashes) + pi, return_index=True)
            out_q.append(pq[first])
            out_i.append(pi[first])
            out_d.append(dist[first])
        pq, pi, dist = np.concatenate(out_q), np.concatenate(out_i), np.concatenate(out_d)
        order = np.lexsort((pi, dist, pq))
        return pq[order], pi[order], dist[order]
