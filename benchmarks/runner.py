"""The demo runner's cost per stage on a chain of small stages, against two references measured in the same run.

A scratch git + DVC project holds ``--stages`` trivial stages, each listing ``--deps`` files as dependencies, so
that its `dvc.lock` is as large as the demo's (100 stages, about 9,000 lines); ``--chain`` of them form a chain,
as a round's small stages do. Each repeat deletes the chain's outputs and brings it up to date three ways:
- ``runner``: `madseg.demo.run_side_by_side`, which records each stage with its own lock writer;
- ``runner_dvc_commit``: the same runner recording each stage with DVC's `repo.commit` (a round-trip parse and
  rewrite of the whole lock, as the runner did before);
- ``dvc_repro``: `dvc repro` of the chain's last stage.
Every figure is the median over ``--repeats`` interleaved repeats, in seconds per chained stage.
Writes metrics/bench/runner.json.

    python benchmarks/runner.py [--stages 100] [--deps 20] [--chain 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

from madseg import demo
from madseg.io.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
log = logging.getLogger("benchmarks.runner")


def make_project(root: Path, stages: int, deps: int, chain: int) -> list[str]:
    """A git + DVC project of ``stages`` stages, the first ``chain`` of them a chain; returns the chain's names."""
    (root / "src").mkdir(parents=True)
    code = [f"src/f{j:02d}.py" for j in range(deps)]
    for j, path in enumerate(code):
        (root / path).write_text(f"# {j}\n" * (j + 1))
    spec = {}
    for i in range(stages):
        previous = [f"out/s{i - 1:03d}.txt"] if 0 < i < chain else []
        write = f"import pathlib; pathlib.Path('out/s{i:03d}.txt').write_text('{i}')"
        spec[f"s{i:03d}"] = {"cmd": f'python -c "{write}"', "deps": code + previous, "outs": [f"out/s{i:03d}.txt"]}
    (root / "out").mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}, sort_keys=False))
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    demo.run_side_by_side(root, None, jobs=2, dvc=DVC)
    return [f"s{i:03d}" for i in range(chain)]


def dvc_commit(stage) -> bool:
    """The runner's recording before: DVC's own commit, which parses the whole lock as round-trip YAML."""
    stage.repo.commit(stage.addressing, force=True, relink=False)
    return True


def timed_chain(root: Path, chain: list[str], way: str) -> float:
    """Seconds per stage to bring the chain up to date after its outputs were deleted."""
    for name in chain:
        (root / "out" / f"{name}.txt").unlink()
    start = time.perf_counter()
    if way == "dvc_repro":
        subprocess.run([DVC, "repro", "-q", chain[-1]], cwd=root, check=True)
    else:
        recording = mock.patch.object(demo, "_commit", dvc_commit) if way == "runner_dvc_commit" else None
        with recording or contextlib.nullcontext():
            ran = demo.run_side_by_side(root, chain, jobs=2, dvc=DVC)
        assert ran == chain, ran
    return (time.perf_counter() - start) / len(chain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", type=int, default=100)
    parser.add_argument("--deps", type=int, default=20)
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench" / "runner.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ways = ("runner", "runner_dvc_commit", "dvc_repro")
    root = Path(tempfile.mkdtemp(prefix="madseg-bench-runner-"))
    try:
        chain = make_project(root, args.stages, args.deps, args.chain)
        lock_lines = len((root / "dvc.lock").read_text().splitlines())
        seconds = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way in ways:
                seconds[way].append(timed_chain(root, chain, way))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = {way: statistics.median(values) for way, values in seconds.items()}
    figures = {
        "stages": args.stages,
        "lock_lines": lock_lines,
        "chain": args.chain,
        "repeats": args.repeats,
        **{f"{way}_s_per_stage": round(value, 3) for way, value in median.items()},
        "dvc_commit_over_runner": round(median["runner_dvc_commit"] / median["runner"], 2),
        "dvc_repro_over_runner": round(median["dvc_repro"] / median["runner"], 2),
    }
    write_json(args.out, figures)
    for key, value in figures.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
