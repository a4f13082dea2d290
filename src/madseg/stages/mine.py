"""mine@<round>: candidates M^(i+1) by MAD competition (or a baseline with MAD's budget), with overlays.

Reads the pool index, the target's predictions of this round (and through each view of
``mining.self_consistency``, as competitors self_<view>), every competitor's cached predictions, S0's ground
truth (for the default area bands only; the pool's truth is never read) and, with ``mining.exclude_trained_on``,
S^(1..i): the images the target was already fine-tuned on, which no strategy may then propose again. Writes
``data/mining/round_<R>/{candidates.csv, M.csv, bands.csv, overlays/rater/, overlays/report/}`` and
``metrics/mining/round_<R>.json``.
"""

from __future__ import annotations

import logging

from madseg import paths
from madseg.backends import propose, round_stores, s0_area_bands
from madseg.config import Params
from madseg.io.atomic import write_json
from madseg.io.store import ids_digest
from madseg.io.tables import read_csv, write_csv
from madseg.mining import bands_frame
from madseg.overlays import write_candidate_overlays

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    if round_key not in params.rounds:
        raise ValueError(f"unknown round {round_key!r}; rounds: {list(params.rounds)}")
    if not params.models.competitors:
        raise ValueError("models.competitors is empty: MAD needs at least one competitor")
    mp, classes, out = params.mining, params.dataset.class_list(), paths.mining_dir(round_key)
    index = read_csv(paths.POOL_INDEX, required=["id", "path"])
    ids = sorted(index["id"])
    target, competitors = round_stores(round_key, params.models.competitors, mp.self_consistency)
    digest = ids_digest(ids)
    for name, store in [("target", target), *competitors.items()]:
        store.check_covers(model=name, classes=classes.names, ids_sha256=digest, count=len(ids))
    bands, areas = s0_area_bands(params.dataset, mp, classes)
    trained_on: frozenset[str] = frozenset()
    if mp.exclude_trained_on:
        previous = paths.annotations_dir(params.rounds[round_key].prev) / "S_all.csv"
        trained_on = frozenset(read_csv(previous, required=["image_id"])["image_id"])

    proposal = propose(
        mp.strategy,
        target=target,
        competitors=competitors,
        bands=bands,
        classes=classes,
        n3=mp.n3,
        distance=mp.distance,
        rank_by=mp.rank_by,
        seed=mp.seed + int(round_key),
        exclude=trained_on,
        backend=mp.backend,
        ray_params=params.ray,
    )
    m = proposal.m
    write_csv(out / "bands.csv", bands_frame(bands, classes, areas, mp.area_overrides))
    write_csv(out / "candidates.csv", proposal.candidates)
    write_csv(out / "M.csv", m)
    write_candidate_overlays(out / "overlays", m, index, target, competitors, classes, mp.overlay_min_side)
    head = {"strategy": mp.strategy, "n3": mp.n3, "distance": mp.distance, "pool_size": len(ids)}
    if mp.rank_by != "pair":  # the paper's ranking leaves the metrics as they were
        head["rank_by"] = mp.rank_by
    metrics = {**head, "excluded_trained_on": len(trained_on), **proposal.summary(mp.strategy)}
    write_json(paths.METRICS / "mining" / f"round_{round_key}.json", metrics)
    log.info("round %s: %s proposed |M| = %d (MAD's |M| = %d)", round_key, mp.strategy, len(m), len(proposal.mad_m))
