"""The report and the `dvc plots show` page, opened in a real headless Chromium with no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import visit
from tests.project import run

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def test_report_renders_offline_with_every_image(tiny_project):
    index = tiny_project / "metrics/report/index.html"
    assert index.exists()
    page = visit(index, ARTIFACTS / "report_index.png")
    assert page.external_requests == []
    assert {"madseg report", "Table 1: mIoU on T0 and on each round's MAD test set", "Provenance"} <= set(
        page.headings
    )
    assert page.svgs >= 2
    round_page = visit(tiny_project / "metrics/report/round_0.html", ARTIFACTS / "report_round_0.png")
    assert round_page.external_requests == [] and round_page.errors == []
    assert round_page.images > 0 and round_page.broken_images == []
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
