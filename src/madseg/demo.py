"""`madseg demo` (the README's first command): run the whole loop as `dvc repro` would and say where results are.

`dvc repro` runs one stage at a time: DVC holds one lock per workspace. Two stretches of the graph hold stages
that do not depend on each other: the models' pretraining and pool inference (``MODELS``), and the evaluations,
export and validity check that follow the rounds (``RESULTS``). Small models use a second thread poorly (on 2
cores PSPNet and LR-ASPP train almost as fast on one thread as on two), so the demo brings each stretch up to
date in parallel processes and records it with `dvc commit`, as `dvc repro` would have; `dvc repro` runs what
lies between (the rounds, one stage after the other). Weights depend on ``pretrain.threads`` (params.yaml) and
predictions on no thread count (a forward pass is bitwise the same on 1 and 2 threads), never on how many
stages ran at once: `dvc repro -f pretrain@unet` rebuilds the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from madseg import paths

log = logging.getLogger(__name__)

# a foreach group names all its items; round 0's target inference needs only the pretrained target
MODELS = ("pretrain_target", "pretrain", "infer", "infer_target@0")
RESULTS = ("evaluate", "export", "summarize", "validity", "report")  # validity reads every evaluate


def main(project: Path = Path("."), jobs: int | None = None) -> None:
    if not (project / "dvc.yaml").exists():
        raise SystemExit(f"{project.resolve()}: no dvc.yaml here; run `make demo` from the project root")
    dvc = shutil.which("dvc")
    if dvc is None:
        raise SystemExit("dvc is not on PATH: run `make demo`, which uses the project's virtualenv")
    start = time.monotonic()
    for stretch in (MODELS, RESULTS):  # RESULTS' upstream, reproduced first, is every round
        run_side_by_side(project, stretch, jobs=jobs or os.cpu_count() or 1, dvc=dvc)
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

    Their upstream stages outside ``targets`` are reproduced first (one `dvc repro`). A stage starts once the
    targets it depends on have finished, and runs if DVC then finds it changed (so a retrained model that came
    out bit for bit the same does not rerun its inference). Each runs its own command in its own process and is
    recorded with `dvc commit` as soon as it succeeds, also when another failed. Returns the names of those run.
    """
    with contextlib.chdir(project):  # DVC resolves stage names against the working directory
        return _run_side_by_side(targets, jobs=jobs, dvc=dvc)


def _run_side_by_side(targets: Sequence[str], *, jobs: int, dvc: str) -> list[str]:
    import networkx as nx
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        stages = {stage.addressing: stage for target in targets for stage in repo.stage.collect(target)}
        needs = {name: {dep.addressing for dep in graph.successors(stage)} & stages.keys()
                 for name, stage in stages.items()}  # fmt: skip
        upstream = {dep for stage in stages.values() for dep in nx.descendants(graph, stage)}
        upstream = {stage for stage in upstream if stage.addressing not in stages}
        # `dvc repro X` brings X's upstream along, and DVC collects the graph once per name given: name the ends
        ends = upstream - {dep for stage in upstream for dep in nx.descendants(graph, stage)}
    if ends:
        _check([dvc, "repro", *sorted(stage.addressing for stage in ends)])
    # small models use few threads well: OpenMP threads that wait should sleep, not spin on a shared core
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}

    def run_one(name: str) -> int:
        began = time.monotonic()
        code = subprocess.run(stages[name].cmd, shell=True, env=env).returncode
        log.info(
            "%s %s in %.0f s", name, "finished" if code == 0 else f"FAILED ({code})", time.monotonic() - began
        )
        return code

    waiting, running, settled = list(stages), {}, {}  # settled: name -> ran | up to date | failed | blocked
    with Repo() as repo, ThreadPoolExecutor(jobs) as pool:
        while waiting or running:
            for name in [n for n in waiting if needs[n] <= settled.keys()]:
                if len(running) == jobs:
                    break
                waiting.remove(name)
                if any(settled[dep] in ("failed", "blocked") for dep in needs[name]):
                    settled[name] = "blocked"
                elif repo.status(targets=[name]):  # asked now: what it depends on may just have changed
                    running[pool.submit(run_one, name)] = name
                else:
                    settled[name] = "up to date"
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    settled[name] = "ran" if future.result() == 0 and _commit(repo, name) else "failed"
    if broken := [f"{name} ({state})" for name, state in settled.items() if state in ("failed", "blocked")]:
        raise SystemExit(f"stages not run to the end: {', '.join(broken)}; the log above says why")
    return [name for name in stages if settled[name] == "ran"]


def _commit(repo, name: str) -> bool:
    """Record a stage that has just run, as `dvc commit --force` would (at once: an interrupted demo keeps it)."""
    from dvc.exceptions import DvcException

    try:
        repo.commit(name, force=True)
    except DvcException as e:
        log.error("%s ran but cannot be recorded: %s", name, e)
        return False
    return True


def _check(cmd: list[str]) -> None:
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:2])} failed (exit {result.returncode}); the log above names the stage"
        )
