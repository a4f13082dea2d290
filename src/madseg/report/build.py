"""The report's pages: the index (Table 1, curves, triage, science) and one page per round (scores,
candidates, ratings, S and T, failures before and after fine-tuning), written under the report folder with
their assets."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from madseg import paths
from madseg.config import Params
from madseg.io.atomic import read_json, write_bytes, write_text
from madseg.io.images import read_mask, read_rgb
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv
from madseg.metrics import image_miou
from madseg.render import comparison_overlay, png_bytes
from madseg.report.charts import bar_chart
from madseg.report.collect import copy_asset, provenance, round_facts, science_inputs, triage_cards
from madseg.report.pages import GalleryItem, Section, page, table1_html
from madseg.report.sections import (
    agreement_html,
    finetune_loss_html,
    manager_summary_html,
    most_changed,
    rater_stats,
    rater_table_html,
    round_curves_html,
    science_html,
    scores_table_html,
)
from madseg.report.triage import triage_html
from madseg.selection import SCORE_LEVELS

log = logging.getLogger(__name__)
GALLERY_SIZE = 12


def write_report(params: Params, out: Path) -> None:
    """The report of every round so far under ``out`` (an empty folder with an assets/ folder): index.html and
    round_<i>.html."""
    target = params.models.target.name
    models = [target, *params.models.competitors]
    rounds = {k: read_json(paths.round_metrics(k)) for k in params.rounds if paths.round_metrics(k).exists()}
    table = pd.read_csv(paths.METRICS / "table1.csv") if (paths.METRICS / "table1.csv").exists() else None
    nav = {"index": "index.html", **{f"round {k}": f"round_{k}.html" for k in rounds}}
    prov = provenance(params)

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
            triage_html(*triage_cards(params, out)),
            note="Each round's M, filtered and sorted here; the overlays show image | target | competitor. "
            "Click one for a large view.",
        ),
        Section("Science", "science", science_html(*science_inputs())),
    ]
    write_text(out / "index.html", page("madseg report", overview, nav, prov))
    for key in rounds:
        sections = _round_sections(params, key, rounds, out)
        write_text(out / f"round_{key}.html", page(f"madseg round {key}", sections, nav, prov))


def _round_sections(params: Params, key: str, rounds: dict, out: Path) -> list[Section]:
    ann, mining = paths.annotations_dir(key), paths.mining_dir(key)
    metrics = rounds[key]
    sections = [Section("In short", "summary", manager_summary_html(round_facts(params, key, metrics)))]
    models = [params.models.target.name, *params.models.competitors]
    note = (
        f"T has {metrics.get('T_size', '?')} images: the bootstrap interval shows how little a test set this "
        "small can separate models."
    )
    sections.append(Section("Scores this round", "scores", scores_table_html(metrics, models), note=note))

    if (mining / "candidates.csv").exists():
        cands = read_csv(mining / "candidates.csv")
        top = (
            cands.sort_values(["rank", "distance"], ascending=[True, False])
            .drop_duplicates("image_id")
            .head(GALLERY_SIZE)
        )
        items = [
            GalleryItem(
                copy_asset(mining / "overlays" / "report" / f"{r.image_id}.png", out, key, "candidates"),
                f"{r.competitor} · {r['class']} · dir {r.direction} · d={r.distance:.2f} · rank {r['rank']}",
            )
            for _, r in top.iterrows()
            if (mining / "overlays" / "report" / f"{r.image_id}.png").exists()
        ]
        sections.append(Section("Candidates from M (image | target | competitor)", "candidates", gallery=items))

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
        agree_text = agreement_html(read_json(agreement).get("krippendorff_alpha_ordinal"))
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
                GalleryItem(copy_asset(mining / "overlays" / "rater" / f"{i}.png", out, key, table_name[0]), i)
                for i in ids
                if (mining / "overlays" / "rater" / f"{i}.png").exists()
            ]
            sections.append(Section(f"{name}: image | target's prediction", table_name[0].lower(), gallery=items))

    sections.extend(_before_after(params, key, out))
    return sections


def _before_after(params: Params, key: str, out: Path) -> list[Section]:
    """Fig. 4/5 of the paper: T images before/after fine-tuning (with their labels), unseen pool images where
    the fine-tune changed the prediction most, and the worst remaining failures of this round's target on
    T."""
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
    items = [
        _render(
            out,
            key,
            "worst",
            i,
            index,
            [("target", before_t[i]), ("label", truth[i])],
            classes,
            f"mIoU {image_miou(truth[i], before_t[i], classes.num_classes):.2f}",
        )
        for i in worst[:GALLERY_SIZE]
    ]
    sections.append(Section(f"Worst failures of f_t^({key}) on T", "worst", gallery=items))
    nxt = params.finetunes.get(key)
    if nxt is None or not paths.target_predictions(nxt.next).exists():
        return sections
    after = PredictionStore(paths.target_predictions(nxt.next))
    after_t = after.read_maps(test_ids)
    items = [
        _render(
            out,
            key,
            "before_after",
            i,
            index,
            [(f"f_t^({key})", before_t[i]), (f"f_t^({nxt.next})", after_t[i]), ("label", truth[i])],
            classes,
            f"{image_miou(truth[i], before_t[i], classes.num_classes):.2f} -> "
            f"{image_miou(truth[i], after_t[i], classes.num_classes):.2f}",
        )
        for i in test_ids[:GALLERY_SIZE]
    ]
    sections.append(
        Section(
            f"T images before / after fine-tuning (f_t^({key}) -> f_t^({nxt.next}))",
            "before-after",
            gallery=items,
        )
    )
    # unseen pool images (never labelled) where the fine-tune changed the prediction most
    labelled = set(read_csv(ann / "S_all.csv")["image_id"]) | set(test_ids)
    unseen = most_changed(before.stats(), after.stats(), exclude=labelled, n=GALLERY_SIZE)
    maps_b, maps_a = before.read_maps(unseen), after.read_maps(unseen)
    items = [
        _render(
            out,
            key,
            "unseen",
            i,
            index,
            [(f"f_t^({key})", maps_b[i]), (f"f_t^({nxt.next})", maps_a[i])],
            classes,
            i,
        )
        for i in unseen
    ]
    sections.append(
        Section(
            "Unseen pool images: before / after",
            "unseen",
            gallery=items,
            note="Pool images nobody labelled, where the fine-tune changed the predicted areas most.",
        )
    )
    return sections


def _render(out: Path, key: str, kind: str, image: str, index, maps, classes, caption: str) -> GalleryItem:
    rel = Path("assets") / f"round_{key}" / kind / f"{image}.png"
    picture = comparison_overlay(read_rgb(index.loc[image, "path"]), maps, classes, caption)
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out / rel, png_bytes(picture))
    return GalleryItem(rel.as_posix(), caption)
