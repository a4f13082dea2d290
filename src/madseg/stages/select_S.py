"""select_S@<round>: mean opinion scores with vetoes, S^(i+1) (the n4 lowest), S^(1..i+1), and rater agreement."""

from __future__ import annotations

import logging

import pandas as pd

from madseg import paths
from madseg.config import Params
from madseg.io.atomic import write_json
from madseg.io.tables import read_csv, write_csv
from madseg.selection import (
    krippendorff_alpha_ordinal,
    opinion_scores,
    ratings_left_no_choice,
    select_lowest,
    select_round_robin,
)

log = logging.getLogger(__name__)


def run(params: Params, *, round_key: str) -> None:
    spec = params.rounds[round_key]
    here = paths.annotations_dir(round_key)
    candidates = read_csv(paths.mining_dir(round_key) / "M.csv", required=["image_id"])["image_id"].tolist()
    scores = read_csv(here / "scores.csv", required=["image_id", "annotator", "score", "out_of_domain"])
    previous = read_csv(paths.annotations_dir(spec.prev) / "S_all.csv", required=["image_id", "round"])

    mos = opinion_scores(scores, candidates, params.selection.scores)
    # the last round only measures (ratings and T's masks): it fine-tunes nothing, so it selects no S
    n4 = params.selection.n4 if spec.finetune else 0
    if warning := ratings_left_no_choice(mos, n4, exclude=previous["image_id"]):
        log.warning("round %s: %s", round_key, warning)
    if params.selection.method == "round_robin":
        groups = read_csv(
            paths.mining_dir(round_key) / "candidates.csv",
            required=["image_id", "competitor", "class", "direction"],
        )
        chosen = select_round_robin(
            mos, groups, n4, exclude=previous["image_id"], pool_factor=params.selection.pool_factor
        )
    else:
        chosen = select_lowest(mos, n4, exclude=previous["image_id"])
    s_all = pd.concat(
        [previous[["image_id", "round"]], pd.DataFrame({"image_id": chosen["image_id"], "round": round_key})],
        ignore_index=True,
    )

    write_csv(here / "mos.csv", mos)
    write_csv(here / "S.csv", chosen)
    write_csv(here / "S_all.csv", s_all)
    agreement = {
        "krippendorff_alpha_ordinal": krippendorff_alpha_ordinal(scores),
        "images_rated": len(mos),
        "ratings": len(scores),
        "vetoed": int(mos["vetoed"].sum()),
        "mos_mean_unvetoed": float(mos.loc[~mos["vetoed"], "mos"].mean()) if (~mos["vetoed"]).any() else None,
        "S_size": len(chosen),
        "S_all_size": len(s_all),
    }
    write_json(paths.METRICS / "annotation" / f"agreement_round_{round_key}.json", _finite(agreement))
    log.info(
        "round %s: |M| %d, vetoed %d, |S| %d, |S_all| %d, alpha %.3f",
        round_key,
        len(mos),
        agreement["vetoed"],
        len(chosen),
        len(s_all),
        agreement["krippendorff_alpha_ordinal"],
    )


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}
