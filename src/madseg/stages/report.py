"""report: a static HTML page per round plus an index, from the pipeline's metrics, tables and overlays."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from madseg import paths
from madseg.config import Params
from madseg.io.atomic import read_json, sha256_file, write_bytes, write_text
from madseg.io.images import read_mask, read_rgb
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv
from madseg.metrics import image_miou
from madseg.render import comparison_overlay, png_bytes
from madseg.report.charts import bar_chart
from madseg.report.pages import GalleryItem, Section, page, table1_html
from madseg.report.sections import (
    RoundFacts,
    finetune_loss_html,
    manager_summary_html,
    rater_stats,
    rater_table_html,
    round_curves_html,
    science_html,
)
from madseg.report.triage import Card, triage_html
from madseg.selection import SCORE_LEVELS

log = logging.getLogger(__name__)
GALLERY_SIZE = 12


def run(params: Params) -> None:
    out = paths.REPORT
    if out.exists():
        shutil.rmtree(out)
    (out / "assets").mkdir(parents=True)
    target = params.models.target.name
    models = [target, *params.models.competitors]
    rounds = {k: read_json(paths.round_metrics(k)) for k in params.rounds if paths.round_metrics(k).exists()}
    table = pd.read_csv(paths.METRICS / "table1.csv") if (paths.METRICS / "table1.csv").exists() else None
    nav = {"index": "index.html", **{f"round {k}": f"round_{k}.html" for k in rounds}}
    provenance = _provenance(params)

    overview = [
        Section(
            "Table 1: mIoU on T0 and on each round's MAD test set",
            "table1",
            table1_html(table, target) if table is not None else '<p class="empty">no rounds evaluated</p>',
            note="Points of mIoU. The target's row is highlighted; a T column is green where it rose since "
            "the previous round's T column and red where it fell.",
        ),
        Section("mIoU per model across rounds", "curves", round_curves_html(rounds, models, target)),
        Section(
            "Triage: every proposed image",
            "triage",
            triage_html(*_triage_cards(params, out)),
            note="Each round's M, filtered and sorted here; the overlays show image | target | competitor. "
            "Click one for a large view.",
        ),
        Section("Science", "science", _science()),
    ]
    write_text(out / "index.html", page("madseg report", overview, nav, provenance))
    for key in rounds:
        sections = _round_sections(params, key, rounds, out)
        write_text(out / f"round_{key}.html", page(f"madseg round {key}", sections, nav, provenance))
    log.info("report written to %s", paths.REPORT_INDEX)


def _triage_cards(params: Params, out: Path) -> tuple[list[Card], dict[str, list[str]]]:
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
            cards.append(Card(
                image_id=image, round=key, image=_copy(overlay, out, key, "m"), cls=str(r["class"]),
                competitor=str(r["competitor"]), direction=str(r["direction"]), distance=float(r["distance"]),
                mos=float(mos.at[image, "mos"]) if rated else None, slices=tuple(members.get(image, ())),
            ))  # fmt: skip
    return cards, rules


def _science() -> str:
    stability = sorted((paths.METRICS / "stability").glob("round_*.csv"))
    study, validity = paths.METRICS / "study.json", paths.METRICS / "validity.json"
    return science_html(
        pd.concat([pd.read_csv(p) for p in stability]) if stability else None,
        read_json(study) if study.exists() else {},
        read_json(validity) if validity.exists() else {},
    )


def _copy(src: Path, out: Path, key: str, kind: str) -> str:
    rel = Path("assets") / f"round_{key}" / kind / src.name
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out / rel)
    return rel.as_posix()


def _round_facts(params: Params, key: str, metrics: dict) -> RoundFacts:
    ann, mining = paths.annotations_dir(key), paths.mining_dir(key)
    m = (
        read_csv(mining / "M.csv")
        if (mining / "M.csv").exists()
        else pd.DataFrame(columns=["image_id", "class"])
    )
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
    fine_tune = paths.METRICS / "finetune" / f"round_{key}.json"
    ft = read_json(fine_tune) if fine_tune.exists() else {}
    return RoundFacts(round=key, proposed=len(m), competitors=len(params.models.competitors), ratings=ratings,
                      poor=poor, worst_class=worst, labelled=labelled, target_t=metrics.get(f"{target}.T.miou"),
                      best_competitor_t=best, t0_before=ft.get("t0_miou_before"), t0_after=ft.get("t0_miou_after"))  # fmt: skip


def _round_sections(params: Params, key: str, rounds: dict, out: Path) -> list[Section]:
    ann, mining = paths.annotations_dir(key), paths.mining_dir(key)
    metrics = rounds[key]
    sections = [Section("In short", "summary", manager_summary_html(_round_facts(params, key, metrics)))]
    rows = "".join(
        f"<tr><td>{m}</td><td>{100 * metrics.get(f'{m}.T0.miou', float('nan')):.1f}</td>"
        f"<td>{100 * metrics.get(f'{m}.T.miou', float('nan')):.1f}</td>"
        f"<td>[{100 * metrics.get(f'{m}.T.miou_ci_low', float('nan')):.1f}, "
        f"{100 * metrics.get(f'{m}.T.miou_ci_high', float('nan')):.1f}]</td>"
        f"<td>{100 * metrics.get(f'{m}.T.image_miou', float('nan')):.1f}</td></tr>"
        for m in [params.models.target.name, *params.models.competitors]
    )
    sections.append(Section(
        "Scores this round", "scores",
        '<table class="t1"><thead><tr><th>model</th><th>T0</th><th>T</th><th>T 95 % CI</th><th>T per-image</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>",
        note=f"T has {metrics.get('T_size', '?')} images: the bootstrap interval shows how little a test set this "
             "small can separate models.",
    ))  # fmt: skip

    if (mining / "candidates.csv").exists():
        cands = read_csv(mining / "candidates.csv")
        top = (
            cands.sort_values(["rank", "distance"], ascending=[True, False])
            .drop_duplicates("image_id")
            .head(GALLERY_SIZE)
        )
        items = [
            GalleryItem(_copy(mining / "overlays" / "report" / f"{r.image_id}.png", out, key, "candidates"),
                        f"{r.competitor} · {r['class']} · dir {r.direction} · d={r.distance:.2f} · rank {r['rank']}")
            for _, r in top.iterrows() if (mining / "overlays" / "report" / f"{r.image_id}.png").exists()
        ]  # fmt: skip
        sections.append(
            Section("Candidates from M (image | target | competitor)", "candidates", gallery=items)
        )

    charts, raters = [], ""
    if (ann / "scores.csv").exists():
        scores = read_csv(ann / "scores.csv")
        raters = "<h3>Raters</h3>" + rater_table_html(rater_stats(scores))
        hist = {name: int((scores["score"] == n + 1).sum()) for n, name in enumerate(SCORE_LEVELS)}
        hist["out of domain"] = int(scores["out_of_domain"].astype(bool).sum())
        charts.append(bar_chart(hist, title="Ratings of M", y_label="ratings"))
    agreement = paths.METRICS / "annotation" / f"agreement_round_{key}.json"
    agree_text = ""
    if agreement.exists():
        alpha = read_json(agreement).get("krippendorff_alpha_ordinal")
        agree_text = f"<p>Annotator agreement (Krippendorff's α, ordinal): <b>{alpha if alpha is None else f'{alpha:.3f}'}</b></p>"
    curve = paths.METRICS / "finetune" / f"round_{key}_curve.csv"
    if curve.exists():
        charts.append(finetune_loss_html(pd.read_csv(curve)))
    sections.append(
        Section(
            "Ratings, agreement and fine-tuning",
            "humans",
            agree_text + raters + f'<div class="charts">{"".join(charts)}</div>',
        )
    )

    for name, table_name in (("S (fine-tuning set)", "S.csv"), ("T (test set)", "T.csv")):
        if (ann / table_name).exists():
            ids = read_csv(ann / table_name)["image_id"].head(GALLERY_SIZE)
            items = [
                GalleryItem(_copy(mining / "overlays" / "rater" / f"{i}.png", out, key, table_name[0]), i)
                for i in ids if (mining / "overlays" / "rater" / f"{i}.png").exists()
            ]  # fmt: skip
            sections.append(
                Section(f"{name}: image | target's prediction", table_name[0].lower(), gallery=items)
            )

    sections.extend(_before_after(params, key, out))
    return sections


def _before_after(params: Params, key: str, out: Path) -> list[Section]:
    """Fig. 4/5 of the paper: T images before/after fine-tuning (with their labels), unseen pool images where
    the fine-tune changed the prediction most, and the worst remaining failures of this round's target on T."""
    classes = params.dataset.class_list()
    ann = paths.annotations_dir(key)
    if not (ann / "T.csv").exists() or not paths.target_predictions(key).exists():
        return []
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).set_index("id")
    test_ids = read_csv(ann / "T.csv")["image_id"].tolist()
    truth = {i: read_mask(ann / "masks" / f"{i}.png", classes) for i in test_ids}
    before = PredictionStore(paths.target_predictions(key))
    sections = []
    before_t = before.read_maps(test_ids)
    worst = sorted(test_ids, key=lambda i: (image_miou(truth[i], before_t[i], classes.num_classes), i))
    items = [_render(out, key, "worst", i, index, [("target", before_t[i]), ("label", truth[i])], classes,
                     f"mIoU {image_miou(truth[i], before_t[i], classes.num_classes):.2f}") for i in worst[:GALLERY_SIZE]]  # fmt: skip
    sections.append(Section(f"Worst failures of f_t^({key}) on T", "worst", gallery=items))
    nxt = params.finetunes.get(key)
    if nxt is None or not paths.target_predictions(nxt.next).exists():
        return sections
    after = PredictionStore(paths.target_predictions(nxt.next))
    after_t = after.read_maps(test_ids)
    items = [_render(out, key, "before_after", i, index,
                     [(f"f_t^({key})", before_t[i]), (f"f_t^({nxt.next})", after_t[i]), ("label", truth[i])], classes,
                     f"{image_miou(truth[i], before_t[i], classes.num_classes):.2f} -> "
                     f"{image_miou(truth[i], after_t[i], classes.num_classes):.2f}")
             for i in test_ids[:GALLERY_SIZE]]  # fmt: skip
    sections.append(Section(f"T images before / after fine-tuning (f_t^({key}) -> f_t^({nxt.next}))", "before-after",
                            gallery=items))  # fmt: skip
    # unseen pool images (never labelled) where the fine-tune changed the prediction most
    labelled = set(read_csv(ann / "S_all.csv")["image_id"]) | set(test_ids)
    stats_before, stats_after = before.stats().set_index("id"), after.stats().set_index("id")
    area_cols = [c for c in stats_before.columns if c.startswith("area_")]
    change = (
        (stats_before[area_cols] - stats_after[area_cols])
        .abs()
        .sum(axis=1)
        .drop(labels=list(labelled), errors="ignore")
    )
    unseen = change.sort_values(ascending=False, kind="stable").index[:GALLERY_SIZE].tolist()
    maps_b, maps_a = before.read_maps(unseen), after.read_maps(unseen)
    items = [_render(out, key, "unseen", i, index, [(f"f_t^({key})", maps_b[i]), (f"f_t^({nxt.next})", maps_a[i])],
                     classes, i) for i in unseen]  # fmt: skip
    sections.append(Section("Unseen pool images: before / after", "unseen", gallery=items,
                            note="Pool images nobody labelled, where the fine-tune changed the predicted areas most."))  # fmt: skip
    return sections


def _render(out: Path, key: str, kind: str, image: str, index, maps, classes, caption: str) -> GalleryItem:
    rel = Path("assets") / f"round_{key}" / kind / f"{image}.png"
    picture = comparison_overlay(read_rgb(index.loc[image, "path"]), maps, classes, caption)
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out / rel, png_bytes(picture))
    return GalleryItem(rel.as_posix(), caption)


def _provenance(params: Params) -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
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
