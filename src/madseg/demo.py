"""`madseg demo` (the README's first command): run the whole loop with `dvc repro` and say where results are."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from madseg import paths

log = logging.getLogger(__name__)


def main(project: Path = Path(".")) -> None:
    if not (project / "dvc.yaml").exists():
        raise SystemExit(f"{project.resolve()}: no dvc.yaml here; run `make demo` from the project root")
    dvc = shutil.which("dvc")
    if dvc is None:
        raise SystemExit("dvc is not on PATH: run `make demo`, which uses the project's virtualenv")
    start = time.monotonic()
    result = subprocess.run([dvc, "repro"], cwd=project)
    if result.returncode != 0:
        raise SystemExit(f"dvc repro failed (exit {result.returncode}); the log above names the stage")
    minutes = (time.monotonic() - start) / 60
    table = project / paths.METRICS / "table1.md"
    out = sys.stdout
    out.write(f"\nmadseg demo finished in {minutes:.1f} min (stages already up to date are skipped).\n\n")
    if table.exists():
        out.write("Table 1 — mIoU (points) on T0 and on each round's MAD test set T^(i+1):\n\n")
        out.write(table.read_text() + "\n")
    for what, where in (
        ("report", paths.REPORT_INDEX),
        ("metrics", paths.METRICS / "summary.json"),
        ("per-round metrics", paths.METRICS / "rounds"),
        ("final target (checkpoint + TorchScript)", paths.EXPORT),
        ("annotation snapshots", Path("annotations")),
    ):
        if (project / where).exists():
            out.write(f"  {what:<42} {where}\n")
    out.write("\nCompare rounds: dvc metrics show; plots offline: see README (dvc plots).\n")
