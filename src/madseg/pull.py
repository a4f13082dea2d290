"""`madseg pull --round R`: re-pull a round's answers from the annotation server, then rerun only what depends on them.

The import stages run here, in this process, not through `dvc repro -f` (which forces every upstream stage too, and
deletes the stage's outputs before it runs). An import fetches and validates every answer before it writes a byte,
so a failed pull (server down, no token, answers incomplete) leaves the previous snapshot and the round's metrics as
they were. A successful one is recorded with `dvc commit`, and `dvc repro --downstream` reruns the stages that
depend on the new snapshot: never an upstream one.
"""

from __future__ import annotations

import importlib
import logging
import re
import shutil
import subprocess
import sys

from madseg import paths
from madseg.config import Params
from madseg.stops import StagesNotRun

log = logging.getLogger(__name__)

# which answers -> (the import stage, the export receipt it reads)
IMPORTS = {"ratings": ("import_scores", "weak_export.json"), "masks": ("import_masks", "pixel_export.json")}


def pull(params: Params, *, round_key: str, answers: str = "all") -> list[str]:
    """Re-import ``answers`` (ratings, masks or all) of round ``round_key`` in the project in the current folder
    (where every stage runs); returns the import stages recorded.

    Raises the import's expected stop (madseg.stops) before anything is written when the answers cannot be had.
    """
    if round_key not in params.rounds:
        raise SystemExit(f"pull: no round {round_key!r}; rounds: {', '.join(params.rounds)}")
    kinds = list(IMPORTS) if answers == "all" else [answers]
    pulled = []
    for kind in kinds:
        stage, receipt = IMPORTS[kind]
        if not (paths.annotations_dir(round_key) / receipt).exists():
            if answers == kind:
                raise SystemExit(f"pull: round {round_key} has no {kind} tasks yet (no {receipt}): run `dvc repro`")
            continue
        log.info("pulling round %s's %s", round_key, kind)
        importlib.import_module(f"madseg.stages.{stage}").run(params, round_key=round_key)
        pulled.append(f"{stage}@{round_key}")
    if not pulled:
        raise SystemExit(f"pull: round {round_key} has no tasks exported yet: run `dvc repro`")
    dvc = shutil.which("dvc") or "dvc"
    _run([dvc, "commit", "--force", "--quiet", *pulled])
    _run([dvc, "repro", "--downstream", *pulled])
    return pulled


def _run(cmd: list[str]) -> None:
    """Run a dvc command, its log passing through; a stage it ran that stopped for the user (e.g. new images of S
    that need masks: exit 3) ends the pull with that stage's own exit code."""
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as process:
        said = []
        for line in process.stderr:
            sys.stderr.write(line)
            said.append(line)
    if process.returncode != 0:
        stopped = re.findall(r"exited with (\d+)", "".join(said))
        raise StagesNotRun(
            f"pull: the answers are in and recorded; `{' '.join(cmd[:2])} ...` then stopped: the log above says why",
            int(stopped[0]) if stopped else 1,
        )
