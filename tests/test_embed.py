"""The embed stage's library: ImageNet features stored like predictions (same bytes again, resumed after an
interruption), a missing weight file refused in one line, the stage idle while the slices do not use them, and
slices that see content: look-alike images that no attribute tells apart land in one slice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from madseg import paths
from madseg.config import EmbedParams, load_params
from madseg.embedding import embed_pool
from madseg.io.images import encode_jpeg, image_id
from madseg.io.store import EmbeddingStore
from madseg.models import weights
from madseg.models.embedders import load_embedder
from madseg.runner import exit_code
from madseg.slices import embedding_coords, find_slices
from madseg.stages import embed as embed_stage

SMALL = EmbedParams(image_size=64, batch_size=4, shard_size=5, threads=1, workers=0)


def tiny_pool(folder: Path, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """``n`` seeded 32-px JPEGs and their index (id, path; sorted by id)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(seed), []
    for i in range(n):
        data = encode_jpeg(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
        path = folder / f"im_{i:02d}.jpg"
        path.write_bytes(data)
        rows.append({"id": image_id(data), "path": str(path)})
    return pd.DataFrame(rows).sort_values("id").reset_index(drop=True)


def store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _embed(index: pd.DataFrame, store: EmbeddingStore, embedder=None) -> int:
    embedder = embedder or load_embedder(SMALL.model, image_size=SMALL.image_size)
    return embed_pool(embedder, index, store, shard_size=SMALL.shard_size, batch_size=SMALL.batch_size, workers=0)


needs_weights = pytest.mark.skipif(
    weights.find_local("mobilenet_v2-b0353104.pth") is None, reason="`madseg weights fetch` puts the file in place"
)


@needs_weights
def test_embeddings_are_stored_by_shard_and_an_interrupted_run_resumes_to_the_same_bytes(tmp_path):
    index = tiny_pool(tmp_path / "pool")
    whole = EmbeddingStore(tmp_path / "whole")
    assert _embed(index, whole) == 3
    ids, features = whole.features()
    assert ids == index["id"].tolist() and features.shape == (12, 1280) and np.isfinite(features).all()
    assert whole.manifest["extra"] == {"dim": 1280, "image_size": [64, 64], "format": "gap-float16-v1"}

    class Interrupted(Exception):
        pass

    embedder, calls = load_embedder(SMALL.model, image_size=SMALL.image_size), []
    infer = embedder.infer

    def stops_in_the_second_shard(*args):
        calls.append(1)
        if len(calls) == 3:  # shard 0 is two batches of 4 + 1: the third call is in shard 1
            raise Interrupted
        return infer(*args)

    embedder.infer = stops_in_the_second_shard
    cut = EmbeddingStore(tmp_path / "cut")
    with pytest.raises(Interrupted):
        _embed(index, cut, embedder)
    assert sorted(p.name for p in (cut.root / "shards").iterdir()) == ["00000.json", "00000.npz"]
    assert _embed(index, cut) == 2  # shard 0 kept
    assert store_bytes(cut.root) == store_bytes(whole.root)
    assert _embed(index, cut) == 0


def test_a_missing_weight_file_stops_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(weights, "PACKAGED", ())  # nor inside an installed registry package
    code = exit_code(lambda: load_embedder("mobilenet_v2"))
    err = capsys.readouterr().err
    assert code == 9 and err.count("\n") == 1 and "Traceback" not in err
    assert "mobilenet_v2-b0353104.pth" in err and "madseg weights fetch" in err
    with pytest.raises(ValueError, match="unknown embedder 'vit'; valid: \\['mobilenet_v2'\\]"):
        load_embedder("vit")


def test_the_stage_embeds_only_when_the_slices_use_the_embeddings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(embed_stage, "embed_images", lambda index, store, **kw: calls.append(len(index)) or 0)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert params.slices.embedding_weight == 0  # the default: no pass over the pool, not even its index read
    embed_stage.run(params)
    note = paths.POOL_EMBEDDINGS / "NOT_COMPUTED"
    assert calls == [] and list(paths.POOL_EMBEDDINGS.iterdir()) == [note]  # DVC's output: a note saying why
    finished = paths.POOL_EMBEDDINGS / "shards" / "00000.npz"  # what an earlier run at a weight above 0 left
    finished.parent.mkdir()
    finished.write_bytes(b"kept")
    embed_stage.run(params)
    assert finished.read_bytes() == b"kept"  # kept, to be resumed when the weight is raised again
    index = tiny_pool(tmp_path / "pool", n=3)
    paths.POOL_INDEX.parent.mkdir(parents=True)
    index.to_csv(paths.POOL_INDEX, index=False)
    used = dataclasses.replace(params, slices=dataclasses.replace(params.slices, embedding_weight=0.25))
    embed_stage.run(used)
    assert calls == [3] and not note.exists()
    unused = dataclasses.replace(
        params, slices=dataclasses.replace(params.slices, embedding_weight=1.0, embedding_dims=0)
    )
    embed_stage.run(unused)
    assert calls == [3]


def test_slices_with_embeddings_put_planted_look_alikes_into_one_slice():
    """60 images of M look alike (say, blurred: one direction of the embedding) while their attributes are the
    bulk's; 60 others of M are like the pool. The attributes alone scatter the look-alikes; with the embedding
    one slice holds nearly all of them and little else."""
    rng = np.random.default_rng(0)
    n = 1500
    table = pd.DataFrame(
        {a: rng.normal(0.5, 0.1, n) for a in ("brightness", "contrast", "sharpness", "noise")},
        index=[f"{i:04d}" for i in range(n)],
    )
    features = rng.normal(0, 1, (n, 64))
    planted = np.arange(60)
    features[planted, 0] += 12.0  # the look-alikes
    in_group = np.zeros(n, bool)
    in_group[:120] = True
    planted_ids = set(table.index[planted])

    def best(slices: pd.DataFrame) -> tuple[float, float]:
        """(share of the planted images, purity) of the slice holding most of them."""
        members = [set(g.split(";")) for g in slices["group_ids"]]
        top = max(members, key=lambda s: len(s & planted_ids))
        return len(top & planted_ids) / len(planted_ids), len(top & planted_ids) / len(top)

    coords = embedding_coords(features, dims=8, seed=0)
    coverage, purity = best(find_slices(table, in_group, embedding=coords, clusters=8, seed=0))
    assert coverage >= 0.9 and purity >= 0.9
    blind_coverage, blind_purity = best(find_slices(table, in_group, clusters=8, seed=0))
    assert blind_purity < 0.8 or blind_coverage < 0.5


def test_embedding_coords_are_seeded_principal_components():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, 10)) * np.arange(10, 0, -1)  # variance falls along the columns
    a = embedding_coords(x, 3, seed=0)
    assert a.shape == (200, 3) and np.array_equal(a, embedding_coords(x.copy(), 3, seed=0))
    assert np.allclose(embedding_coords(-x, 3, seed=0), -a)  # signs fixed by the loadings, not by the solver
    assert np.all(np.diff(a.var(axis=0)) < 0)  # the first component carries the most
    with pytest.raises(ValueError, match="embedding must be"):
        find_slices(pd.DataFrame({"noise": rng.normal(size=20)}), np.ones(20, bool), embedding=np.zeros((3, 2)))
