"""Sharded stores: a pool of a million images is ~1,000 files per model, not a million.

Layout of a store folder::

    manifest.json          model, class names, shard size, image count, fingerprint, shard checksums
    shards/00000.npz       ids (N,) str, shapes (N, 2) int32, offsets (N + 1,) int64, maps (sum H*W,) uint8,
                           area (N, K) float32, entropy (N,) float32, maxprob (N,) float32
    shards/00000.json      sidecar written after its shard: sha256, count, fingerprint

Shard ``s`` holds rows ``[s * shard_size, (s + 1) * shard_size)`` of the pool index sorted by id, so stores of
different models over one index line up shard by shard and can be streamed in lockstep. A shard counts as done
only if its sidecar exists, names the store's fingerprint and matches the shard's bytes; anything else is
recomputed (resume) or reported as corrupt (read).

:class:`EmbeddingStore` keeps the same layout, manifest and resume rules for an image encoder's features
(shards hold ids (N,) str and features (N, D) float16); both are a :class:`ShardedStore` with their own codec.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from madseg.io.atomic import read_json, remove_interrupted_writes, write_bytes, write_json
from madseg.io.shard import EmbeddingShard, Shard

FORMAT_VERSION = 1


class CorruptShardError(ValueError):
    """A shard's bytes do not match its sidecar, or it cannot be decoded."""


def _encode(shard: Shard) -> bytes:
    shapes = np.array([m.shape for m in shard.maps], dtype=np.int32).reshape(-1, 2)
    flat, offsets = shard.pixels()
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        ids=np.array(shard.ids, dtype="U"),
        shapes=shapes,
        offsets=offsets,
        maps=flat,
        area=shard.area.astype(np.float32),
        entropy=shard.entropy.astype(np.float32),
        maxprob=shard.maxprob.astype(np.float32),
    )
    return buf.getvalue()


def _decode(data: bytes, what: str) -> Shard:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            ids = z["ids"].tolist()
            shapes, offsets, flat = z["shapes"], z["offsets"], z["maps"]
            maps = [flat[offsets[i] : offsets[i + 1]].reshape(shapes[i]) for i in range(len(ids))]
            return Shard(
                ids=ids,
                maps=maps,
                area=z["area"],
                entropy=z["entropy"],
                maxprob=z["maxprob"],
                _pixels=(flat, offsets.astype(np.int64)),
            )
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise CorruptShardError(f"{what}: cannot decode shard ({e})") from None


def _encode_embeddings(shard: EmbeddingShard) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.array(shard.ids, dtype="U"), features=shard.features.astype(np.float16))
    return buf.getvalue()


def _decode_embeddings(data: bytes, what: str) -> EmbeddingShard:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return EmbeddingShard(ids=z["ids"].tolist(), features=z["features"])
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise CorruptShardError(f"{what}: cannot decode shard ({e})") from None


class ShardedStore:
    """A folder of shards for one model over one pool index; subclasses name the shard codec."""

    encode = staticmethod(_encode)
    decode = staticmethod(_decode)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ writing
    def shard_path(self, s: int) -> Path:
        return self.root / "shards" / f"{s:05d}.npz"

    def _sidecar(self, s: int) -> Path:
        return self.root / "shards" / f"{s:05d}.json"

    def write_shard(self, s: int, shard: Shard, fingerprint: str) -> None:
        """Write shard ``s`` atomically, then its sidecar (so a sidecar always describes a whole shard)."""
        data = self.encode(shard)
        write_bytes(self.shard_path(s), data)
        write_json(
            self._sidecar(s),
            {"sha256": hashlib.sha256(data).hexdigest(), "count": len(shard.ids), "fingerprint": fingerprint},
        )

    def shard_is_done(self, s: int, fingerprint: str, expected_ids: Sequence[str]) -> bool:
        """True if shard ``s`` is complete, for this fingerprint and these ids, and its bytes are intact."""
        side, path = self._sidecar(s), self.shard_path(s)
        if not (side.exists() and path.exists()):
            return False
        try:
            meta = read_json(side)
        except ValueError:
            return False
        if meta.get("fingerprint") != fingerprint or meta.get("count") != len(expected_ids):
            return False
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return False
        try:
            return self.decode(data, str(path)).ids == list(expected_ids)
        except CorruptShardError:
            return False

    def finalize(
        self,
        *,
        model: str,
        classes: Sequence[str],
        shard_size: int,
        ids: Sequence[str],
        fingerprint: str,
        extra: dict | None = None,
    ) -> None:
        """Write the manifest once every shard is done; removes shards left over from a larger earlier run and
        the temporary files of writes a killed run left behind."""
        n_shards = -(-len(ids) // shard_size)
        checksums = []
        for s in range(n_shards):
            meta = read_json(self._sidecar(s))
            if meta["fingerprint"] != fingerprint:
                raise ValueError(f"{self._sidecar(s)}: shard from another run (fingerprint mismatch)")
            checksums.append(meta["sha256"])
        remove_interrupted_writes(self.root)
        for stale in sorted((self.root / "shards").glob("*.npz")):
            if int(stale.stem) >= n_shards:
                stale.unlink()
                self._sidecar(int(stale.stem)).unlink(missing_ok=True)
        write_json(
            self.root / "manifest.json",
            {
                "format": FORMAT_VERSION,
                "model": model,
                "classes": list(classes),
                "shard_size": shard_size,
                "count": len(ids),
                "ids_sha256": ids_digest(ids),
                "fingerprint": fingerprint,
                "shards": checksums,
                **({"extra": extra} if extra else {}),
            },
        )

    # ------------------------------------------------------------------ reading
    @property
    def manifest(self) -> dict:
        path = self.root / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.root}: not a finished prediction store (no manifest.json)")
        return read_json(path)

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def read_shard(self, s: int, verify: bool = True) -> Shard:
        """Read shard ``s``; with ``verify`` its sha256 is checked against the manifest."""
        return self._read_shard(s, self.manifest, verify)

    def iter_shards(self, verify: bool = True) -> Iterator[Shard]:
        manifest = self.manifest  # read once: a 10^6-image store's manifest lists ~1,000 checksums
        for s in range(len(manifest["shards"])):
            yield self._read_shard(s, manifest, verify)

    def _read_shard(self, s: int, manifest: dict, verify: bool) -> Shard:
        if not 0 <= s < len(manifest["shards"]):
            raise IndexError(f"{self.root}: shard {s} out of range 0..{len(manifest['shards']) - 1}")
        path = self.shard_path(s)
        if not path.exists():
            raise CorruptShardError(f"{path}: shard missing")
        data = path.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != manifest["shards"][s]:
            raise CorruptShardError(f"{path}: checksum mismatch (truncated or modified shard)")
        return self.decode(data, str(path))

    def _shard_ids(self, s: int) -> list[str]:
        with np.load(self.shard_path(s), allow_pickle=False) as z:
            return z["ids"].tolist()

    def ids(self) -> list[str]:
        return [i for s in range(len(self.manifest["shards"])) for i in self._shard_ids(s)]


