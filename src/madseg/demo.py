"""`madseg demo` (the README's first command): run the whole loop with `dvc repro` and say where results are.

`dvc repro` runs one stage at a time: DVC holds one lock per workspace. The pretraining stages do not depend on
each other, and on a few CPU cores two 1-thread trainings get through 1.75x the work of one 2-thread training
(small models scale poorly across threads). So the demo first brings the stages of ``SIDE_BY_SIDE`` up to date in
parallel processes and records them with `dvc commit`, as `dvc repro` would have, then leaves the rest to
`dvc repro`. A model's weights depend on ``pretrain.threads`` (params.yaml), never on how many trainings ran at
once, so `dvc repro -f pretrain@unet` rebuilds the same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from madseg import paths

log = logging.getLogger(__name__)

SIDE_BY_SIDE = ("pretrain_target", "pretrain")  # independent stages (a foreach group names all its items)


def main(project: Path = Path("."), jobs: int | None = None) -> None:
    if not (project / "dvc.yaml").exists():
        raise SystemExit(f"{project.resolve()}: no dvc.yaml here; run `make demo` from the project root")
    dvc = shutil.which("dvc")
    if dvc is None:
        raise SystemExit("dvc is not on PATH: run `make demo`, which uses the project's virtualenv")
    start = time.monotonic()
    run_side_by_side(project, SIDE_BY_SIDE, jobs=jobs or os.cpu_count() or 1, dvc=dvc)
    _check([dvc, "repro"], project)
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


def run_side_by_side(project: Path, targets: Sequence[str], *, jobs: int, dvc: str = "dvc") -> list[str]:
    """Bring the stages named by ``targets`` up to date, up to ``jobs`` at a time, as `dvc repro` would.

    Their upstream stages are reproduced first (one `dvc repro`); each stale stage's command then runs in its
    own process, and the stages that succeeded are recorded with `dvc commit` (also when another failed).
    Returns the names of the stages that ran. The targets must not depend on each other.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        stages = [stage for target in targets for stage in repo.stage.collect(target)]
        upstream = {dep for stage in stages for dep in nx.descendants(repo.index.graph, stage)}
    names = [stage.addressing for stage in stages]
    if tangled := sorted(stage.addressing for stage in upstream & set(stages)):
        raise ValueError(f"side-by-side stages depend on each other: {tangled}")
    if upstream:
        _check([dvc, "repro", *sorted(stage.addressing for stage in upstream)], project)
    with Repo(str(project)) as repo:  # afresh: the upstream run rewrote dvc.lock
        stale = [stage for name in names for stage in repo.stage.collect(name) if repo.status(targets=[name])]
    if not stale:
        return []
    log.info("running %d stages, %d at a time: %s", len(stale), jobs, ", ".join(s.addressing for s in stale))
    env = {**os.environ, "TQDM_DISABLE": "1"}  # interleaved progress bars would be noise

    def run_one(stage) -> int:
        began = time.monotonic()
        code = subprocess.run(stage.cmd, shell=True, cwd=project, env=env).returncode
        log.info("%s %s in %.0f s", stage.addressing, "finished" if code == 0 else f"FAILED ({code})",
                 time.monotonic() - began)  # fmt: skip
        return code

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(run_one, stale))
    done = [stage.addressing for stage, code in zip(stale, codes, strict=True) if code == 0]
    if done:
        _check([dvc, "commit", "--force", "--quiet", *done], project)
    if failed := [stage.addressing for stage, code in zip(stale, codes, strict=True) if code != 0]:
        raise SystemExit(f"stage(s) failed: {', '.join(failed)}; the log above says why")
    return done


def _check(cmd: list[str], project: Path) -> None:
    result = subprocess.run(cmd, cwd=project)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:2])} failed (exit {result.returncode}); the log above names the stage"
        )
