"""report: a static HTML page per round plus an index, from the pipeline's metrics, tables and overlays.

What the pages show is gathered and laid out by :mod:`madseg.report` (collect, build); this stage starts the
report folder afresh, so that no page or asset of an earlier run survives.
"""

from __future__ import annotations

import logging
import shutil

from madseg import paths
from madseg.config import Params
from madseg.report.build import write_report

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    out = paths.REPORT
    if out.exists():
        shutil.rmtree(out)
    (out / "assets").mkdir(parents=True)
    write_report(params, out)
    log.info("report written to %s", paths.REPORT_INDEX)
