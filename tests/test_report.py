"""The report and the `dvc plots show` page, opened in a real headless Chromium with no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.browser import offline_page, visit
from tests.project import run

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def test_report_renders_offline_with_every_image(tiny_project):
    index = tiny_project / "metrics/report/index.html"
    assert index.exists()
    page = visit(index, ARTIFACTS / "report_index.png")
    assert page.external_requests == []
    assert {"madseg report", "Table 1: mIoU on T0 and on each round's MAD test set", "Provenance"} <= set(page.headings)
    assert page.svgs >= 2
    round_page = visit(tiny_project / "metrics/report/round_0.html", ARTIFACTS / "report_round_0.png")
    assert round_page.external_requests == [] and round_page.errors == []
    assert round_page.images > 0 and round_page.broken_images == []
    assert round_page.headings[1] == "In short"  # the manager's three sentences come first
    assert "regions drawn" in (tiny_project / "metrics/report/round_0.html").read_text()  # what the masks cost
    for section in (
        "Candidates from M (image | target | competitor)",
        "T (test set): image | target's prediction",
    ):
        assert section in round_page.headings


def test_dvc_plots_page_renders_offline(tiny_project):
    out = tiny_project / "plots_html"
    run(["dvc", "plots", "show", "-o", str(out)], tiny_project)
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in html
    page = visit(out / "index.html", ARTIFACTS / "dvc_plots.png", wait_for="svg, canvas")
    assert page.external_requests == [] and page.errors == []


def test_study_table_shows_each_strategy_and_mads_margins():
    from madseg.report.sections import study_table_html

    study = {
        "seeds": [0, 1, 2],
        "d_eval_miou.mad": 80.0,
        "d_eval_miou.entropy": 78.5,
        "d_eval_miou.random": 79.0,
        "mad_minus_entropy": 1.5,
        "mad_minus_entropy_sd": 0.25,
        "mad_minus_random": 1.0,
        "mad_minus_random_sd": None,
        "competition.mad_minus_entropy": 4.0,
    }
    html = study_table_html(study)
    assert html.count("<tr>") == 4  # a header and three strategies
    assert "+1.50 ± 0.25" in html and "+1.00<" in html and "+4.0" in html and "[0, 1, 2]" in html


def test_metrics_are_shown_with_at_most_three_decimals():
    from madseg.report.sections import readable, science_html

    assert [readable(v) for v in (0.7838009685857467, 2.0, 12, None, float("nan"))] == [
        "0.784",
        "2",
        "12",
        "—",
        "—",
    ]
    html = science_html(None, {}, {"corner_miou_gain": 6.788299674994825, "t0_drop": None})
    assert "6.788<" in html and "6.7882" not in html and "—" in html


def test_the_fine_tuning_chart_has_one_series_per_grid_candidate():
    from madseg.report.sections import finetune_loss_html

    curve = pd.DataFrame(
        {
            "candidate_lr": [0.003] * 3 + [0.01] * 3,
            "epoch": [1, 2, 3] * 2,
            "loss": [0.3, 0.2, 0.1, 0.4, 0.2, 0.1],
            "lr": [0.002, 0.001, 0.0] * 2,
        }
    )
    svg = finetune_loss_html(curve)
    assert svg.count("<polyline") == 2 and ">lr 0.003<" in svg and ">lr 0.01<" in svg and ">lr 0<" not in svg


def test_triage_gallery_filters_and_enlarges_in_chromium(tiny_project):
    rounds = sorted((tiny_project / "data/mining").glob("round_*/M.csv"))
    m = pd.concat([pd.read_csv(p, dtype={"image_id": str}).assign(round=p.parent.name[6:]) for p in rounds])
    mos = pd.concat(
        [
            pd.read_csv(p, dtype={"image_id": str}).assign(round=p.parent.name[6:])
            for p in sorted((tiny_project / "annotations").glob("round_*/mos.csv"))
        ]
    )
    rated = m.merge(mos[~mos["vetoed"]], on=["image_id", "round"])
    cls = m["class"].value_counts().index[0]
    with offline_page(tiny_project / "metrics/report/index.html") as (page, external, errors):

        def visible() -> int:
            return page.eval_on_selector_all(".triage figure", "els => els.filter(e => !e.hidden).length")

        assert visible() == len(m) and page.text_content("#f-count") == f"{len(m)} of {len(m)} images"
        page.select_option("#f-class", cls)
        assert visible() == int((m["class"] == cls).sum())
        page.select_option("#f-round", "0")
        assert visible() == int(((m["class"] == cls) & (m["round"] == "0")).sum())
        page.select_option("#f-class", "")
        page.select_option("#f-round", "")
        page.fill("#f-mos", "2")
        assert visible() == int((rated["mos"] <= 2).sum()) > 0
        page.select_option("#f-sort", "mos")
        first = page.eval_on_selector(".triage figure:not([hidden])", "e => parseFloat(e.dataset.mos)")
        assert first == rated["mos"].min()
        page.click(".triage figure:not([hidden])")
        assert page.eval_on_selector("dialog.large", "d => d.open")
        assert page.eval_on_selector("dialog.large img", "i => i.complete && i.naturalWidth > 0")
        page.screenshot(path=str(ARTIFACTS / "report_triage.png"))
        assert external == [] and errors == []


def test_rater_table_recovers_planted_biases_and_inconsistencies():
    from madseg.report.sections import rater_stats

    rng = np.random.default_rng(0)
    quality = rng.uniform(1.5, 4.5, 400)
    planted = {"a": (0.0, 0.3), "b": (0.5, 0.6), "c": (-0.5, 0.4)}
    rows = [
        {"image_id": f"{i:04d}", "annotator": name, "score": q + bias + rng.normal(0, sd)}
        for i, q in enumerate(quality)
        for name, (bias, sd) in planted.items()
    ]
    rows.append({"image_id": "veto", "annotator": "a", "score": float("nan")})
    stats = rater_stats(pd.DataFrame(rows)).set_index("annotator")
    for name, (bias, sd) in planted.items():
        assert abs(stats.at[name, "bias"] - bias) < 0.1 and abs(stats.at[name, "inconsistency"] - sd) < 0.1
        assert stats.at[name, "ratings"] == 400 and stats.at[name, "agreement"] > 0.8


def test_the_changes_of_a_fine_tune_are_ranked_and_the_round_scores_shown():
    import pandas as pd

    from madseg.report.sections import agreement_html, most_changed, scores_table_html

    before = pd.DataFrame({"id": ["a", "b", "c", "d"], "area_bg": [0.9, 0.5, 0.7, 1.0], "area_x": [0.1, 0.5, 0.3, 0]})
    after = pd.DataFrame({"id": ["a", "b", "c", "d"], "area_bg": [0.9, 0.9, 0.5, 0.6], "area_x": [0.1, 0.1, 0.5, 0.4]})
    assert most_changed(before, after, n=3) == ["b", "d", "c"]  # ties kept in the pool's order
    assert most_changed(before, after, exclude={"b"}, n=2) == ["d", "c"]
    html = scores_table_html({"f.T0.miou": 0.5, "f.T.miou": 0.25}, ["f", "g"])
    assert "<td>f</td><td>50.0</td><td>25.0</td>" in html and "<td>g</td><td>nan</td>" in html
    assert "<b>0.123</b>" in agreement_html(0.12345) and "<b>None</b>" in agreement_html(None)
