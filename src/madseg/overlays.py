"""The overlays of M's candidates: what raters see (the image with the target's prediction, never a competitor's)
and what the report shows (beside it the competitor that disagreed, and how the image was found)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from madseg.io.atomic import write_bytes
from madseg.io.images import read_rgb
from madseg.io.store import PredictionStore
from madseg.labels import ClassList
from madseg.mining import NONE
from madseg.render import CandidateOverlay, candidate_pngs, drawing_workers


def write_candidate_overlays(
    folder: Path,
    m: pd.DataFrame,
    index: pd.DataFrame,
    target: PredictionStore,
    competitors: dict[str, PredictionStore],
    classes: ClassList,
    min_side: int,
) -> None:
    """Write ``folder``/rater/<id>.png (the image with the target's map, what raters see) and
    ``folder``/report/<id>.png (beside it the competitor's map that disagreed, captioned with the pair, class,
    direction, distance and rank that found it) for every image of ``m``; ``index`` maps ids to image paths."""
    # a previous run's overlays of images no longer in M must not linger beside the new ones
    shutil.rmtree(folder, ignore_errors=True)
    if m.empty:
        return
    target_maps = target.read_maps(sorted(set(m["image_id"])))
    wanted = {name: sorted(set(m.loc[m["competitor"] == name, "image_id"])) for name in competitors}
    comp_maps = {name: store.read_maps(wanted[name]) if wanted[name] else {} for name, store in competitors.items()}
    path_of = dict(zip(index["id"], index["path"], strict=True))
    records = m.to_dict("records")

    def drawing(r: dict) -> CandidateOverlay:
        image_id, comp = r["image_id"], r["competitor"]
        caption, cmap = f"{r['strategy']} | rank {r['rank']} | score {r['best_score']:.3f}", None
        if comp != NONE and comp in comp_maps:
            caption = (
                f"target vs {comp} | class {r['class']} | dir {r['direction']} | d={r['distance']:.3f} | "
                f"rank {r['rank']} | {r['n_groups']} group(s)"
            )
            cmap = comp_maps[comp][image_id]
        return CandidateOverlay(read_rgb(path_of[image_id]), target_maps[image_id], cmap, comp, caption)

    pngs = candidate_pngs(map(drawing, records), classes, min_side, drawing_workers(len(records)))
    for r, (rater, report) in tqdm(zip(records, pngs, strict=True), total=len(records), desc="overlays", unit="image"):
        write_bytes(folder / "rater" / f"{r['image_id']}.png", rater, durable=False)  # rebuilt on every run
        write_bytes(folder / "report" / f"{r['image_id']}.png", report, durable=False)
