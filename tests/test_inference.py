"""The prediction store (exact round trip, sharding, corruption) and resumable pool inference (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from madseg.io.store import CorruptShardError, PredictionStore, Shard
from tests.project import files, infer_project

ROOT = Path(__file__).resolve().parents[1]


def _shard(ids, rng, k=3):
    maps = [rng.integers(0, k, size=(int(rng.integers(4, 9)), int(rng.integers(4, 9))), dtype=np.uint8) for _ in ids]
    area = rng.random((len(ids), k)).astype(np.float32)
    return Shard(
        ids=list(ids),
        maps=maps,
        area=area,
        entropy=rng.random(len(ids)).astype(np.float32),
        maxprob=rng.random(len(ids)).astype(np.float32),
    )


def test_store_round_trip_is_exact_and_sharded(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"{i:04d}" for i in range(10)]
    store = PredictionStore(tmp_path / "s")
    shards = [_shard(ids[:4], rng), _shard(ids[4:8], rng), _shard(ids[8:], rng)]
    for s, shard in enumerate(shards):
        store.write_shard(s, shard, "fp")
    store.finalize(model="m", classes=["a", "b", "c"], shard_size=4, ids=ids, fingerprint="fp")
    assert len(list((tmp_path / "s/shards").glob("*.npz"))) == 3 and len(store) == 10
    for written, read in zip(shards, store.iter_shards(), strict=True):
        assert read.ids == written.ids
        assert all((a == b).all() and a.dtype == b.dtype for a, b in zip(read.maps, written.maps, strict=True))
        assert (read.area == written.area).all() and (read.entropy == written.entropy).all()
    assert store.ids() == ids
    assert (store.read_maps(["0005"])["0005"] == shards[1].maps[1]).all()
    assert list(store.stats().columns) == ["id", "area_a", "area_b", "area_c", "entropy", "maxprob"]
    with pytest.raises(KeyError, match="no prediction for images"):
        store.read_maps(["nope"])


def test_truncated_or_modified_shard_is_detected(tmp_path):
    rng = np.random.default_rng(1)
    store = PredictionStore(tmp_path / "s")
    store.write_shard(0, _shard(["a", "b"], rng), "fp")
    store.finalize(model="m", classes=["a", "b", "c"], shard_size=2, ids=["a", "b"], fingerprint="fp")
    path = store.shard_path(0)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        store.read_shard(0)
    assert not store.shard_is_done(0, "fp", ["a", "b"])  # a resumed run recomputes it instead of trusting it


def _infer(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "madseg.cli", "run", "infer", "--round", "0"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


@pytest.mark.slow
def test_inference_resumes_after_sigkill_with_identical_output(tmp_path):
    straight = infer_project(tmp_path / "a")
    assert _infer(straight).wait(timeout=300) == 0
    killed = infer_project(tmp_path / "b")
    proc = _infer(killed)
    shards = killed / "data/predictions/target/0/shards"
    deadline = time.monotonic() + 240
    while not (shards.exists() and len(list(shards.glob("*.json"))) >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("*.json")))
    assert 3 <= done_before < 15, "the kill must land mid-run"
    rerun = subprocess.run(
        [sys.executable, "-m", "madseg.cli", "run", "infer", "--round", "0"],
        cwd=killed,
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert rerun.returncode == 0, rerun.stderr
    assert (
        f"{15 - done_before} shards computed" in rerun.stderr or f"{16 - done_before} shards computed" in rerun.stderr
    )
    assert files(straight / "data/predictions") == files(killed / "data/predictions")


def test_finalize_removes_what_a_killed_write_left_behind(tmp_path):
    rng = np.random.default_rng(2)
    store = PredictionStore(tmp_path / "s")
    store.write_shard(0, _shard(["a", "b"], rng), "fp")
    leftover = tmp_path / "s" / "shards" / ".00001.json.abc123.tmp"  # as atomic_open names its temporaries
    leftover.write_bytes(b'{"count": 1')
    store.finalize(model="m", classes=["a", "b", "c"], shard_size=2, ids=["a", "b"], fingerprint="fp")
    assert not leftover.exists() and store.ids() == ["a", "b"]