class PredictionStore(ShardedStore):
    """A model's predictions over one pool index: per-image maps and statistics."""

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    def stats(self) -> pd.DataFrame:
        """Per-image statistics without the maps: columns id, area_<class>..., entropy, maxprob (float32).

        Filled shard by shard into arrays sized from the manifest: a million images cost their numbers, not
        one frame per shard and a concatenation of them."""
        classes, count = self.classes, len(self)
        area = np.empty((count, len(classes)), np.float32)
        entropy, maxprob = np.empty(count, np.float32), np.empty(count, np.float32)
        ids, at = [], 0
        for shard in self.iter_shards():
            n = len(shard.ids)
            area[at : at + n], entropy[at : at + n], maxprob[at : at + n] = (
                shard.area,
                shard.entropy,
                shard.maxprob,
            )
            ids.append(pd.Series(shard.ids, dtype="str"))
            at += n
        df = pd.DataFrame(area, columns=[f"area_{c}" for c in classes])
        df.insert(0, "id", pd.concat(ids, ignore_index=True) if ids else pd.Series([], dtype="str"))
        df["entropy"], df["maxprob"] = entropy, maxprob
        return df

    def read_maps(self, wanted: Sequence[str]) -> dict[str, np.ndarray]:
        """Maps of the ``wanted`` ids (any order), decoding only the shards that hold them."""
        wanted_set = set(wanted)
        out: dict[str, np.ndarray] = {}
        for s in range(len(self.manifest["shards"])):
            if wanted_set.isdisjoint(self._shard_ids(s)):
                continue
            shard = self.read_shard(s)
            out.update((i, m) for i, m in zip(shard.ids, shard.maps, strict=True) if i in wanted_set)
        missing = [w for w in wanted if w not in out]
        if missing:
            raise KeyError(f"{self.root}: no prediction for images {missing[:5]}{'...' if len(missing) > 5 else ''}")
        return out

    def check_covers(self, *, model: str, classes: Sequence[str], ids_sha256: str, count: int) -> None:
        """ValueError unless the store predicts ``classes`` over exactly the pool index's images (``count`` ids
        whose :func:`ids_digest` is ``ids_sha256``); ``model`` names the store in the message."""
        manifest = self.manifest
        if list(manifest["classes"]) != list(classes):
            raise ValueError(
                f"{self.root}: model {model!r} predicts classes {manifest['classes']}, the dataset has {list(classes)}"
            )
        if manifest["ids_sha256"] != ids_sha256 or manifest["count"] != count:
            raise ValueError(
                f"{self.root}: model {model!r}'s predictions cover other images than the pool index "
                f"({manifest['count']} vs {count} images); re-run its inference"
            )


class EmbeddingStore(ShardedStore):
    """An image encoder's features over one pool index (shards of :class:`madseg.io.shard.EmbeddingShard`)."""

    encode = staticmethod(_encode_embeddings)
    decode = staticmethod(_decode_embeddings)

    def features(self) -> tuple[list[str], np.ndarray]:
        """Every image's id, in index order, and its features (N, D) float32, filled shard by shard."""
        count, ids, out, at = len(self), [], None, 0
        for shard in self.iter_shards():
            if out is None:
                out = np.empty((count, shard.features.shape[1]), np.float32)
            out[at : at + len(shard.ids)] = shard.features
            ids += shard.ids
            at += len(shard.ids)
        return ids, out if out is not None else np.zeros((0, 0), np.float32)


def ids_digest(ids: Sequence[str], chunk: int = 65536) -> str:
    """sha256 of ``json.dumps(list(ids))``, streamed in chunks so that a million ids never become one string."""
    h = hashlib.sha256(b"[")
    for start in range(0, len(ids), chunk):
        part = json.dumps(list(ids[start : start + chunk]))[1:-1]
        h.update(((", " if start else "") + part).encode())
    h.update(b"]")
    return h.hexdigest()
