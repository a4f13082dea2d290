"""How much a better choice of S could give: round 0's fine-tune on sets of pool images chosen with the truth.

The validity study compares MAD, entropy and random at the same budget; this bounds that comparison. From
f_t^(0) (models/target_0.pt) it fine-tunes once per set of selection.n4 pool images, with the project's own
recipe (params.yaml's finetune section, truth masks as the pixel labels), and scores each result on the held-out
D_eval, as the validity stage scores f_t^(1):
- ``project``: S^(1) as the loop chose it (annotations/round_0/S.csv; MAD's unless mining.strategy says else);
- ``worst``: the in-domain pool images on which f_t^(0) is worst (per-image mIoU against the truth): no
  selection that sees no truth picks harder ones;
- ``right``: a seeded random sample of the in-domain pool images f_t^(0) already gets right (mIoU >= 0.5);
- ``random``: a seeded random sample of the in-domain pool images, unrated;
- ``wrong_large`` and ``wrong_small``: seeded random samples of the in-domain pool images f_t^(0) gets wrong
  (mIoU < 0.5), from those whose truth holds more object pixels than the failures' median, and from the others:
  as hard as each other, they differ in how much labelled object they carry;
- ``wrong_sure`` and ``wrong_unsure``: the same, from the failures whose mean entropy (the entropy strategy's
  score) lies under the failures' median, and from the others: the failures the target is sure of, which only
  the competitors' disagreement finds, and those its own uncertainty finds.

Beside them, the S^(1) of every experiment scripts/validity_study.py kept in data/study/ (MAD's, entropy's,
random's, per seed), with its f_t^(1)'s D_eval from the study's CSVs: no fine-tuning needed.

With ``--failure-shares``, each strategy's own S^(1) on a pool where the target's failures are rarer: the paper
assumes a top-performing target, wrong on a minority of the pool, and the margins of a strategy over a rated
random sample depend on how rare its failures are. For each share w (of the in-domain pool the target gets
wrong), a seeded random part of the failures is left out of the pool until w of what remains are failures; MAD,
entropy and random then propose M^(1) from the rest as the ``mine`` stage does (the project's mining params;
the baselines at MAD's |M|), the project's simulated annotators rate it as ``import_scores`` does, and S^(1) is
its n4 lowest as ``select_S`` takes it (sets ``<strategy>@<w>``; at w no lower than the pool's own share nothing
is left out, and MAD's set is the loop's own S^(1)). D_eval is left whole, so every set is scored on the same
images. Keys ``<set>.M_f0_miou`` and ``<set>.M_size`` give f_t^(0)'s mean per-image mIoU on the in-domain
images of M and its size.

Writes metrics/selection_bound.json (flat keys ``<set>.s<seed>.<all_in_domain|normal|corner|t0>``; for every set
and study experiment ``<name>.f0_miou`` and ``<name>.f0_wrong_share``, f_t^(0)'s mean per-image mIoU on it
before fine-tuning and the share it is wrong on, and ``<name>.object_share``, the mean share of its pixels that
the truth gives an object class, i.e. how much labelled object the same number of images carries;
``f0.<all_in_domain|normal|corner>``, f_t^(0)'s own D_eval mIoU) and prints a markdown table. Reads the truth,
so it validates and never feeds the loop. Needs a project whose round 0 is done (`madseg demo`, or the photo
world's). Run from the project root (the photo world on 2 CPU cores: about 2 minutes a set and seed):

    .venv/bin/python scripts/selection_bound.py [--sets project worst right random wrong_large wrong_small
        wrong_sure wrong_unsure] [--seeds 0] [--failure-shares 0.41 0.25 0.15]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from madseg import paths, validity
from madseg.annotation.simulated import HiddenTruth, simulate_ratings, true_miou
from madseg.backends import propose, round_stores, s0_area_bands
from madseg.config import Params, load_params
from madseg.device import resolve_device
from madseg.finetuning import finetune_target
from madseg.inference import predict_images
from madseg.io.atomic import write_json
from madseg.io.images import read_rgb
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv
from madseg.io.truth import HeldOutPool, read_factors, read_held_out_pool, read_truth_masks
from madseg.io.voc import read_split
from madseg.metrics import confusion_matrix
from madseg.mining.bands import class_area_fractions
from madseg.mining.candidates import STRATEGIES
from madseg.models.checkpoint import load_checkpoint, save_checkpoint
from madseg.models.predictors import load_predictor
from madseg.selection import opinion_scores, select_lowest

log = logging.getLogger("madseg.selection_bound")
OUT = Path("metrics/selection_bound.json")
SETS = ("project", "worst", "right", "random", "wrong_large", "wrong_small", "wrong_sure", "wrong_unsure")
RIGHT = 0.5  # per-image mIoU from which the target counts as right (as target_wrong_share counts it wrong below)
GROUPS = ("all_in_domain", "normal", "corner")
# scripts/validity_study.py's: the study's experiments, and those of its --options
STUDY_TABLES = (Path("metrics/study.csv"), Path("metrics/study_options.csv"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="*", choices=SETS, default=list(SETS), help="none: the study's alone")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="fine-tuning seeds (finetune.seed)")
    parser.add_argument(
        "--failure-shares",
        nargs="*",
        type=float,
        default=[],
        help="each strategy's S^(1) on the pool thinned until this share of its in-domain images are failures",
    )
    args = parser.parse_args()
    if bad := [w for w in args.failure_shares if not 0 < w < 1]:
        raise SystemExit(f"--failure-shares must lie in (0, 1), got {bad}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params("params.yaml")
    needed = (paths.target_checkpoint("0"), paths.target_predictions("0"), paths.annotations_dir("0") / "S.csv")
    if missing := [str(p) for p in needed if not Path(p).exists()]:
        raise SystemExit(f"round 0 is not done here (run `madseg demo` first): missing {', '.join(missing)}")
    classes, truth_dir = params.dataset.class_list(), params.annotation.simulated.truth_dir
    held_out = read_held_out_pool(params.evaluation.eval_pool, classes)
    before = truth_figures(params)
    every = choose_sets(before, params.selection.n4, seed=params.seed)
    sets = {name: every[name] for name in args.sets}
    out: dict[str, float] = {f"f0.{g}": v for g, v in held_out_scores(params, paths.target_checkpoint("0"), held_out)}
    for share in args.failure_shares:
        chosen, figures = strategy_sets(params, before, share, seed=params.seed)
        sets |= chosen
        out |= figures
    index = read_csv(paths.POOL_INDEX, required=["id", "path"]).set_index("id")
    s0 = read_split(params.dataset, params.dataset.train_split, classes)
    t0 = read_split(params.dataset, params.dataset.val_split, classes)
    rows = []
    for name, ids in sets.items():
        out |= hardness(name, ids, before)
        masks = read_truth_masks(truth_dir, ids, classes)
        new = [read_rgb(index.loc[i, "path"]) for i in ids], [masks[i] for i in ids]
        for seed in args.seeds:
            model, meta = load_checkpoint(paths.target_checkpoint("0"))
            result = finetune_target(
                model,
                meta,
                new=new,
                replay=(s0.images, s0.masks),
                val=(t0.images, t0.masks),
                params=dataclasses.replace(params.finetune, seed=seed),
                num_classes=classes.num_classes,
                device=resolve_device(params.device),
            )
            with tempfile.TemporaryDirectory() as folder:
                checkpoint = Path(folder) / "target.pt"
                save_checkpoint(checkpoint, result.model, meta, provenance={"selection_bound": name})
                scores = dict(held_out_scores(params, checkpoint, held_out), t0=result.best.t0_miou)
            out |= {f"{name}.s{seed}.{g}": v for g, v in scores.items()}
            rows.append((name, seed, scores))
            write_json(OUT, out)  # after every fine-tune: an interrupted run keeps what it measured
            log.info("%s, seed %d: D_eval in-domain %.2f", name, seed, 100 * scores["all_in_domain"])
    for name, (ids, seed, scores) in study_experiments(params).items():
        out |= hardness(name, ids, before)
        rows.append((name, seed, scores))
    write_json(OUT, out)
    f0 = ", ".join(f"{g} {100 * out[f'f0.{g}']:.2f}" for g in GROUPS)
    log.info("D_eval mIoU after round 0's fine-tune on each set (f_t^(0): %s):\n%s", f0, _table(out, rows))


def truth_figures(params: Params) -> pd.DataFrame:
    """Every in-domain pool image (index: image id) with f_t^(0)'s per-image mIoU against the truth
    (``f0_miou``), the share of its pixels the truth gives an object class (``object_share``) and f_t^(0)'s mean
    per-pixel entropy on it (``entropy``)."""
    classes, truth_dir = params.dataset.class_list(), params.annotation.simulated.truth_dir
    kinds = read_factors(truth_dir).set_index("image_id")["kind"]
    store = PredictionStore(paths.target_predictions("0"))
    pool = read_csv(paths.POOL_INDEX, required=["id"])["id"]
    ids = sorted(i for i in pool if kinds.get(i, validity.OOD) != validity.OOD)
    masks = read_truth_masks(truth_dir, ids, classes)
    objects = {i: float(class_area_fractions(m, classes.num_classes)[1:].sum()) for i, m in masks.items()}
    figures = {"f0_miou": true_miou(store.read_maps(ids), masks, classes.num_classes), "object_share": objects}
    entropy = store.stats().set_index("id")["entropy"].astype(np.float64)
    return pd.DataFrame(figures).loc[ids].join(entropy)


def choose_sets(before: pd.DataFrame, n: int, seed: int) -> dict[str, list[str]]:
    """The sets of ``n`` image ids to fine-tune on (the module's list), ``before`` as :func:`truth_figures`
    gives it."""
    project = read_csv(paths.annotations_dir("0") / "S.csv", required=["image_id"])["image_id"].tolist()
    rng = np.random.default_rng(seed)

    def sample(ids: pd.Index) -> list[str]:
        return sorted(rng.choice(sorted(ids), min(n, len(ids)), replace=False).tolist())

    wrong = before[before["f0_miou"] < RIGHT]
    large = wrong["object_share"] > wrong["object_share"].median()
    unsure = wrong["entropy"] > wrong["entropy"].median()
    return {
        "project": project,
        "worst": before.sort_values(["f0_miou"], kind="stable").index[:n].tolist(),
        "right": sample(before.index[before["f0_miou"] >= RIGHT]),
        "random": sample(before.index),
        "wrong_large": sample(wrong.index[large]),
        "wrong_small": sample(wrong.index[~large]),
        "wrong_sure": sample(wrong.index[~unsure]),
        "wrong_unsure": sample(wrong.index[unsure]),
    }


def strategy_sets(
    params: Params, before: pd.DataFrame, share: float, seed: int
) -> tuple[dict[str, list[str]], dict[str, float]]:
    """S^(1) of every strategy, as the loop's round 0 would choose it from the pool thinned of failures until
    ``share`` of its in-domain images are failures (the module's docstring), by set name ``<strategy>@<w>``
    (w the share reached, two decimals); and per set M's size and f_t^(0)'s mean per-image mIoU on M's in-domain
    images. ``seed`` draws the failures left out."""
    classes, mp = params.dataset.class_list(), params.mining
    truth = HiddenTruth(params.annotation.simulated.truth_dir, classes)
    target, competitors = round_stores("0", params.models.competitors, mp.self_consistency)
    bands, _ = s0_area_bands(params.dataset, mp, classes)
    wrong = sorted(before.index[before["f0_miou"] < RIGHT])
    right = len(before) - len(wrong)
    kept = min(len(wrong), round(share * right / (1 - share)))
    left_out = frozenset(np.random.default_rng([seed, 11]).permutation(wrong)[: len(wrong) - kept].tolist())
    label = f"{kept / (right + kept):.2f}"
    log.info("failure share %s: %d of %d failures left out of the pool", label, len(left_out), len(wrong))
    sets, figures = {}, {}
    for strategy in STRATEGIES:
        proposal = propose(
            strategy,
            target=target,
            competitors=competitors,
            bands=bands,
            classes=classes,
            n3=mp.n3,
            distance=mp.distance,
            rank_by=mp.rank_by,
            seed=mp.seed,  # round 0's
            exclude=left_out,
        )
        m = proposal.m["image_id"].tolist()
        miou = true_miou(target.read_maps(m), truth.masks(m), classes.num_classes)
        ratings = simulate_ratings(
            miou,
            truth.ood_ids() & set(m),
            params.annotation.simulated,
            annotators=params.annotation.annotators_per_task,
            round_key="0",
        )
        mos = opinion_scores(ratings, m, params.selection.scores)
        name = f"{strategy}@{label}"
        sets[name] = select_lowest(mos, params.selection.n4)["image_id"].tolist()
        in_domain = before.index.intersection(m)
        figures |= {f"{name}.M_size": len(m), f"{name}.M_f0_miou": float(before.loc[in_domain, "f0_miou"].mean())}
    return sets, figures


def hardness(name: str, ids: list[str], before: pd.DataFrame) -> dict[str, float]:
    """f_t^(0)'s mean per-image mIoU on a set's in-domain images, the share it is wrong on, the mean share of
    object pixels in their truth and its mean entropy on them (``before`` as :func:`truth_figures` gives it)."""
    rows = before.loc[before.index.intersection(ids)]
    return {
        f"{name}.f0_miou": float(rows["f0_miou"].mean()),
        f"{name}.f0_wrong_share": float((rows["f0_miou"] < RIGHT).mean()),
        f"{name}.object_share": float(rows["object_share"].mean()),
        f"{name}.f0_entropy": float(rows["entropy"].mean()),
    }


def study_experiments(params: Params) -> dict[str, tuple[list[str], int, dict[str, float]]]:
    """The validity study's experiments whose S scripts/validity_study.py kept (data/study/<name>.S_all.csv), by
    name: S^(1)'s image ids, the seed, and its f_t^(1)'s D_eval and T0 from the study's CSVs."""
    study, options = (read_csv(t).to_dict("records") if t.exists() else [] for t in STUDY_TABLES)
    # the paper's recipe is the study's own rows; the options table's copies of them may be another world's
    rows = study + [row for row in options if row["option"] != "paper"]
    first, found = params.finetunes["0"].next, {}
    for row in rows:
        option, tail = row.get("option", "paper"), f"{row['strategy']}-s{row['seed']}"
        name = tail if option == "paper" else f"{option}-{tail}"  # as validity_study.py names it
        kept = Path("data/study") / f"{name}.S_all.csv"
        if kept.exists():
            labelled = read_csv(kept, required=["image_id", "round"])
            s1 = labelled.loc[labelled["round"].astype(str) == "0", "image_id"].tolist()
            scores = {g: row[f"target_{first}.{g}"] for g in GROUPS} | {"t0": row[f"target_{first}.T0"]}
            found[name] = (s1, int(row["seed"]), scores)
    return found


def held_out_scores(params: Params, checkpoint: Path, held_out: HeldOutPool) -> list[tuple[str, float]]:
    """A target checkpoint's D_eval mIoU on the in-domain images, the normal ones and the corner cases."""
    classes = params.dataset.class_list()
    predictor = load_predictor(
        checkpoint,
        classes=classes,
        device=resolve_device(params.device),
        policy=params.models.input_policy.overrides(),
    )
    maps = predict_images(predictor, held_out.images, held_out.factors["image_id"].tolist()).maps
    cms = np.stack([confusion_matrix(t, p, classes.num_classes) for t, p in zip(held_out.masks, maps, strict=True)])
    scores = validity.group_scores(cms, held_out.factors)
    return [(g, scores[g][1]) for g in GROUPS]


def _table(out: dict[str, float], rows: list[tuple[str, int, dict[str, float]]]) -> str:
    lines = [
        "| set | f_t^(0) mIoU on it | wrong on | object pixels | seed | in-domain | normal | corner cases | T0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, seed, scores in rows:
        cells = [f"{100 * scores[g]:.2f}" for g in (*GROUPS, "t0")]
        hard = (
            f"{out[f'{name}.f0_miou']:.3f} | {100 * out[f'{name}.f0_wrong_share']:.0f} % | "
            f"{100 * out[f'{name}.object_share']:.0f} %"
        )
        lines.append(f"| {name} | {hard} | {seed} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
