"""The validity study (Appendix A on the demo world): MAD vs entropy vs random at an equal labelling budget.

For every seed and strategy, one DVC experiment runs the loop up to the `validity` stage (world, index,
pretrained models and the competitors' predictions are shared through DVC's cache; only what depends on the
strategy or seed reruns) and the final fine-tuned target is kept. Then the fine-tuned targets are compared
two ways, per seed:

1. the paper's way: `madseg compare` runs a MAD competition between MAD's target and each baseline's on the
   held-out D_eval (their largest disagreements, labelled by the simulated annotators);
2. the ground-truth way: each target's mIoU on all of D_eval (hidden truth; never mined by any strategy).

Writes metrics/study.json (margins, their spread, the seeds, what each strategy's labels cost in regions and
object pixels, the minutes this invocation took and the sum of the experiments' own), metrics/study.csv (one
row per experiment, with the minutes it ran and its S's cost) and
metrics/compare/study-*.json. Then `dvc repro validity` folds the margins into metrics/validity.json. Every
experiment runs in its own temporary workspace (`dvc exp run --temp`), so the workspace stays on the main line.
Run from the project root, outside CI (on 2 CPU cores about 10 minutes per experiment, or two at a time with
--jobs 2). On the photo world, first `dvc add data/photo_sources` and commit its .dvc file: the experiments'
workspaces hold only what git and DVC track.

    .venv/bin/python scripts/validity_study.py [--seeds 0 1 2] [--strategies mad entropy random] [--jobs 2]

Beyond the paper (issue 20), `--options` runs the same loop under other recipes at the same rating and mask
budget, each a named set of params (OPTIONS; join names with '+' for a combination), and writes
metrics/study_options.csv (one row per experiment) and metrics/study_options.json (per option: the D_eval
corner-case gain, T0 drop, per-factor gains and in-domain mIoU, mean, spread and by seed):

    .venv/bin/python scripts/validity_study.py --options paper views round_robin views+round_robin \\
        --strategies mad --lr 0.01 --resume
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from madseg.annotation.tasks import drawing_cost
from madseg.config import Params, load_params
from madseg.io.tables import read_csv
from madseg.io.truth import read_truth_masks
from madseg.validity import STUDY_KEYS  # what validity folds in from study.json

ROOT = Path(__file__).resolve().parents[1]
STUDY = Path("data/study")
log = logging.getLogger("madseg.study")


def sh(*cmd: str, check: bool = True) -> None:
    log.info("$ %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=ROOT, check=check)
    if done.returncode:
        log.warning("%s exited with %d; going on", cmd[0], done.returncode)


def output(*cmd: str) -> str:
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def git(*args: str) -> str:
    return output("git", *args)


# Recipes beyond the paper's, each a few params (issue 20). "views" keeps the rating budget: with the view as
# one more competitor, n3 = 12 gives an M as large as the paper's n3 = 20 over five competitors.
OPTIONS: dict[str, list[str]] = {
    "paper": [],
    "views": ["mining.self_consistency=[contrast_stretch]", "mining.n3=12"],
    "round_robin": ["selection.method=round_robin"],
    "rater_model": ["selection.scores=rater_model"],
    "mean_scores": ["selection.scores=mean"],  # the paper's mean of the ratings, now that the rater model is default
    "photometric": ["finetune.augment=photometric"],
    "weight_average": ["finetune.weight_average=0.5"],  # WiSE-FT: halfway back to f_t^(i) after each fine-tune
    # MAD's groups ranked by the mean distance to all competitors; they then overlap more, and n3 30 keeps the
    # rating budget of the paper's ranking at n3 20 in both worlds (round 0's |M|: photos 171 against 175, the
    # demo world 368 against 362)
    "committee": ["++mining.rank_by=committee", "mining.n3=30"],
    # the optimizer the pretrained targets were trained with (the photos preset's); ++ adds a key params.yaml lacks
    "adamw": ["++finetune.optimizer=adamw", "finetune.lr_grid=[0.0001,0.0003]"],
    # the paper's other distance, negative pixel accuracy: a group's top is where the two maps differ on the most
    # pixels (large objects) rather than on the largest share of a class (small ones); n3 28 gives the photo world
    # the |M| of the mIoU distance at n3 20 (round 0: 170 against 175; the demo world 394 against 362). Its M^(2)
    # brings back so many images f_t^(1) was fine-tuned on that 24 were left for T^(2) (photos, seed 0): T, the
    # competition's test set, shrinks to 15; S and the target do not depend on it
    "pixel_accuracy": ["mining.distance=pixel_accuracy", "mining.n3=28", "selection.t_size=15"],
    # a mask budget counted in what annotators draw rather than in images, for a strategy whose picks hold more:
    # on the photo world entropy's S held 2.44 objects an image against MAD's 2.13, and 43 % object pixels
    # against 29 %, so 87 of entropy's images hold as many objects as 100 of MAD's, and 67 as many object pixels
    # (run them with --strategies entropy)
    "objects_budget": ["selection.n4=87"],
    "pixels_budget": ["selection.n4=67"],
    # the target's logits averaged over each image and its mirror image (models.target.tta): on the photo world
    # T0 67.41 -> 68.15 and the pool's wrong share 40.7 % -> 37.8 % before any fine-tune. Its MAD at seed 1 left
    # 29 images for T^(2) (photos' t_size 30); T, the competition's test set, shrinks to 20 (from seed 1 on; S and
    # the target do not depend on it)
    "tta": ["++models.target.tta=hflip", "selection.t_size=20"],
    # no image the target was fine-tuned on is a candidate again, for every strategy: after a fine-tune the target
    # is right on S^(1..i) where the fixed competitors still fail, so the paper's MAD proposes them again and
    # spends ratings and group places on them (the demo's M^(2) held 93 of them in 375, 2026-11-27; the photo
    # world's 52 in 175, and with 24 vetoed S^(2) took every image left: its ratings chose nothing)
    "fresh": ["mining.exclude_trained_on=true"],
}


def option_params(option: str) -> list[str]:
    """The params of an option, or of several joined by '+' ("views+round_robin")."""
    unknown = [name for name in option.split("+") if name not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
    return [setting for name in option.split("+") for setting in OPTIONS[name]]


def experiment_name(strategy: str, seed: int, option: str = "paper") -> str:
    """Names the experiment, and (without the prefix) its final target and log under data/study/."""
    return f"study-{strategy}-s{seed}" if option == "paper" else f"study-{option}-{strategy}-s{seed}"


def experiment_args(strategy: str, seed: int, lr: float | None, workers: int, option: str = "paper") -> list[str]:
    """`dvc exp run --temp` of one (strategy, seed) up to `validity`; the workspace is never touched."""
    fixed_lr = ["-S", f"finetune.lr_grid=[{lr}]"] if lr is not None else []
    settings = [arg for setting in option_params(option) for arg in ("-S", setting)]
    return [
        "dvc",
        "exp",
        "run",
        "--temp",
        "-n",
        experiment_name(strategy, seed, option),
        *fixed_lr,
        *settings,
        "-S",
        f"finetune.workers={workers}",
        "-S",
        f"mining.strategy={strategy}",
        "-S",
        f"mining.seed={seed}",
        "-S",
        f"selection.seed={seed}",
        "-S",
        f"finetune.seed={seed}",
        "-S",
        f"annotation.simulated.seed={seed}",
        "validity",
    ]


@functools.cache
def dvc_cache() -> Path:
    """Where this repository's DVC cache is (a clone may share another's, `dvc cache dir --local`)."""
    return Path(output("dvc", "cache", "dir").strip())


def target_file(option: str, strategy: str, seed: int) -> Path:
    """Where an experiment's final target is kept (data/study/, never committed). --resume takes a row of the
    study's CSVs for done only where this file exists: a clone's committed CSVs describe experiments run
    elsewhere (the demo world's, in a project of another world)."""
    return ROOT / STUDY / f"{experiment_name(strategy, seed, option).removeprefix('study-')}.pt"


def kept(row: dict) -> bool:
    """Whether --resume may take a study row for done: its final target is kept here and, in rows that record
    it, has the md5 the row was measured with (not a same-named target of another host or a later run)."""
    where = target_file(row.get("option", "paper"), row["strategy"], int(row["seed"]))
    recorded = row.get("target_md5")
    return where.exists() and (not isinstance(recorded, str) or hashlib.md5(where.read_bytes()).hexdigest() == recorded)


def labelled_file(option: str, strategy: str, seed: int) -> Path:
    """Where an experiment's S of every round is kept (its final round's S_all.csv: image_id, round), beside its
    final target."""
    return target_file(option, strategy, seed).with_suffix(".S_all.csv")


COST_KEYS = ("S.regions", "S.object_pixels", "S.object_share")  # beside S.images, averaged per strategy
# round 0 against the truth, before any fine-tune: how hard M is, and how often the target is wrong on a random
# sample (a recipe that changes the target, like tta, moves both)
ROUND_0_KEYS = ("m_over_random_miou", "target_wrong_share")


@functools.cache
def study_params(root: Path) -> Params:
    """The project's params, read once: every row's cost needs the truth's folder and the class list."""
    return load_params(root / "params.yaml")


def labelling_cost(option: str, strategy: str, seed: int) -> dict:
    """What an experiment's S of every round cost to draw, read from the pool's truth (the masks the simulated
    annotators handed over): images, regions, object pixels and their share (see
    :func:`madseg.annotation.tasks.drawing_cost`). Strategies at one image budget can differ by half in the
    last two, so the study compares them in both units. Empty where the experiment's S is not kept."""
    where = labelled_file(option, strategy, seed)
    if not where.exists():
        return {}
    params = study_params(ROOT)
    ids = read_csv(where, required=["image_id"])["image_id"]
    masks = read_truth_masks(ROOT / params.annotation.simulated.truth_dir, ids, params.dataset.class_list())
    return {"S.images": len(ids), **{f"S.{key}": value for key, value in drawing_cost(masks).items()}}


def with_cost(row: dict) -> dict:
    """A study row with its labelling cost, computed where a row from before the cost existed lacks it."""
    if pd.notna(row.get("S.object_pixels")):
        return row
    return row | labelling_cost(row.get("option", "paper"), row["strategy"], int(row["seed"]))


def collect(option: str, strategy: str, seed: int, final_round: str, baseline: str) -> dict:
    """An experiment's validity metrics (from its git ref); its final target and every round's S (for
    scripts/selection_bound.py) copied to data/study/."""
    name = experiment_name(strategy, seed, option)
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    metrics = json.loads(git("show", f"{ref}:metrics/validity.json"))
    lock = yaml.safe_load(git("show", f"{ref}:dvc.lock"))
    outs = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}
    copies = {
        f"models/target_{final_round}.pt": target_file,
        f"annotations/round_{final_round}/S_all.csv": labelled_file,
    }
    for out, where in copies.items():
        md5 = outs[out]
        shutil.copyfile(dvc_cache() / "files/md5" / md5[:2] / md5[2:], where(option, strategy, seed))
    keep = {k: v for k, v in metrics.items() if not isinstance(v, list) and k not in STUDY_KEYS}
    row = {"option": option, "strategy": strategy, "seed": seed, **keep, **labelling_cost(option, strategy, seed)}
    return row | {"target_md5": outs[f"models/target_{final_round}.pt"]}  # what --resume checks the kept target by


