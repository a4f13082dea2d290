"""The Ray backends on a two-node cluster simulated on 127.0.0.1: the local backend's bytes, killed workers and
drivers, Ray mining equal to local mining, and an unreachable address."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from madseg.backends import propose
from madseg.cluster import ray_session
from madseg.io.store import PredictionStore, Shard
from madseg.labels import make_class_list
from madseg.mining import area_bands
from madseg.stops import ClusterUnreachable
from tests.project import files, infer_project

ray = pytest.importorskip("ray", reason="the Ray backends need pip install -e '.[ray]' (make test installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, two CPUs each, small object stores, no usage telemetry."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 150 * 2**20})
    c.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _infer(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "madseg.cli", "run", "infer", "--round", "0"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


def _with_view(project: Path, **changes) -> Path:
    """The project's target also seen mirrored (a view: its own store, beside the target's), plus ``changes``
    (section -> settings)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mining"]["self_consistency"] = ["hflip"]
    for section, settings in changes.items():
        params[section].update(settings)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def _on_ray(project: Path, address: str | None, **ray_params) -> Path:
    return _with_view(project, infer={"backend": "ray"}, ray={"address": address, **ray_params})


def _finish(proc: subprocess.Popen) -> str:
    # a guard against a hang, not a timing: an idle 2-core host takes about a minute, one shared with a training
    # job took over 300 s (2026-12-06)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return err


def _wait_for_sidecars(shards: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not (shards.exists() and len(list(shards.glob("*.json"))) >= n):
        assert proc.poll() is None and time.monotonic() < deadline, "inference ended before the planned kill"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory) -> dict[str, bytes]:
    """The local backend's prediction files for the reference project (the target and its mirrored view)."""
    project = _with_view(infer_project(tmp_path_factory.mktemp("local"), n_images=120))
    _finish(_infer(project))
    return files(project / "data/predictions")


def test_two_node_ray_inference_writes_the_local_bytes(cluster, local_store, tmp_path):
    project = _on_ray(infer_project(tmp_path, n_images=120), cluster.address, actors=2)
    err = _finish(_infer(project))
    assert "8 shards computed" in err and "seen through hflip: 120 images, 8 shards computed" in err
    assert any("views/hflip" in str(f) for f in local_store)
    assert files(project / "data/predictions") == local_store
    # a rerun finds every shard finished and rewrites none
    before = {p: p.stat().st_mtime_ns for p in (project / "data/predictions").rglob("*.npz")}
    assert "0 shards computed" in _finish(_infer(project))
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_ray_embedding_writes_the_local_bytes(cluster, tmp_path):
    import torch

    from madseg.backends import embed_images
    from madseg.config import RayParams
    from madseg.io.store import EmbeddingStore
    from tests.test_embed import SMALL, needs_weights, store_bytes, tiny_pool

    if needs_weights.args[0]:
        pytest.skip(needs_weights.kwargs["reason"])
    index = tiny_pool(tmp_path / "pool")
    local, on_ray = EmbeddingStore(tmp_path / "local"), EmbeddingStore(tmp_path / "ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(SMALL.threads)  # as the stage does: the actors run embed.threads too
    try:
        assert embed_images(index, local, embed_params=SMALL, device="cpu") == 3
    finally:
        torch.set_num_threads(threads)
    ray_params = RayParams(address=cluster.address, actors=2)
    params = dataclasses.replace(SMALL, backend="ray")
    assert embed_images(index, on_ray, embed_params=params, device="cpu", ray_params=ray_params) == 3
    assert store_bytes(on_ray.root) == store_bytes(local.root)
    assert embed_images(index, on_ray, embed_params=params, device="cpu", ray_params=ray_params) == 0


def _actor_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "_PredictBatch" in line and "ps -eo" not in line]


def test_a_killed_worker_still_leaves_a_complete_correct_store(cluster, local_store, tmp_path):
    project = _on_ray(infer_project(tmp_path, n_images=120), cluster.address, actors=1)
    proc = _infer(project)
    _wait_for_sidecars(project / "data/predictions/target/0/shards", 2, proc)
    pids = _actor_pids()
    assert pids, "no predicting actor found to kill"
    os.kill(pids[0], signal.SIGKILL)
    _finish(proc)
    assert files(project / "data/predictions") == local_store


def test_a_killed_driver_resumes_from_its_finished_shards(cluster, local_store, tmp_path):
    project = _on_ray(infer_project(tmp_path, n_images=120), cluster.address, actors=1)
    proc = _infer(project)
    shards = project / "data/predictions/target/0/shards"
    _wait_for_sidecars(shards, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(shards.glob("*.json")))
    assert finished < 8, "the kill must land mid-run"
    assert f"{8 - finished} shards computed" in _finish(_infer(project))
    assert files(project / "data/predictions") == local_store


