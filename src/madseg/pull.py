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
import shutil
import subprocess

from madseg import paths
from madseg.config import Params

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
                raise SystemExit(
                    f"pull: round {round_key} has no {kind} tasks yet (no {receipt}): run `dvc repro`"
                )
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
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SystemExit(
            f"pull: `{' '.join(cmd[:2])} ...` stopped (exit {done.returncode}); the log above says why"
        )
