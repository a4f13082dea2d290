"""What the report shows, gathered from the pipeline's metrics and tables: each round's facts, every proposed
image as a triage card, the science figures and the provenance. Reads files; builds no HTML."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from madseg import paths
from madseg.annotation.tasks import drawing_cost
from madseg.config import Params
from madseg.io.atomic import read_json, sha256_file
from madseg.io.images import read_mask
from madseg.io.tables import read_csv
from madseg.report.sections import RoundFacts
from madseg.report.triage import Card


def triage_cards(params: Params, out: Path) -> tuple[list[Card], dict[str, list[str]]]:
    """Every round's M as cards (ratings and failure slices where they exist) and each round's slice rules."""
    cards, rules = [], {}
    for key in params.rounds:
        mining = paths.mining_dir(key)
        if not (mining / "M.csv").exists():
            continue
        m = read_csv(mining / "M.csv")
        mos_path = paths.annotations_dir(key) / "mos.csv"
        mos = read_csv(mos_path).set_index("image_id") if mos_path.exists() else None
        slices_path = paths.slices_dir(key) / "slices.csv"
        members: dict[str, list[int]] = {}
        if slices_path.exists():
            table = read_csv(slices_path)
            rules[key] = table["rule"].tolist()
            for n, ids in enumerate(table["group_ids"].fillna("")):
                for i in filter(None, str(ids).split(";")):
                    members.setdefault(i, []).append(n)
        for r in m.to_dict("records"):
            image = r["image_id"]
            overlay = mining / "overlays" / "report" / f"{image}.png"
            if not overlay.exists():
                continue
            rated = mos is not None and image in mos.index and not bool(mos.at[image, "vetoed"])
            cards.append(
                Card(
                    image_id=image,
                    round=key,
                    image=copy_asset(overlay, out, key, "m"),
                    cls=str(r["class"]),
                    competitor=str(r["competitor"]),
                    direction=str(r["direction"]),
                    distance=float(r["distance"]),
                    mos=float(mos.at[image, "mos"]) if rated else None,
                    slices=tuple(members.get(image, ())),
                )
            )
    return cards, rules


def science_inputs() -> tuple[pd.DataFrame | None, dict, dict]:
    """The ranking-stability tables of every round (or None), metrics/study.json and metrics/validity.json ({}
    where not written yet): what :func:`madseg.report.sections.science_html` shows."""
    stability = sorted((paths.METRICS / "stability").glob("round_*.csv"))
    study, validity = paths.METRICS / "study.json", paths.METRICS / "validity.json"
    return (
        pd.concat([pd.read_csv(p) for p in stability]) if stability else None,
        read_json(study) if study.exists() else {},
        read_json(validity) if validity.exists() else {},
    )


def copy_asset(src: Path, out: Path, key: str, kind: str) -> str:
    rel = Path("assets") / f"round_{key}" / kind / src.name
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out / rel)
    return rel.as_posix()


def round_facts(params: Params, key: str, metrics: dict) -> RoundFacts:
    ann, mining = paths.annotations_dir(key), paths.mining_dir(key)
    m = read_csv(mining / "M.csv") if (mining / "M.csv").exists() else pd.DataFrame(columns=["image_id", "class"])
    poor, worst = 0, None
    if (ann / "mos.csv").exists():
        mos = read_csv(ann / "mos.csv")
        bad = m[m["image_id"].isin(mos.loc[~mos["vetoed"].astype(bool) & (mos["mos"] <= 2), "image_id"])]
        poor = len(bad)
        worst = str(bad["class"].value_counts().idxmax()) if poor else None
    labelled = read_csv(ann / "masks.csv")["image_id"].nunique() if (ann / "masks.csv").exists() else 0
    ratings = len(read_csv(ann / "scores.csv")) if (ann / "scores.csv").exists() else 0
    target = params.models.target.name
    scored = {c: metrics[f"{c}.T.miou"] for c in params.models.competitors if f"{c}.T.miou" in metrics}
    best = max(scored.items(), key=lambda kv: kv[1]) if scored else None
    drawn = {}
    if labelled:
        ids = read_csv(ann / "masks.csv")["image_id"].unique()
        classes = params.dataset.class_list()
        drawn = drawing_cost({i: read_mask(ann / "masks" / f"{i}.png", classes) for i in ids})
    fine_tune = paths.METRICS / "finetune" / f"round_{key}.json"
    ft = read_json(fine_tune) if fine_tune.exists() else {}
    return RoundFacts(
        round=key,
        proposed=len(m),
        competitors=len(params.models.competitors),
        ratings=ratings,
        poor=poor,
        worst_class=worst,
        labelled=labelled,
        regions=drawn.get("regions"),
        object_share=drawn.get("object_share"),
        target_t=metrics.get(f"{target}.T.miou"),
        best_competitor_t=best,
        t0_before=ft.get("t0_miou_before"),
        t0_after=ft.get("t0_miou_after"),
    )


def provenance(params: Params) -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    params_hash = hashlib.sha256(Path("params.yaml").read_bytes()).hexdigest()[:16]
    prov = {
        "commit": commit,
        "params.yaml sha256": params_hash,
        "annotation backend": params.annotation.backend,
    }
    for key in params.rounds:
        ckpt = paths.target_checkpoint(key)
        if ckpt.exists():
            prov[f"target_{key}.pt sha256"] = sha256_file(ckpt)[:16]
    return prov