def _mining_stores(root: Path, n_images: int = 300, shard_size: int = 64) -> tuple[PredictionStore, dict]:
    """A target and three competitors: blocky maps, each competitor with some blocks of the target relabelled."""
    rng = np.random.default_rng(3)
    k = make_class_list("demo").num_classes
    ids = [f"{i:05d}" for i in range(n_images)]
    target = rng.integers(0, k, (n_images, 6, 8)).repeat(4, 1).repeat(4, 2).astype(np.uint8)
    maps = {"target": target}
    for name in ("c1", "c2", "c3"):
        changed = rng.random((n_images, 6, 8)).repeat(4, 1).repeat(4, 2) < 0.2
        maps[name] = np.where(changed, rng.integers(0, k, target.shape), target).astype(np.uint8)
    stores = {name: PredictionStore(root / name) for name in maps}
    for name, store in stores.items():
        for s, start in enumerate(range(0, n_images, shard_size)):
            part = maps[name][start : start + shard_size]
            n = len(part)
            store.write_shard(
                s,
                Shard(
                    ids[start : start + n],
                    list(part),
                    np.zeros((n, k), np.float32),
                    np.zeros(n, np.float32),
                    np.ones(n, np.float32),
                ),
                "fp",
            )
        store.finalize(
            model=name, classes=make_class_list("demo").names, shard_size=shard_size, ids=ids, fingerprint="fp"
        )
    return stores.pop("target"), stores


def test_ray_mining_equals_local_mining(cluster, tmp_path):
    from madseg.config import RayParams

    classes = make_class_list("demo")
    target, competitors = _mining_stores(tmp_path)
    bands = area_bands(target.read_shard(0).maps, classes)
    exclude = frozenset(target.ids()[::7])
    kwargs = dict(
        target=target,
        competitors=competitors,
        bands=bands,
        classes=classes,
        n3=5,
        distance="miou",
        seed=0,
        exclude=exclude,
    )
    ray_params = RayParams(address=cluster.address)
    for rank_by in ("pair", "committee"):
        local = propose("mad", **kwargs, rank_by=rank_by)
        on_ray = propose("mad", **kwargs, rank_by=rank_by, backend="ray", ray_params=ray_params)
        assert len(local.m) > 15  # committee: the groups of one class and direction t hold the same images
        assert on_ray.candidates.equals(local.candidates) and on_ray.m.equals(local.m)


def test_ray_mining_refuses_stores_over_other_pools(cluster, tmp_path):
    from madseg.config import RayParams

    classes = make_class_list("demo")
    target, _ = _mining_stores(tmp_path / "a")
    _, others = _mining_stores(tmp_path / "b", n_images=100)
    bands = np.tile([[0.0, 1.0]], (classes.num_classes, 1))
    with pytest.raises(ValueError, match="has fewer shards than the target"):
        propose(
            "mad",
            target=target,
            competitors={"c1": others["c1"]},
            bands=bands,
            classes=classes,
            n3=3,
            distance="miou",
            seed=0,
            backend="ray",
            ray_params=RayParams(address=cluster.address),
        )


def test_an_unreachable_address_fails_in_seconds_with_exit_8(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    unreachable = ray_session(f"127.0.0.1:{port}", connect_timeout_s=2)
    with pytest.raises(ClusterUnreachable, match=rf"no Ray cluster answers at 127.0.0.1:{port}"), unreachable:
        pass
    assert time.monotonic() - start < 5
    with pytest.raises(ClusterUnreachable, match="expected host:port"), ray_session("not an address"):
        pass
    project = _on_ray(infer_project(tmp_path, n_images=16), f"127.0.0.1:{port}")
    start = time.monotonic()
    proc = _infer(project)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 8 and "no Ray cluster answers" in err and "Traceback" not in err
    assert time.monotonic() - start < 30  # the stage's imports included
    assert not (project / "data/predictions/target/0/shards").exists() or not list(
        (project / "data/predictions/target/0/shards").glob("*.npz")
    )


def test_a_corrupt_image_fails_with_its_own_error_and_leaves_only_whole_shards(cluster, tmp_path):
    import pandas as pd

    from madseg.backends import predict_model
    from madseg.config import InferParams, RayParams

    project = infer_project(tmp_path, n_images=40)
    index = pd.read_csv(project / "data/index/pool.csv")
    index["path"] = [str(project / p) for p in index["path"]]
    bad = Path(index["path"].iloc[-1])
    bad.write_bytes(b"not a jpeg")
    store = PredictionStore(tmp_path / "store")
    with pytest.raises(ValueError, match=rf"{bad.name}"):
        predict_model(
            project / "models/target_0.pt",
            index,
            store,
            model_name="t",
            classes=make_class_list("demo"),
            infer_params=InferParams(backend="ray", shard_size=16, batch_size=8, workers=0),
            ray_params=RayParams(address=cluster.address),
        )
    ids = index["id"].tolist()
    for shard in (store.root / "shards").glob("*.npz"):
        s = int(shard.stem)
        assert store.shard_is_done(
            s, json.loads(shard.with_suffix(".json").read_text())["fingerprint"], ids[s * 16 : (s + 1) * 16]
        )
    assert not list((store.root / "shards").glob("*.tmp")) and not (store.root / "manifest.json").exists()
