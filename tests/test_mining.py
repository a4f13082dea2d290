"""MAD mining: planted answers, a brute-force reference, dedup, determinism, baselines, bad input, stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from madseg import paths
from madseg.config import load_params
from madseg.io.images import encode_jpeg, image_id, write_mask
from madseg.io.store import PredictionStore, Shard
from madseg.io.tables import read_csv, write_csv
from madseg.labels import make_class_list
from madseg.metrics import image_miou
from madseg.mining import (
    CANDIDATE_COLUMNS,
    DISTANCE_DECIMALS,
    M_COLUMNS,
    area_bands,
    class_area_fractions,
    entropy_candidates,
    mine_mad,
    random_candidates,
    select_candidates,
    summarize_m,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = make_class_list("demo")  # background, disc, square, triangle, ring, cross, star
K = CLASSES.num_classes
DISC, SQUARE, TRIANGLE = 1, 2, 3


def _ids(n: int) -> list[str]:
    return [f"{i:016x}" for i in range(n)]


def make_store(root, model: str, ids, maps, shard_size: int = 4, entropy=None) -> PredictionStore:
    """A finished PredictionStore over ``ids`` (sorted) with the given maps."""
    store = PredictionStore(root)
    entropy = np.zeros(len(ids), np.float32) if entropy is None else np.asarray(entropy, np.float32)
    for s in range(-(-len(ids) // shard_size)):
        sl = slice(s * shard_size, (s + 1) * shard_size)
        ms = [np.asarray(m, np.uint8) for m in maps[sl]]
        area = np.stack([np.bincount(m.ravel(), minlength=256)[:K] / m.size for m in ms]).astype(np.float32)
        n = len(ms)
        store.write_shard(s, Shard(list(ids[sl]), ms, area, entropy[sl], np.ones(n, np.float32)), "fp")
    store.finalize(model=model, classes=CLASSES.names, shard_size=shard_size, ids=list(ids), fingerprint="fp")
    return store


def mine(stores: dict, bands, n3=2, distance="miou", **kw):
    comps = {n: s.iter_shards() for n, s in stores.items() if n != "target"}
    return mine_mad(stores["target"].iter_shards(), comps, bands, CLASSES, n3=n3, distance=distance, **kw)


def box(shape=(16, 16), cls=DISC, y=0, x=0, h=4, w=4, base=None):
    m = np.zeros(shape, np.uint8) if base is None else base.copy()
    m[y : y + h, x : x + w] = cls
    return m


WIDE = np.array([[np.nan, np.nan]] + [[0.0, 1.0]] * (K - 1))


# ------------------------------------------------------------------------------------- planted answers
def test_planted_disagreement_ranks_first_in_both_directions(tmp_path):
    ids = _ids(10)
    target = [box(y=i % 8, x=i % 8) for i in range(10)]  # every image: one 4x4 disc
    comp = [m.copy() for m in target]
    comp[5] = box(y=5, x=6, h=3, w=3)  # a small shift: some disagreement
    planted = 7
    comp[planted] = box(y=7, x=7, cls=SQUARE)  # the competitor sees a square where the target sees a disc
    stores = {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "g": make_store(tmp_path / "g", "g", ids, comp),
    }
    cands = mine(stores, WIDE, n3=3)
    t_disc = cands[(cands["class"] == "disc") & (cands["direction"] == "t")]
    assert t_disc.iloc[0]["image_id"] == ids[planted] and t_disc.iloc[0]["rank"] == 1
    assert t_disc.iloc[0]["distance"] == pytest.approx(2 / 3)  # background agrees, disc and square IoU 0
    assert t_disc.iloc[1]["image_id"] == ids[5]
    # reversed roles: partitioned by the competitor's map, only the planted image has a square
    c_square = cands[(cands["class"] == "square") & (cands["direction"] == "c")]
    assert c_square["image_id"].tolist() == [ids[planted]]
    # the target predicts no square anywhere: no (square, t) group
    assert cands[(cands["class"] == "square") & (cands["direction"] == "t")].empty
    assert list(cands.columns[: len(CANDIDATE_COLUMNS)]) == list(CANDIDATE_COLUMNS)
    assert cands.iloc[0]["area_disc"] == pytest.approx(16 / 256)


def test_area_filter_excludes_too_small_and_too_large(tmp_path):
    ids = _ids(3)
    target = [box(h=1, w=2), box(h=12, w=12), box(h=4, w=4)]  # disc area 2/256, 144/256, 16/256
    comp = [np.zeros((16, 16), np.uint8)] * 2 + [box(h=2, w=4)]  # the competitor misses the first two discs
    stores = {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "g": make_store(tmp_path / "g", "g", ids, comp),
    }
    bands = WIDE.copy()
    bands[DISC] = (0.03, 0.3)
    cands = mine(stores, bands, n3=5)
    t_disc = cands[(cands["class"] == "disc") & (cands["direction"] == "t")]
    assert t_disc["image_id"].tolist() == [ids[2]]
    cands = mine(stores, WIDE, n3=5)
    t_disc = cands[(cands["class"] == "disc") & (cands["direction"] == "t")]
    assert t_disc["image_id"].tolist() == [ids[1], ids[0], ids[2]]  # without the band all three, by distance


def test_pixel_accuracy_distance(tmp_path):
    ids = _ids(2)
    target = [box(h=8, w=8), box(h=8, w=8)]
    comp = [box(h=8, w=4), box(h=8, w=6)]  # 32 and 16 wrong pixels of 256
    stores = {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "g": make_store(tmp_path / "g", "g", ids, comp),
    }
    cands = mine(stores, WIDE, n3=2, distance="pixel_accuracy")
    grp = cands[(cands["class"] == "disc") & (cands["direction"] == "t")]
    assert grp["image_id"].tolist() == ids and grp["distance"].tolist() == pytest.approx([32 / 256, 16 / 256])


def test_committee_ranks_where_all_competitors_disagree_over_one_competitors_failure(tmp_path):
    ids = _ids(6)
    target = [box(y=i, x=i) for i in range(6)]  # every image: one 4x4 disc
    comps = {name: [m.copy() for m in target] for name in ("g", "h", "u")}
    lone = 1  # g alone fails here: a square where the target and the other two see the disc
    comps["g"][lone] = box(y=1, x=1, cls=SQUARE)
    shared = 4  # all three see the disc shifted: the target is the odd one out
    for name in comps:
        comps[name][shared] = box(y=6, x=6)
    stores = {"target": make_store(tmp_path / "t", "target", ids, target)}
    stores |= {name: make_store(tmp_path / name, name, ids, maps) for name, maps in comps.items()}

    def g_disc(cands):
        return cands[(cands.competitor == "g") & (cands["class"] == "disc") & (cands.direction == "t")]

    pair = g_disc(mine(stores, WIDE, n3=2))
    assert pair["image_id"].tolist() == [ids[lone], ids[shared]]  # the paper's: g's own failure first
    assert (pair["score"] == pair["distance"]).all()
    committee = g_disc(mine(stores, WIDE, n3=2, rank_by="committee"))
    assert committee["image_id"].tolist() == [ids[shared], ids[lone]]
    by_id = committee.set_index("image_id")
    assert by_id.loc[ids[lone], "distance"] == pytest.approx(2 / 3)  # still the distance to g
    assert by_id.loc[ids[lone], "score"] == pytest.approx(2 / 9)  # the mean over g, h and u
    assert by_id.loc[ids[shared], "score"] == pytest.approx(by_id.loc[ids[shared], "distance"])
    with pytest.raises(ValueError, match=r"unknown mining\.rank_by 'vote'; valid: \['pair', 'committee'\]"):
        mine(stores, WIDE, rank_by="vote")


# ----------------------------------------------------------------------------------------- brute force
def brute_force(ids, target, comps: dict, bands, n3, distance="miou") -> pd.DataFrame:
    """The plain reference: every image, every class, every direction, one metric call per image pair."""
    rows = []
    for name, cmaps in comps.items():
        dist = {}
        for i, a, b in zip(ids, target, cmaps, strict=True):
            if distance == "miou":
                sim = image_miou(a, b, K)
            else:
                keep = (a != 255) & (b != 255)
                sim = float((a == b)[keep].mean()) if keep.any() else 1.0
            dist[i] = round(1.0 - sim, DISTANCE_DECIMALS)
        for k in range(1, K):
            for direction, maps in (("t", target), ("c", cmaps)):
                members = []
                for i, m in zip(ids, maps, strict=True):
                    frac = float((m == k).sum()) / m.size
                    if frac > 0 and bands[k, 0] <= frac <= bands[k, 1]:
                        members.append((-dist[i], i))
                for rank, (neg, i) in enumerate(sorted(members)[:n3], start=1):
                    rows.append((i, name, CLASSES.names[k], direction, -neg, rank))
    return pd.DataFrame(rows, columns=["image_id", "competitor", "class", "direction", "distance", "rank"])


def random_pool(rng, n, shapes=((12, 12), (8, 10))):
    """Blobby random maps (a few rectangles of random classes), images of a few sizes, one model's view."""
    maps = []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        m = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            m[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = rng.integers(1, K)
        maps.append(m)
    return maps


def perturb(rng, maps):
    out = []
    for m in maps:
        m = m.copy()
        if rng.random() < 0.7:
            y, x = rng.integers(0, m.shape[0]), rng.integers(0, m.shape[1])
            m[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = rng.integers(0, K)
        out.append(m)
    return out


def with_ignore(rng, maps):
    """Some maps get a strip of IGNORE pixels (a model may leave pixels unlabelled)."""
    out = []
    for m in maps:
        m = m.copy()
        if rng.random() < 0.3:
            m[rng.integers(0, m.shape[0]), :] = 255
        out.append(m)
    return out


@pytest.mark.parametrize(
    "seed,distance,ignore",
    [(0, "miou", False), (1, "miou", True), (2, "pixel_accuracy", False), (3, "pixel_accuracy", True)],
)
def test_equals_brute_force_on_random_pools(tmp_path, seed, distance, ignore):
    rng = np.random.default_rng(seed)
    n = 60
    ids = sorted(f"{v:016x}" for v in rng.integers(0, 2**62, n))
    target = random_pool(rng, n)
    comps = {"a": perturb(rng, target), "b": perturb(rng, target), "c": random_pool(rng, n)}
    if ignore:
        target, comps["b"] = with_ignore(rng, target), with_ignore(rng, comps["b"])
    bands = area_bands(target, CLASSES)  # data-driven bands make the filter bite
    stores = {"target": make_store(tmp_path / "t", "target", ids, target, shard_size=7)}
    for name, maps in comps.items():
        stores[name] = make_store(tmp_path / name, name, ids, maps, shard_size=7)
    got = mine(stores, bands, n3=3, distance=distance)
    want = brute_force(ids, target, comps, bands, 3, distance)
    assert len(got) > 20
    pd.testing.assert_frame_equal(got[want.columns].reset_index(drop=True), want, check_dtype=False)


def test_excluded_images_are_as_if_absent_from_the_pool(tmp_path):
    """Images the target was fine-tuned on are no candidates: mining with them excluded equals mining a pool
    without them, and the planted top image of a group gives its place to the next one."""
    rng = np.random.default_rng(11)
    ids = _ids(30)
    target = random_pool(rng, 30)
    comp = perturb(rng, target)
    comp[4] = box(shape=target[4].shape, cls=TRIANGLE)  # a planted, maximal disagreement
    bands = area_bands(target, CLASSES)
    full = {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "g": make_store(tmp_path / "g", "g", ids, comp),
    }
    assert ids[4] in set(mine(full, bands, n3=3)["image_id"])
    excluded = {ids[4], ids[9], ids[17]}
    kept = [i for i, image in enumerate(ids) if image not in excluded]
    rest = {
        "target": make_store(tmp_path / "t2", "target", [ids[i] for i in kept], [target[i] for i in kept]),
        "g": make_store(tmp_path / "g2", "g", [ids[i] for i in kept], [comp[i] for i in kept]),
    }
    got = mine(full, bands, n3=3, exclude=frozenset(excluded))
    assert not excluded & set(got["image_id"]) and len(got) > 10
    pd.testing.assert_frame_equal(got, mine(rest, bands, n3=3))


def test_baselines_skip_excluded_images_and_keep_their_budget():
    stats = _stats(40)
    excluded = set(stats.sort_values("entropy", ascending=False)["id"].head(5))  # the five most uncertain
    for strategy in ("entropy", "random"):
        kw = {"classes": CLASSES, "budget": 30, "target_stats": stats, "seed": 0}
        cands = select_candidates(strategy, **kw, exclude=excluded)
        assert len(cands) == 30 and not excluded & set(cands["image_id"])
    rest = stats[~stats["id"].isin(excluded)]
    assert (
        select_candidates("entropy", classes=CLASSES, budget=30, target_stats=stats, exclude=excluded)[
            "image_id"
        ].tolist()
        == entropy_candidates(rest, 30, CLASSES)["image_id"].tolist()
    )


# -------------------------------------------------------------------------------------- M, determinism
def test_dedup_union_across_groups(tmp_path):
    ids = _ids(4)
    target = [box(), box(cls=SQUARE), box(), box(cls=TRIANGLE)]
    g1 = [box(cls=SQUARE), box(cls=SQUARE), box(), box(cls=TRIANGLE)]  # image 0 differs
    g2 = [box(cls=TRIANGLE), box(cls=DISC), box(), box(cls=TRIANGLE)]  # images 0 and 1 differ
    stores = {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "g1": make_store(tmp_path / "g1", "g1", ids, g1),
        "g2": make_store(tmp_path / "g2", "g2", ids, g2),
    }
    cands = mine(stores, WIDE, n3=1)
    m = summarize_m(cands)
    assert list(m.columns) == list(M_COLUMNS)
    assert m["image_id"].is_unique and set(m["image_id"]) == set(cands["image_id"])
    row0 = m.set_index("image_id").loc[ids[0]]
    assert row0["n_groups"] == (cands["image_id"] == ids[0]).sum() >= 4
    assert row0["competitor"] == "g1" and row0["class"] == "disc" and row0["direction"] == "t"
    assert row0["best_distance"] == pytest.approx(2 / 3)
    assert len(m) <= 2 * 2 * (K - 1) * 1


def test_deterministic_and_independent_of_shard_size(tmp_path):
    rng = np.random.default_rng(5)
    ids = _ids(40)
    target = random_pool(rng, 40)
    comp = perturb(rng, target)
    runs = []
    for size in (3, 40, 3):
        d = tmp_path / f"s{size}_{len(runs)}"
        stores = {
            "target": make_store(d / "t", "target", ids, target, size),
            "g": make_store(d / "g", "g", ids, comp, size),
        }
        runs.append(mine(stores, area_bands(target, CLASSES), n3=4))
    pd.testing.assert_frame_equal(runs[0], runs[1])
    pd.testing.assert_frame_equal(runs[0], runs[2])


# ------------------------------------------------------------------------------------------ bad inputs
def _pair(tmp_path, target, comp, ids=None, comp_ids=None):
    ids = ids or _ids(len(target))
    return {
        "target": make_store(tmp_path / "t", "target", ids, target),
        "fpn": make_store(tmp_path / "g", "fpn", comp_ids or ids, comp),
    }


def test_shape_mismatch_names_image_and_model(tmp_path):
    stores = _pair(tmp_path, [box(), box()], [box(), box(shape=(16, 12))])
    with pytest.raises(ValueError, match=rf"image {_ids(2)[1]}: competitor 'fpn'.*\(16, 12\)"):
        mine(stores, WIDE)


def test_missing_image_names_image_and_model(tmp_path):
    ids = _ids(3)
    other = [ids[0], ids[1], "ffffffffffffffff"]
    stores = _pair(tmp_path, [box()] * 3, [box()] * 3, ids=ids, comp_ids=other)
    with pytest.raises(ValueError, match=rf"image {ids[2]} .*missing from competitor 'fpn'"):
        mine(stores, WIDE)


def test_fewer_shards_is_an_error(tmp_path):
    ids = _ids(6)
    stores = {
        "target": make_store(tmp_path / "t", "target", ids, [box()] * 6),
        "fpn": make_store(tmp_path / "g", "fpn", ids[:4], [box()] * 4),
    }
    with pytest.raises(ValueError, match=r"competitor 'fpn' has fewer shards"):
        mine(stores, WIDE)


@pytest.mark.parametrize("who", ["target", "fpn"])
def test_class_id_outside_list_names_image_and_model(tmp_path, who):
    bad = box(cls=9)
    stores = _pair(tmp_path, [box(), bad if who == "target" else box()], [box(), bad if who == "fpn" else box()])
    with pytest.raises(ValueError, match=rf"image {_ids(2)[1]}: model '{who}' predicts class ids \[9\]"):
        mine(stores, WIDE)


def test_bad_parameters(tmp_path):
    stores = _pair(tmp_path, [box()], [box()])
    with pytest.raises(ValueError, match="unknown distance 'l2'"):
        mine(stores, WIDE, distance="l2")
    with pytest.raises(ValueError, match="n3 must be >= 1"):
        mine(stores, WIDE, n3=0)
    with pytest.raises(ValueError, match=r"bands must be \(7, 2\)"):
        mine(stores, WIDE[:3])
    with pytest.raises(ValueError, match="unknown strategy 'greedy'"):
        select_candidates("greedy", classes=CLASSES)
    with pytest.raises(ValueError, match="at least one competitor"):
        mine_mad(iter([]), {}, WIDE, CLASSES, n3=1)


# ----------------------------------------------------------------------------------------------- bands
def test_area_bands_quartiles_overrides_and_background():
    masks = [box(h=h, w=4) for h in (1, 2, 3, 4, 5)] + [np.zeros((16, 16), np.uint8)]  # disc in 5 of 6
    bands = area_bands(masks, CLASSES, (0.25, 0.75), {"square": [0.1, 0.2]})
    fr = np.array([4, 8, 12, 16, 20]) / 256
    assert bands[DISC] == pytest.approx(np.quantile(fr, [0.25, 0.75]))  # images without disc are not counted
    assert bands[SQUARE].tolist() == [0.1, 0.2]
    assert np.isnan(bands[0]).all() and bands[TRIANGLE].tolist() == [0.0, 1.0]  # no S0 image has a triangle
    areas = np.stack([class_area_fractions(m, K) for m in masks])
    assert np.array_equal(area_bands(areas, CLASSES), area_bands(masks, CLASSES), equal_nan=True)
    with pytest.raises(ValueError, match="unknown class 'blob'"):
        area_bands(masks, CLASSES, overrides={"blob": [0, 1]})
    with pytest.raises(ValueError, match="override for 'disc'"):
        area_bands(masks, CLASSES, overrides={"disc": [0.5, 0.1]})
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        class_area_fractions(box(cls=9), K)


# ------------------------------------------------------------------------------------------- baselines
def _stats(n, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": _ids(n)})
    for c in CLASSES.names:
        df[f"area_{c}"] = rng.random(n)
    df["entropy"] = rng.random(n)
    df.loc[3, "entropy"] = df.loc[4, "entropy"] = 5.0  # a tie at the top: id order breaks it
    df["maxprob"] = 1.0
    return df


def test_entropy_takes_the_most_uncertain():
    stats = _stats(50)
    cands = entropy_candidates(stats.sample(frac=1, random_state=0), 5, CLASSES)
    want = stats.sort_values(["entropy", "id"], ascending=[False, True])["id"].head(5).tolist()
    assert cands["image_id"].tolist() == want and want[:2] == [_ids(50)[3], _ids(50)[4]]
    assert cands["rank"].tolist() == [1, 2, 3, 4, 5] and (cands["strategy"] == "entropy").all()
    assert list(summarize_m(cands).columns) == list(M_COLUMNS)


def test_random_is_seeded_and_draws_from_all_of_d():
    stats = _stats(200)
    a = random_candidates(stats, 30, CLASSES, seed=1)
    b = random_candidates(stats.sample(frac=1, random_state=3), 30, CLASSES, seed=1)
    c = random_candidates(stats, 30, CLASSES, seed=2)
    assert a["image_id"].tolist() == b["image_id"].tolist() != c["image_id"].tolist()
    assert a["image_id"].is_unique and len(a) == 30
    drawn = pd.concat([random_candidates(stats, 30, CLASSES, seed=s)["image_id"] for s in range(40)])
    assert drawn.nunique() > 180  # not stuck on a part of D


def test_select_candidates_same_budget_same_format(tmp_path):
    stats = _stats(20)
    for strategy in ("entropy", "random"):
        cands = select_candidates(strategy, classes=CLASSES, budget=7, target_stats=stats, seed=0)
        assert len(summarize_m(cands)) == 7
        assert list(cands.columns[: len(CANDIDATE_COLUMNS)]) == list(CANDIDATE_COLUMNS)
    with pytest.raises(ValueError, match="needs target_stats and budget"):
        select_candidates("entropy", classes=CLASSES)


# ------------------------------------------------------------------------------------------- the stage
@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A project with S0 masks, a pool of 12 images, its index and the stores of a target + 2 competitors."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    voc = tmp_path / "data/world/voc"
    names = [f"s{i}" for i in range(8)]
    for i, n in enumerate(names):
        write_mask(voc / "SegmentationClass" / f"{n}.png", box(y=i, x=i, h=3 + i % 3, w=4, cls=1 + i % 3), CLASSES)
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(names) + "\n")
    write_csv(paths.annotations_dir("init") / "S_all.csv", pd.DataFrame({"image_id": [], "round": []}))
    rows = []
    for i in range(12):
        data = encode_jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        p = tmp_path / f"data/world/pool/images/p{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        rows.append(
            {
                "id": image_id(data),
                "source": "folder",
                "path": str(p.relative_to(tmp_path)),
                "width": 16,
                "height": 16,
                "phash": "0",
                "bytes": len(data),
            }
        )
    index = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
    write_csv(paths.POOL_INDEX, index)
    ids = index["id"].tolist()
    target = random_pool(rng, 12, shapes=((16, 16),))
    make_store(paths.target_predictions("0"), "target", ids, target, entropy=rng.random(12))
    for name in ("unet", "fpn"):
        make_store(paths.competitor_predictions(name), name, ids, perturb(rng, target))
    params = load_params(ROOT / "params.yaml")
    models = dataclasses.replace(params.models, competitors={n: params.models.competitors[n] for n in ("unet", "fpn")})
    return dataclasses.replace(params, models=models), ids


@pytest.mark.parametrize("strategy", ["mad", "entropy", "random"])
def test_stage_writes_candidates_m_bands_overlays_metrics(tiny_project, strategy):
    from madseg.stages import mine as stage

    params, ids = tiny_project
    params = dataclasses.replace(params, mining=dataclasses.replace(params.mining, strategy=strategy, n3=2))
    stage.run(params, round_key="0")
    out = paths.mining_dir("0")
    m = read_csv(out / "M.csv", required=list(M_COLUMNS))
    cands = read_csv(out / "candidates.csv", required=list(CANDIDATE_COLUMNS))
    bands = read_csv(out / "bands.csv", required=["class", "p", "q", "source", "n_s0"])
    metrics = json.loads((paths.METRICS / "mining/round_0.json").read_text())
    assert set(m["image_id"]) == set(cands["image_id"]) <= set(ids) and len(m) > 0
    assert metrics["M_size"] == len(m) == metrics["mad_M_size"]  # baselines spend MAD's budget
    assert (m["strategy"] == strategy).all() and len(bands) == K - 1
    for kind in ("rater", "report"):
        assert sorted(p.stem for p in (out / "overlays" / kind).glob("*.png")) == sorted(m["image_id"])
    first = {p.name: p.read_bytes() for p in sorted((out / "overlays/report").glob("*.png"))}
    before = (out / "candidates.csv").read_bytes(), (out / "M.csv").read_bytes()
    stage.run(params, round_key="0")
    assert before == ((out / "candidates.csv").read_bytes(), (out / "M.csv").read_bytes())
    assert first == {p.name: p.read_bytes() for p in sorted((out / "overlays/report").glob("*.png"))}


def test_stage_never_proposes_images_of_earlier_fine_tunes(tiny_project):
    from madseg.stages import mine as stage

    params, _ = tiny_project
    stage.run(params, round_key="0")
    first_m = read_csv(paths.mining_dir("0") / "M.csv", required=["image_id"])["image_id"].tolist()
    trained_on = first_m[:3]  # as if select_S@0 had chosen them and finetune@0 trained on them
    write_csv(paths.annotations_dir("0") / "S_all.csv", pd.DataFrame({"image_id": trained_on, "round": "0"}))
    shutil.copytree(paths.target_predictions("0"), paths.target_predictions("1"))
    stage.run(params, round_key="1")  # the paper's way: with the same predictions, the same M comes back
    again = read_csv(paths.mining_dir("1") / "M.csv", required=["image_id"])["image_id"].tolist()
    assert again == first_m
    assert json.loads((paths.METRICS / "mining/round_1.json").read_text())["excluded_trained_on"] == 0
    for strategy in ("mad", "entropy", "random"):
        mining = dataclasses.replace(params.mining, strategy=strategy, exclude_trained_on=True)
        stage.run(dataclasses.replace(params, mining=mining), round_key="1")
        m = read_csv(paths.mining_dir("1") / "M.csv", required=["image_id"])["image_id"]
        assert len(m) > 0 and not set(trained_on) & set(m), strategy
        metrics = json.loads((paths.METRICS / "mining/round_1.json").read_text())
        assert metrics["excluded_trained_on"] == 3


def test_stage_refuses_a_store_over_other_images(tiny_project):
    from madseg.stages import mine as stage

    params, ids = tiny_project
    make_store(paths.competitor_predictions("fpn"), "fpn", ids[:-1], [box()] * (len(ids) - 1))
    with pytest.raises(ValueError, match=r"model 'fpn'.*other images"):
        stage.run(params, round_key="0")


# ---------------------------------------------------------------------------------------------- validity
def test_truly_wrong_fraction_counts_ood_apart():
    from madseg.validity import truly_wrong_fraction

    truth = {"a": box(), "b": box(), "c": box()}
    pred = {"a": box(), "b": box(cls=SQUARE), "c": box(y=1), "o": box()}
    kinds = {"a": "normal", "b": "corner", "c": "normal", "o": "ood"}
    got = truly_wrong_fraction(["a", "b", "c", "o"], pred, truth, kinds, K)
    # a: perfect; b: disc read as square (mIoU 1/3); c: a one-row shift (mIoU > 0.5); o: out-of-domain
    assert got["n"] == 4 and got["n_ood"] == 1 and got["n_in_domain"] == 3 and got["n_wrong"] == 1
    assert got["wrong_share"] == pytest.approx(1 / 3) and got["ood_share"] == pytest.approx(0.25)
    assert truly_wrong_fraction(["o"], pred, truth, kinds, K)["wrong_share"] is None
    with pytest.raises(ValueError, match="no kind"):
        truly_wrong_fraction(["z"], pred, truth, kinds, K)
    with pytest.raises(ValueError, match="image a: no truth"):
        truly_wrong_fraction(["a"], pred, {}, kinds, K)


def test_the_local_backends_need_nothing_of_ray():
    import subprocess
    import sys

    code = (
        "import sys, madseg.backends, madseg.cluster, madseg.inference, madseg.mining, madseg.stages.mine, "
        "madseg.stages.infer, madseg.compare; sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("big", [False, True])
def test_shard_statistics_equal_per_image_confusions(big):
    """The disagreement-based statistics against one confusion matrix per image pair, with ignored pixels and
    mixed sizes (``big``: maps past the size where histograms switch to torch's bincount)."""
    from madseg.io.store import Shard
    from madseg.metrics import confusion_matrix, mean_iou, pixel_accuracy
    from madseg.mining import shard_pair_stats

    rng = np.random.default_rng(5)
    k, shapes = 5, [(300, 400), (7, 9), (260, 260)] if big else [(7, 9), (16, 16), (1, 3), (33, 5)]
    target = [rng.integers(0, k, s).astype(np.uint8) for s in shapes]
    other = []
    for t in target:
        o = t.copy()
        flip = rng.random(t.shape) < 0.3
        o[flip] = rng.integers(0, k, int(flip.sum()))
        o[rng.random(t.shape) < 0.05] = 255  # ignored
        other.append(o)
    target[0][:2, :2] = 255
    ids = [f"{i}" for i in range(len(shapes))]

    def shard(maps):
        zeros = np.zeros(len(ids), np.float32)
        return Shard(ids, maps, np.zeros((len(ids), k), np.float32), zeros, zeros)

    for distance, score in (("miou", mean_iou), ("pixel_accuracy", pixel_accuracy)):
        _, t_area, stats = shard_pair_stats(shard(target), {"c": shard(other)}, k, distance)
        c_area, dist = stats["c"]
        for i, (a, b) in enumerate(zip(target, other, strict=True)):
            assert dist[i] == pytest.approx(1 - score(confusion_matrix(a, b, k)), abs=1e-12)
            assert np.allclose(t_area[i], [(a == c).mean() for c in range(k)])
            assert np.allclose(c_area[i], [(b == c).mean() for c in range(k)])


def test_factor_shares_count_each_factor_of_multi_factor_images():
    from madseg.validity import factor_names, factor_shares

    named = pd.Series({"a": "blur;low_contrast", "b": "blur", "c": "", "d": "rotation"})
    assert factor_names(named) == ["blur", "low_contrast", "rotation"]
    assert factor_shares(named, ["a", "b", "c", "zz"]) == {"blur": 0.5, "low_contrast": 0.25, "rotation": 0.0}
    assert factor_shares(named, []) == {"blur": 0.0, "low_contrast": 0.0, "rotation": 0.0}
