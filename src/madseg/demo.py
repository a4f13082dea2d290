"""`madseg demo` (the README's first command): bring the whole pipeline up to date as `dvc repro` would, on
every core, and say where the results are.

`dvc repro` runs one stage at a time (DVC holds one lock per workspace), each in a fresh interpreter that imports
torch, segmentation-models-pytorch and timm again: about 6 s on these cores, and 2 s more to tear it down. The
demo's runner instead
- runs stages that do not depend on each other side by side, up to ``jobs`` at a time, those heading the longest
  chain of stages first: the models' pretraining, then each round's chain, while the evaluations, the export and
  the validity check fill the cores that the rounds' small stages leave idle;
- starts `madseg run ...` commands as processes forked from one that has imported the stage modules once (as
  plain processes until it is ready);
- removes a stage's outputs before running it and records them in dvc.lock as soon as it finishes, as `dvc repro`
  does, so an interrupted demo keeps what it finished and a later `dvc repro` has nothing to do.

Weights depend on ``pretrain.threads`` / ``finetune.threads`` (params.yaml) and predictions on no thread count (a
forward pass is bitwise the same on 1 and 2 threads), never on how many stages ran at once nor on how a stage's
process was started: `dvc repro -f -s pretrain@unet` rebuilds the bytes the demo made (a test pins it).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from multiprocessing import forkserver
from pathlib import Path

from madseg import paths
from madseg.io.atomic import write_text
from madseg.stops import StagesNotRun
from madseg.workers import stop_with_parent

log = logging.getLogger(__name__)

# small models use few threads well: OpenMP threads that wait should sleep, not spin on a core another stage needs
STAGE_ENV = {"TQDM_DISABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def main(project: Path = Path("."), jobs: int | None = None) -> None:
    if not (project / "dvc.yaml").exists():
        raise SystemExit(f"{project.resolve()}: no dvc.yaml here; run `make demo` from the project root")
    dvc = shutil.which("dvc")
    if dvc is None:
        raise SystemExit("dvc is not on PATH: run `make demo`, which uses the project's virtualenv")
    start = time.monotonic()
    run_side_by_side(project, None, jobs=jobs or os.cpu_count() or 1, dvc=dvc)
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


def run_side_by_side(
    project: Path, targets: Sequence[str] | None, *, jobs: int, dvc: str = "dvc", upstream: bool = False
) -> list[str]:
    """Bring the stages named by ``targets`` (None: every stage) up to date, up to ``jobs`` at a time.

    With ``upstream`` their upstream stages run side by side too; else those outside ``targets`` are reproduced
    first (one `dvc repro`). A stage starts once the
    targets it depends on have finished, and runs if DVC then finds it changed (so a retrained model that came
    out bit for bit the same does not rerun its inference); among the stages ready to start, the one heading
    the longest chain of targets goes first. Each runs its own command in its own process and is recorded as
    `dvc commit` would as soon as it succeeds, also when another failed. Returns the names of those run, in order.
    """
    with contextlib.chdir(project):  # DVC resolves stage names against the working directory
        return _run_side_by_side(targets, jobs=jobs, dvc=dvc, upstream=upstream)


def _run_side_by_side(targets: Sequence[str] | None, *, jobs: int, dvc: str, upstream: bool) -> list[str]:
    import networkx as nx
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        if targets is None:
            stages = {stage.addressing: stage for stage in repo.index.stages if stage.cmd}
        else:
            stages = {
                stage.addressing: stage
                for target in targets
                for stage in repo.stage.collect(target, with_deps=upstream)
                if stage.cmd  # a `dvc add`ed folder is data, not a stage to run
            }
        needs = {
            name: {dep.addressing for dep in graph.successors(stage)} & stages.keys() for name, stage in stages.items()
        }
        before = {dep for stage in stages.values() for dep in nx.descendants(graph, stage)}
        before = {stage for stage in before if stage.addressing not in stages}
        # `dvc repro X` brings X's upstream along, and DVC collects the graph once per name given: name the ends
        ends = before - {dep for stage in before for dep in nx.descendants(graph, stage)}
    if ends:
        _check([dvc, "repro", *sorted(stage.addressing for stage in ends)])

    def run_one(name: str) -> int:
        began = time.monotonic()
        code = _launch(stages[name].cmd)
        log.info("%s %s in %.0f s", name, "finished" if code == 0 else f"FAILED ({code})", time.monotonic() - began)
        return code

    def start_ready() -> None:
        for name in [n for n in waiting if needs[n] <= settled.keys()]:
            if len(running) == jobs:
                return
            waiting.remove(name)
            if any(settled[dep] in ("failed", "blocked") for dep in needs[name]):
                settled[name] = "blocked"
                continue
            stage = stage_of[name]
            with repo.lock:
                changed = stage.changed()  # asked now, as `dvc repro` does: what it depends on may just have changed
                if changed:  # and a rerun starts without stale outputs
                    stage.remove_outs(ignore_remove=False, force=False)
            if changed:
                running[pool.submit(run_one, name)] = name
            else:
                settled[name] = "up to date"

    # settled: name -> ran | up to date | failed | blocked, in the order each was settled
    waiting, running, settled, codes = _longest_chain_first(needs), {}, {}, {}
    _start_preloaded_process()
    with Repo() as repo, ThreadPoolExecutor(jobs) as pool:
        # one object per stage for the whole run, as in `dvc repro`: each holds its own lock entry, which only
        # its own recording changes (collecting a stage anew parses the templated dvc.yaml: 0.25 s each time)
        stage_of = {stage.addressing: stage for stage in repo.index.stages if stage.addressing in needs}
        while waiting or running:
            start_ready()
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            done = [(running.pop(future), future.result()) for future in finished]
            settled |= {name: "ran" if code == 0 else "failed" for name, code in done}
            codes |= dict(done)
            start_ready()  # what they unblocked starts first: recording them reads their outputs, never rewrites them
            for name, code in done:
                # should recording fail, what already started on the stage is recorded: `dvc repro` redoes both
                if code == 0 and not _commit(stage_of[name]):
                    settled[name] = "failed"
    if broken := [f"{name} ({state})" for name, state in settled.items() if state in ("failed", "blocked")]:
        first = next(codes[name] for name, state in settled.items() if state == "failed")
        raise StagesNotRun(f"stages not run to the end: {', '.join(broken)}; the log above says why", first)
    return [name for name, state in settled.items() if state == "ran"]


def _longest_chain_first(needs: dict[str, set[str]]) -> list[str]:
    """The stages ordered by the length of the longest chain of stages they head (ties: as given).

    A stage's chain runs through the stages that need it, transitively; starting long chains first keeps the
    critical path busy and leaves short side branches (evaluations, reports) for cores that would idle.
    """
    needed_by: dict[str, set[str]] = {name: set() for name in needs}
    for name, deps in needs.items():
        for dep in deps:
            needed_by[dep].add(name)
    chain: dict[str, int] = {}

    def length(name: str) -> int:
        if name not in chain:
            chain[name] = 1 + max((length(after) for after in needed_by[name]), default=0)
        return chain[name]

    return sorted(needs, key=lambda name: -length(name))  # sorted() is stable: ties keep the given order


# set once the preloaded process has forked a first process: until then, stages start as plain processes
_preloaded = threading.Event()


def _start_preloaded_process() -> None:
    """Start the process that `madseg run` commands fork from (Python's forkserver), which imports the stage
    modules once, in the background. Until its imports are done (seconds; more while they are first compiled), the
    first stages (the world, which needs no torch) start as plain processes instead of waiting for it.

    Its environment (STAGE_ENV) is fixed when it starts: OpenMP and tqdm read theirs when they are imported. It
    starts in the folder that holds the madseg package, not in the project: a project folder may be gone before
    the imports are done (torch reads the working directory as it is imported), and each stage's process moves to
    its own project anyway.
    """
    import madseg
    from madseg.stages import STAGES

    forkserver.set_forkserver_preload(["madseg.runner", "madseg.demo", *(f"madseg.stages.{s}" for s in STAGES)])
    saved = {key: os.environ.get(key) for key in STAGE_ENV}
    os.environ.update(STAGE_ENV)
    try:
        with contextlib.chdir(Path(madseg.__file__).parents[1]):
            forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    threading.Thread(target=_fork_once, daemon=True).start()


def _fork_once() -> None:
    try:
        process = multiprocessing.get_context("forkserver").Process(target=int)  # returns at once
        process.start()
        process.join()
    except OSError as e:  # the stages still run, each as a plain process
        log.warning("no preloaded process for the stages (%s): each starts as a plain process", e)
        return
    _preloaded.set()


# what multiprocessing reports when the forkserver cannot tell how its child ended (popen_forkserver's poll); no
# stage exits with it, and a stage run again redoes or resumes its work
LOST_STATUS = 255


def _launch(cmd: str | list[str]) -> int:
    """Run a stage's command to its end; returns its exit code. `madseg run ...` forks from the preloaded process
    once it is ready."""
    cmd = cmd if isinstance(cmd, str) else " && ".join(cmd)  # DVC runs a list of commands one after the other
    argv = shlex.split(cmd)
    env = {**os.environ, **STAGE_ENV}
    if argv[:2] != ["madseg", "run"] or re.search(r"[|&;<>()$`\n]", cmd):  # what only a shell can run
        return subprocess.run(cmd, shell=True, env=env).returncode
    if not _preloaded.is_set():
        return subprocess.run([sys.executable, "-m", "madseg.cli", *argv[1:]], env=env).returncode
    process = multiprocessing.get_context("forkserver").Process(target=_run_madseg, args=(argv[1:], os.getcwd()))
    process.start()
    process.join()
    if process.exitcode == LOST_STATUS:  # seen once in CI, right after the stage logged that it finished
        log.warning("%s: the forkserver lost its exit status; running it again as a plain process", cmd)
        return subprocess.run([sys.executable, "-m", "madseg.cli", *argv[1:]], env=env).returncode
    return process.exitcode


def _run_madseg(argv: list[str], cwd: str) -> None:
    stop_with_parent()  # the forkserver, which ends with the demo
    os.chdir(cwd)  # the preloaded process may have been started for another project
    multiprocessing.set_start_method(None, force=True)  # the stage's own workers start as in a plain process
    from madseg.runner import main

    main(argv[1:])  # without its leading "run"


def _commit(stage) -> bool:
    """Record a stage that has just run, as `dvc commit --force` would (at once: an interrupted demo keeps it).

    DVC rewrites its lock file by parsing it as comment-keeping YAML and dumping all of it again: 3.5-6 s for the
    demo's 100-stage lock on 2 cores, on the critical path of every round's chain of small stages. The runner
    dumps only this stage's entry, with DVC's own writer, and puts it in place of the old one (or after the
    last): the same bytes (a test pins them against `dvc commit`'s) in about 10 ms, and atomically, so an
    interrupted demo never leaves half a lock file.
    """
    from dvc.exceptions import DvcException
    from dvc.stage.serialize import to_lockfile
    from dvc.utils.serialize import dumps_yaml

    try:
        with stage.repo.lock:
            stage.save()
            # copying to the cache leaves the workspace alone (no relink), so stages reading it may run meanwhile
            stage.commit(relink=False)
        path = Path(stage.dvcfile.path).with_suffix(".lock")
        lock = path.read_text(encoding="utf-8") if path.exists() else ""
        write_text(path, _put_entry(lock, dumps_yaml({"stages": to_lockfile(stage)})))
    except (DvcException, OSError) as e:
        log.error("%s ran but cannot be recorded: %s", stage.addressing, e)
        return False
    return True


def _put_entry(lock: str, stages: str) -> str:
    """``lock`` (a lock file's text) with the stage entry in ``stages`` (a lock's `stages:` section of one entry:
    its key line at two spaces, its body deeper) in place of the entry under the same key, or after the last."""
    lines = lock.splitlines(keepends=True)
    entry = stages.removeprefix("stages:\n")
    key = entry.splitlines(keepends=True)[0]
    if "stages:\n" not in lines:  # no lock yet: as DVC writes a new one, the schema first
        return "schema: '2.0'\n" + stages
    if key not in lines:
        return lock + entry
    start = lines.index(key)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("   ")), len(lines))
    return "".join(lines[:start]) + entry + "".join(lines[end:])


def _check(cmd: list[str]) -> None:
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed (exit {result.returncode}); the log above names the stage")
