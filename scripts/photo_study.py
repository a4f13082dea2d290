"""The photo world's figures of issue 30 in one flat file: metrics/photo_study.json.

Reads a finished photo-world project (`madseg photos fetch`, `madseg init --demo --preset photos`, `madseg demo`):
its metrics/validity.json (T0 of every round, the corner-case gain, M's mIoU beside entropy's and random's picks at
the same budget), metrics/slices.json (the truth factors the final round's top 10 slices recover),
metrics/rounds/round_0.json (every model's T0) and, where scripts/validity_study.py has run there,
metrics/study.json (MAD's margins over entropy and random across seeds).
Beside them, why MAD's picks are or are not hard for the target (truth-based, round 0): where the target and a
competitor disagree in M, how often the competitor is the worse of the two (``m_competitor_worse_share``), and how
often each competitor beats the target on random in-domain pool images (``pool_competitor_better.<name>``), and
the share of the whole in-domain pool the target is wrong on (``pool_wrong_share``; ``pool_wrong_share_normal``
on its normal images), where ``target_wrong_share`` is a random sample's.
A figure that was not measured is written as null, never guessed. Run from this project's root:

    .venv/bin/python scripts/photo_study.py PHOTO_PROJECT [--host "2-core AMD EPYC"] [--minutes 41.5]
"""

from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from madseg import paths
from madseg.annotation.simulated import true_miou
from madseg.config import load_params
from madseg.io.atomic import read_json, write_json
from madseg.io.store import PredictionStore
from madseg.io.truth import read_factors, read_truth_masks

log = logging.getLogger("madseg.photo_study")
OUT = Path("metrics/photo_study.json")


def photo_study(project: Path) -> dict:
    """The flat figures of ``project`` (a finished photo-world demo); None where one was not measured."""
    validity = read_json(project / "metrics/validity.json")
    round_0 = read_json(project / "metrics/rounds/round_0.json")
    slices = read_json(project / "metrics/slices.json")
    study_file = project / paths.STUDY
    study = read_json(study_file) if study_file.exists() else {}
    return {
        "target_T0": validity.get("target_0.T0"),
        "target_wrong_share": validity.get("target_wrong_share"),
        "m_over_random_miou": validity.get("m_over_random_miou"),
        "entropy_over_random_miou": validity.get("entropy_over_random_miou"),
        "mad_minus_entropy": study.get("mad_minus_entropy"),
        "mad_minus_random": study.get("mad_minus_random"),
        # the goals hold "in 3 of 3 seeds": the worst seed's margin, and in how many seeds MAD's target was ahead
        **{
            f"mad_minus_{other}_{figure}": value(_measured(study.get(f"mad_minus_{other}_by_seed")) or [None])
            for other in ("entropy", "random")
            for figure, value in (("min", min), ("max", max))
        },
        "mad_beats_entropy_in_seeds": study.get("mad_beats_entropy_in_seeds"),
        "mad_beats_random_in_seeds": study.get("mad_beats_random_in_seeds"),
        # what each strategy's labels cost beside the image count the margins hold equal: regions, object pixels
        **{key: value for key, value in study.items() if key.startswith("S.")},
        "corner_miou_gain": validity.get("corner_miou_gain"),
        "t0_drop": validity.get("t0_drop"),
        "seeds": len(study.get("seeds", [])) or None,  # how many seeds the study's margins are the mean of
        "slices_factors_recovered": slices.get("slices_factors_recovered"),
        "slices_factors": slices.get("factors"),
        # every model's T0 at round 0: the competitors should be strong too (within 15 points of the target)
        **{f"T0.{key[: -len('.T0.miou')]}": value for key, value in round_0.items() if key.endswith(".T0.miou")},
    }


def _measured(values: list | None) -> list[float]:
    """The seeds' figures that were measured (a strategy not run at a seed is NaN there)."""
    return [v for v in values or [] if pd.notna(v)]


def who_is_wrong(project: Path, sample: int = 300, seed: int = 0) -> dict:
    """Round 0, against the pool's hidden truth. Per competitor, on the images of M it proposed (out-of-domain ones
    aside): the target's mean per-image mIoU (``m_target_miou.<name>``) and the share where the competitor's is
    under the target's (``m_competitor_worse.<name>``: the disagreement is mostly the competitor's own error); on
    ``sample`` random in-domain normal pool images (seeded), the share it beats the target on
    (``pool_competitor_better.<name>``). ``m_competitor_worse_share``: over all of M's picks."""
    params = load_params(project / "params.yaml")
    classes, truth_dir = params.dataset.class_list(), project / params.annotation.simulated.truth_dir
    k, kinds = classes.num_classes, read_factors(truth_dir).set_index("image_id")["kind"]
    target = PredictionStore(project / paths.target_predictions("0"))
    competitors = {
        name: PredictionStore(project / paths.competitor_predictions(name)) for name in params.models.competitors
    }

    def mious(store: PredictionStore, ids: list[str], masks: dict) -> pd.Series:
        return pd.Series(true_miou(store.read_maps(sorted(ids)), masks, k))

    # f_t^(0) against the truth on every in-domain pool image, once: M's picks and the sample below are among them
    in_domain = sorted(set(kinds.index[kinds != "ood"]) & set(target.ids()))
    masks = read_truth_masks(truth_dir, in_domain, classes)
    on_target = mious(target, in_domain, masks)
    picks = pd.read_csv(project / paths.mining_dir("0") / "M.csv")
    picks = picks[picks["image_id"].map(kinds) != "ood"]
    figures, worse = {}, []
    for name, group in picks.groupby("competitor"):
        ids = group["image_id"]
        worse.append(mious(competitors[name], ids, masks).loc[ids].to_numpy() < on_target.loc[ids].to_numpy())
        figures[f"m_target_miou.{name}"] = float(on_target.loc[ids].mean())
        figures[f"m_competitor_worse.{name}"] = float(worse[-1].mean())
    # target_wrong_share above is a sample's (validity's random candidates); here the whole pool's, exactly
    wrong = on_target < 0.5
    figures["pool_wrong_share"] = float(wrong.mean())
    figures["pool_wrong_share_normal"] = float(wrong[kinds.loc[wrong.index] == "normal"].mean())
    normal = [i for i in in_domain if kinds[i] == "normal"]
    drawn = sorted(np.random.default_rng(seed).choice(normal, min(sample, len(normal)), replace=False))
    baseline = on_target.loc[drawn]
    for name, store in competitors.items():
        figures[f"pool_competitor_better.{name}"] = float((mious(store, drawn, masks) > baseline).mean())
    return {"m_competitor_worse_share": float(np.concatenate(worse).mean()), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a finished photo-world project")
    parser.add_argument("--host", default=None, help="where it ran, e.g. '2-core AMD EPYC'")
    parser.add_argument("--minutes", type=float, default=None, help="the demo's wall time there")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = photo_study(args.project) | who_is_wrong(args.project)
    figures.update(host=args.host, demo_minutes=args.minutes, date=datetime.date.today().isoformat())
    write_json(OUT, figures)
    for key, value in figures.items():
        log.info("%-26s %s", key, value)


if __name__ == "__main__":
    main()
