"""Running one pipeline stage, and how every madseg command ends: shared by the command line and the demo's runner.

`madseg run STAGE [--round R] [--model M]` is what dvc.yaml calls. Before the stage runs, params.yaml is checked
whole (:func:`madseg.config.load_params`, :func:`madseg.checks.check_params`) and against dvc.yaml
(:func:`madseg.stage_code.check_declared`). A mistake a user can make ends in one short message and its own exit
code (:mod:`madseg.stops`); ``--debug`` or ``MADSEG_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from madseg.checks import check_params
from madseg.config import load_params
from madseg.stage_code import check_declared
from madseg.stages import STAGES
from madseg.stops import BadInput, ConfigError, ExpectedStop

log = logging.getLogger("madseg")

# what a stage's command line names, by the keyword of its run() function
STAGE_ARGUMENTS = {"round_key": "--round", "model": "--model"}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `madseg run`."""
    parser.add_argument("stage", help=f"one of: {', '.join(STAGES)}")
    parser.add_argument("--round", help="round key for round-scoped stages")
    parser.add_argument("--model", help="model name for per-model stages")
    parser.add_argument("--params", default="params.yaml")


def run_stage(
    stage: str, *, params_path: str = "params.yaml", round_key: str | None = None, model: str | None = None
) -> None:
    """Check params, then run ``madseg.stages.<stage>.run``; ConfigError for a wrong stage or its arguments."""
    if stage not in STAGES:
        raise ConfigError(f"stage: unknown stage {stage!r} — valid stages: {', '.join(STAGES)}")
    module = importlib.import_module(f"madseg.stages.{stage}")
    given = {"round_key": round_key, "model": model}
    wanted = inspect.signature(module.run).parameters
    needed = [name for name, p in wanted.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if lacking := [STAGE_ARGUMENTS[name] for name in needed if given.get(name) is None]:
        raise ConfigError(f"{stage}: needs {' and '.join(lacking)} — e.g. `madseg run {stage} {lacking[0]} 0`")
    if extra := [STAGE_ARGUMENTS[k] for k, v in given.items() if v is not None and k not in wanted]:
        raise ConfigError(f"{stage}: takes no {' or '.join(extra)} — drop it")
    params = load_params(params_path)
    if problems := check_params(params, checkpoints=False):  # the stages that load a model check it themselves
        raise ConfigError(f"{params_path}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))
    check_declared(stage, params, model=model)  # data that params.yaml names but dvc.yaml would not track
    kwargs = {name: value for name, value in given.items() if value is not None}
    start = time.monotonic()
    module.run(params, **kwargs)
    log.info("%s finished in %.1f s", "@".join([stage, *kwargs.values()]), time.monotonic() - start)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def exit_code(action: Callable[[], None], *, debug: bool = False) -> int:
    """Run ``action``; what a user can cause becomes one line on stderr and its exit code (see madseg.stops)."""
    try:
        action()
        return 0
    except (ExpectedStop, OSError, ValueError, KeyboardInterrupt) as error:
        code, message = _user_error(error)
        if debug or os.environ.get("MADSEG_DEBUG", "") not in ("", "0"):
            traceback.print_exception(error)
        elif code == BadInput.exit_code and not isinstance(error, ExpectedStop):
            message += " (--debug shows the traceback)"
        sys.stderr.write(f"madseg: {message}\n")
        return code


def _user_error(error: BaseException) -> tuple[int, str]:
    """The exit code and message of an error a user can cause; anything else is a bug and keeps its traceback."""
    if isinstance(error, ExpectedStop):  # the user's move: fix params, annotate, start the server
        return error.exit_code, str(error)
    if isinstance(error, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError | ValueError):
        # public functions validate their inputs with ValueError naming what they got; missing files are the user's
        return BadInput.exit_code, str(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted; finished work is kept, run the same command again to resume"
    raise error


def main(argv: Sequence[str]) -> None:
    """`madseg run ...` from an argument list without the leading ``madseg run`` (the demo forks into this)."""
    parser = argparse.ArgumentParser(prog="madseg run")
    add_run_arguments(parser)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    configure_logging()
    sys.exit(exit_code(lambda: run_from_args(args), debug=args.debug))


def run_from_args(args: argparse.Namespace) -> None:
    run_stage(args.stage, params_path=args.params, round_key=args.round, model=args.model)
