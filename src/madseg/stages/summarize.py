"""summarize: Table 1 across all evaluated rounds (CSV + Markdown) and metrics/summary.json (the latest round)."""

from __future__ import annotations

import logging

from madseg import paths
from madseg.config import Params
from madseg.evaluation import table1, table_markdown
from madseg.io.atomic import read_json, write_json, write_text
from madseg.io.tables import write_csv

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    rounds = {key: read_json(paths.round_metrics(key)) for key in params.rounds if paths.round_metrics(key).exists()}
    if not rounds:
        raise FileNotFoundError(f"no round metrics under {paths.round_metrics('0').parent}: run evaluate first")
    models = [params.models.target.name, *params.models.competitors]
    table = table1(rounds, models)
    write_csv(paths.METRICS / "table1.csv", table)
    write_text(paths.METRICS / "table1.md", table_markdown(table))
    latest = max(rounds, key=int)
    # fixed keys (no round number in them) so `dvc metrics diff` between two rounds' commits lines them up
    summary = {"round": int(latest), **rounds[latest]}
    write_json(paths.METRICS / "summary.json", summary)
    log.info("Table 1 (mIoU points):\n%s", table_markdown(table))