def ran_with(ref: str, args: list[str]) -> bool:
    """Whether the experiment at ``ref`` ran with the params that ``args`` (from :func:`experiment_args`) set:
    --resume must not collect an experiment of the same name that ran under an earlier version of its option.
    The worker count is left out: it does not change the weights."""
    params = yaml.safe_load(git("show", f"{ref}:params.yaml"))
    settings = [setting.removeprefix("++").split("=", 1) for flag, setting in itertools.pairwise(args) if flag == "-S"]
    for key, value in settings:
        if key == "finetune.workers":
            continue
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != yaml.safe_load(value):
            return False
    return True


def run_experiments(
    todo: list[tuple[str, str, int]], jobs: int, lr: float | None, final_round: str, reuse: bool = False
):
    """Run the (option, strategy, seed) experiments, ``jobs`` at a time, each in its own temporary DVC
    workspace.

    Each experiment trains its learning-rate candidates on cores // jobs worker processes. The weights depend
    on finetune.threads (params.yaml) only, so a study's numbers do not depend on ``jobs``.
    Yields each finished experiment's row in completion order, with the minutes it ran (None for one collected
    from an earlier run).
    """
    baseline = git("rev-parse", "HEAD").strip()  # experiments are stored under the commit they started from
    workers = max(1, (os.cpu_count() or 1) // jobs)
    pending, running = list(todo), {}
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    if reuse:  # experiments that finished under this commit before an interruption are collected, not rerun
        finished = set(git("for-each-ref", "--format=%(refname)", prefix).split())
        for key in [k for k in pending if prefix + experiment_name(k[1], k[2], k[0]) in finished]:
            ref = prefix + experiment_name(key[1], key[2], key[0])
            if not ran_with(ref, experiment_args(key[1], key[2], lr, workers, key[0])):
                log.warning("%s ran with other settings than its option's now: running it again", ref)
                continue
            pending.remove(key)
            yield collect(*key, final_round, baseline) | {"minutes": None}
    started: dict[tuple[str, str, int], float] = {}
    while pending or running:
        while pending and len(running) < jobs:
            key = pending.pop(0)
            name = experiment_name(key[1], key[2], key[0])
            # a rerun replaces an experiment of the same name
            subprocess.run(["dvc", "exp", "remove", name], cwd=ROOT, capture_output=True)
            cmd = experiment_args(key[1], key[2], lr, workers, key[0])
            log.info("$ %s", " ".join(cmd))
            log_file = ROOT / STUDY / f"{name.removeprefix('study-')}.log"
            with log_file.open("w") as out:  # the child keeps its own fd
                running[key] = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
            started[key] = time.monotonic()
        time.sleep(5)
        for key, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode:  # the others go on; the summary covers what finished
                log.error("experiment %s failed (exit %d); see its log in %s", key, proc.returncode, STUDY)
                continue
            yield collect(*key, final_round, baseline) | {"minutes": round((time.monotonic() - started[key]) / 60, 1)}


def eval_pool_index() -> Path:
    """D_eval as an index CSV (id = the truth's image id, path = its image) for `madseg compare`."""
    factors = pd.read_csv(ROOT / "data/world/eval_pool/truth/factors.csv")
    index = pd.DataFrame(
        {"id": factors["image_id"], "path": [f"data/world/eval_pool/images/{n}.jpg" for n in factors["name"]]}
    )
    path = STUDY / "eval_pool.csv"
    index.sort_values("id").to_csv(ROOT / path, index=False)
    return path


def compete(seed: int, other: str, pool: Path, n: int) -> dict:
    name = f"study-mad-vs-{other}-s{seed}"
    sh(
        "madseg",
        "compare",
        str(STUDY / f"mad-s{seed}.pt"),
        str(STUDY / f"{other}-s{seed}.pt"),
        "--pool",
        str(pool),
        "--truth",
        "data/world/eval_pool/truth",
        "--name",
        name,
        "--name-a",
        "mad",
        "--name-b",
        other,
        "--n",
        str(n),
    )
    return json.loads((ROOT / "metrics" / "compare" / f"{name}.json").read_text())


def summarize(table: pd.DataFrame, competitions: dict, seeds: list[int], final_round: str) -> dict:
    final = f"target_{final_round}.all_in_domain"
    pivot = table.pivot(index="seed", columns="strategy", values=final) * 100
    summary: dict = {"seeds": seeds, "metric": f"D_eval in-domain mIoU points of f_t^({final_round})"}
    for strategy in pivot.columns:
        summary[f"d_eval_miou.{strategy}"] = float(pivot[strategy].mean())
    for key in COST_KEYS:  # each strategy's labels in the units annotators pay, mean over seeds
        if key in table:
            for strategy, values in table.groupby("strategy")[key]:
                if values.notna().any():
                    summary[f"{key}.{strategy}"] = float(values.mean())
    for other in ("entropy", "random"):
        if {"mad", other} <= set(pivot.columns):
            diff = pivot["mad"] - pivot[other]
            summary[f"mad_minus_{other}"] = float(diff.mean())
            summary[f"mad_minus_{other}_sd"] = float(diff.std(ddof=1)) if len(diff) > 1 else None
            summary[f"mad_minus_{other}_by_seed"] = [float(v) for v in diff]
            summary[f"mad_beats_{other}_in_seeds"] = int((diff > 0).sum())
            corner = table.pivot(index="seed", columns="strategy", values=f"target_{final_round}.corner") * 100
            summary[f"mad_minus_{other}_corner"] = float((corner["mad"] - corner[other]).mean())
        runs = [competitions[(s, other)] for s in seeds if (s, other) in competitions]
        if runs:
            summary[f"competition.mad_minus_{other}"] = float(sum(r["miou_difference"] for r in runs) / len(runs))
            summary[f"competition.mad_wins_{other}_in_seeds"] = sum(r["winner"] == "mad" for r in runs)
            summary[f"competition.images_per_seed.{other}"] = [int(r["n_images"]) for r in runs]
    for key in ("corner_miou_gain", "t0_drop", "precision_ratio_vs_random"):
        mad = table.loc[table["strategy"] == "mad", key]
        summary[f"mad.{key}"] = float(mad.mean())
        summary[f"mad.{key}_sd"] = float(mad.std(ddof=1)) if len(mad) > 1 else None
    return summary


def summarize_options(table: pd.DataFrame, final_round: str) -> dict:
    """Per option: MAD's D_eval corner-case gain, T0 drop, per-factor gains (f_t^(0) -> final, mIoU points)
    and in-domain mIoU, each as mean, sd and by seed; MAD's margin over the other strategies where they
    ran, and their own in-domain mIoU (``<option>.<strategy>.d_eval_miou``); what each strategy's labels cost
    (``<option>.S.object_pixels``, ``<option>.<strategy>.S.object_pixels``, likewise regions and share); MAD's
    round-0 ``m_over_random_miou`` and ``target_wrong_share``."""
    summary: dict = {}
    factors = sorted(k.split(".factor.")[1] for k in table.columns if k.startswith(f"target_{final_round}.factor."))
    for option, rows in table.groupby("option", sort=True):
        rows = rows.sort_values("seed")
        mad = rows[rows["strategy"] == "mad"].set_index("seed")
        figures = {
            "corner_miou_gain": mad["corner_miou_gain"],
            "t0_drop": mad["t0_drop"],
            "d_eval_miou": 100 * mad[f"target_{final_round}.all_in_domain"],
        }
        for factor in factors:  # from the factor mIoUs, so rows from before gain.<factor> existed count too
            figures[f"gain.{factor}"] = 100 * (
                mad[f"target_{final_round}.factor.{factor}"] - mad[f"target_0.factor.{factor}"]
            )
        for key in [k for k in (*COST_KEYS, *ROUND_0_KEYS) if k in rows]:
            figures[key] = mad[key].dropna()
        for other in sorted(set(rows["strategy"]) - {"mad"}):
            theirs = rows[rows["strategy"] == other].set_index("seed")
            figures[f"{other}.d_eval_miou"] = 100 * theirs[f"target_{final_round}.all_in_domain"]
            figures[f"mad_minus_{other}"] = (figures["d_eval_miou"] - figures[f"{other}.d_eval_miou"]).dropna()
            for key in [k for k in COST_KEYS if k in rows]:
                figures[f"{other}.{key}"] = theirs[key].dropna()
        figures = {key: values for key, values in figures.items() if len(values)}  # an option run without MAD
        for key, values in figures.items():
            summary[f"{option}.{key}"] = round(float(values.mean()), 2)
            summary[f"{option}.{key}_sd"] = round(float(values.std(ddof=1)), 2) if len(values) > 1 else None
            summary[f"{option}.{key}_by_seed"] = [round(float(v), 2) for v in values]
        summary[f"{option}.seeds"] = sorted({int(s) for s in rows["seed"]})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=["mad", "entropy", "random"])
    parser.add_argument(
        "--options", nargs="+", default=["paper"], help=f"recipes, of {sorted(OPTIONS)}, '+' joins them"
    )
    parser.add_argument("--n", type=int, default=5, help="images per (class, direction) in each competition")
    parser.add_argument("--lr", type=float, help="hold the fine-tuning lr fixed (default: the grid of params.yaml)")
    parser.add_argument("--resume", action="store_true", help="keep the experiments already in metrics/study*.csv")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at a time (2 suits 2 cores)")
    args = parser.parse_args()
    for option in args.options:
        option_params(option)  # unknown names fail before anything runs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    check_world_sources(params.get("world", {}))
    final_round = str(params["final_round"])
    if args.options != ["paper"]:
        return study_options(args, final_round)
    csv = ROOT / "metrics" / "study.csv"
    rows = pd.read_csv(csv).to_dict("records") if args.resume and csv.exists() else []
    rows = [with_cost(r) for r in rows if kept(r)]
    done = {(r["strategy"], int(r["seed"])) for r in rows}
    todo = [("paper", st, seed) for seed in args.seeds for st in args.strategies if (st, seed) not in done]
    (ROOT / STUDY).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for row in run_experiments(todo, args.jobs, args.lr, final_round):
        rows.append({k: v for k, v in row.items() if k != "option"})
        pd.DataFrame(rows).sort_values(["seed", "strategy"]).to_csv(csv, index=False)
    pool = eval_pool_index()
    competitions: dict = {}
    for seed in args.seeds:
        for other in args.strategies:
            if other != "mad" and "mad" in args.strategies:
                competitions[(seed, other)] = compete(seed, other, pool, args.n)
    table = pd.DataFrame(rows)
    summary = summarize(table, competitions, sorted({int(s) for s in table["seed"]}), final_round)
    summary["minutes"] = round((time.monotonic() - start) / 60, 1)  # this invocation's; with --resume, a part
    summary["experiment_minutes"] = round(float(table["minutes"].sum()), 1) if "minutes" in table else None
    summary["command"] = "python scripts/validity_study.py " + " ".join(sys.argv[1:])
    summary["fixed_lr"] = args.lr
    summary["jobs"] = args.jobs
    (ROOT / "metrics" / "study.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("study: %s", json.dumps(summary, indent=2))


def check_world_sources(world: dict) -> None:
    """Stop when the photo world's sources would be missing from the experiments' workspaces: `dvc exp run
    --temp` copies only what git or DVC tracks, and `madseg photos fetch` leaves its folder to neither."""
    if world.get("kind") != "photos":
        return
    sources = world["photos"]["sources"]
    if not (ROOT / f"{sources}.dvc").exists() and not git("ls-files", sources).strip():
        raise SystemExit(
            f"{sources} is tracked by neither git nor DVC, so the experiments' workspaces would lack it: "
            f"`dvc add {sources}`, commit {sources}.dvc, then run the study again"
        )


def study_options(args: argparse.Namespace, final_round: str) -> None:
    """The recipes of ``args.options`` side by side (metrics/study_options.csv and .json). With --resume, the
    paper's recipe reuses the main study's rows (metrics/study.csv) when they ran at the same fixed lr."""
    csv = ROOT / "metrics" / "study_options.csv"
    rows = pd.read_csv(csv).to_dict("records") if args.resume and csv.exists() else []
    main_study = ROOT / "metrics" / "study.json"
    if args.resume and main_study.exists() and json.loads(main_study.read_text()).get("fixed_lr") == args.lr:
        rows += [{"option": "paper", **r} for r in pd.read_csv(ROOT / "metrics" / "study.csv").to_dict("records")]
    rows = [with_cost(r) for r in rows if kept(r)]
    done = {(r["option"], r["strategy"], int(r["seed"])) for r in rows}
    todo = [
        (option, st, seed)
        for seed in args.seeds
        for option in args.options
        for st in args.strategies
        if (option, st, seed) not in done
    ]
    (ROOT / STUDY).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for row in run_experiments(todo, args.jobs, args.lr, final_round, reuse=args.resume):
        rows.append(row)
        table = pd.DataFrame(rows).drop_duplicates(["option", "strategy", "seed"], keep="last")
        table.sort_values(["option", "seed", "strategy"]).to_csv(csv, index=False)
    table = pd.DataFrame(rows).drop_duplicates(["option", "strategy", "seed"], keep="last")
    table = table[table["seed"].isin(args.seeds)]  # every recipe run so far, each with the seeds it ran
    summary = summarize_options(table, final_round)
    summary |= {
        "minutes": round((time.monotonic() - start) / 60, 1),
        "fixed_lr": args.lr,
        "command": "python scripts/validity_study.py " + " ".join(sys.argv[1:]),
    }
    (ROOT / "metrics" / "study_options.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("options: %s", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
