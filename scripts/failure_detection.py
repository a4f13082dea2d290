"""How well each strategy's score finds the target's failures on its own: round 0, against the pool's hidden truth.

MAD ranks an image by how much the competitors disagree with the target; entropy by the target's own uncertainty.
Where the target is unsure exactly where it is wrong, its entropy already finds its failures and the competitors
add little; MAD's case is the target that is wrong and sure of itself. This measures which world a project is in.
On every in-domain pool image the target is wrong where its per-image mIoU against the truth is under 0.5, as
``target_wrong_share`` counts it. Per score:
- ``auroc``: the chance that a failure scores above an image the target gets right;
- ``top_wrong_share``: the share of failures among the in-domain images of the score's top n pool images, n =
  |M^(1)| of the project (``top_in_domain`` of them: the out-of-domain ones are the raters' to veto, as in M);
- ``top_over_pool_miou``: the target's mean per-image mIoU on those images over that on the whole in-domain pool;
- ``top_object_share``: the mean share of their pixels that the truth gives an object class (the
  pool's own: ``object_share``), i.e. how much labelled object the same number of images carries.

The scores: ``entropy`` (the entropy strategy's: the target's mean per-pixel entropy), ``mad`` (the largest
distance between the target's map and a competitor's, ``mining.distance``; MAD itself takes the top of each
competitor, class and direction group within the class's area band, so this is its score without the groups) and
``committee`` (the mean distance over the competitors). Beside them ``failures_sure_share``: the share of the
failures whose entropy lies in the lower half of the in-domain pool's, the failures that entropy ranks low.

Writes metrics/failure_detection.json (flat keys ``<world>.<score>.<figure>``, every world in one file) and
prints them. Reads the truth, so it validates and never feeds the loop. Run from the root of a project whose
round 0 is done (`madseg demo`, or the photo world's), a few seconds:

    .venv/bin/python scripts/failure_detection.py --world photos
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from madseg import paths
from madseg.annotation.simulated import true_miou
from madseg.backends import round_stores
from madseg.config import Params, load_params
from madseg.io.atomic import read_json, write_json
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv
from madseg.io.truth import read_factors, read_truth_masks
from madseg.mining.bands import class_area_fractions
from madseg.mining.kernel import shard_pair_stats

log = logging.getLogger("madseg.failure_detection")
OUT = Path("metrics/failure_detection.json")
WRONG = 0.5  # per-image mIoU under which the target is wrong, as target_wrong_share counts it


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (the Mann–Whitney U over both counts)."""
    ranks = rankdata(score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pool_scores(
    target: PredictionStore, competitors: dict[str, PredictionStore], num_classes: int, distance: str
) -> pd.DataFrame:
    """Per pool image (index id): ``entropy``, ``mad`` and ``committee``, as the module says."""
    parts = []
    shards = zip(target.iter_shards(), *(s.iter_shards() for s in competitors.values()), strict=True)
    for target_shard, *others in shards:
        ids, _, versus = shard_pair_stats(
            target_shard, dict(zip(competitors, others, strict=True)), num_classes, distance
        )
        distances = np.stack([distance for _, distance in versus.values()], axis=1)  # (N, competitors)
        parts.append(pd.DataFrame({"mad": distances.max(1), "committee": distances.mean(1)}, index=ids))
    return pd.concat(parts).join(target.stats().set_index("id")["entropy"].astype(np.float64))


def detection(params: Params, top_n: int) -> dict[str, float]:
    """The figures of the module docstring for this project."""
    classes, truth_dir = params.dataset.class_list(), params.annotation.simulated.truth_dir
    kinds = read_factors(truth_dir).set_index("image_id")["kind"]
    target, competitors = round_stores("0", params.models.competitors, params.mining.self_consistency)
    scores = pool_scores(target, competitors, classes.num_classes, params.mining.distance)
    scores = scores.sort_index()  # ties below: id ascending, as the baselines break them
    ids = [i for i in scores.index if kinds[i] != "ood"]
    truth = read_truth_masks(truth_dir, ids, classes)
    miou = pd.Series(true_miou(target.read_maps(ids), truth, classes.num_classes)).loc[ids]
    wrong = miou < WRONG
    objects = pd.Series([class_area_fractions(truth[i], classes.num_classes)[1:].sum() for i in ids], index=ids)
    figures = {"images": float(len(ids)), "wrong_share": float(wrong.mean()), "top_n": float(top_n)}
    figures["object_share"] = float(objects.mean())
    for name in ("entropy", "mad", "committee"):
        # the top n of the whole pool, as M is drawn; its out-of-domain images are the raters' to veto
        top = [i for i in scores[name].sort_values(ascending=False, kind="stable").index[:top_n] if kinds[i] != "ood"]
        figures[f"{name}.auroc"] = auroc(scores.loc[ids, name].to_numpy(), wrong.to_numpy())
        figures[f"{name}.top_in_domain"] = float(len(top))
        figures[f"{name}.top_wrong_share"] = float(wrong[top].mean())
        figures[f"{name}.top_over_pool_miou"] = float(miou[top].mean() / miou.mean())
        figures[f"{name}.top_object_share"] = float(objects[top].mean())
    entropy = scores.loc[ids, "entropy"]
    figures["failures_sure_share"] = float((entropy[wrong] < entropy.median()).mean())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="the key prefix, e.g. 'photos' or 'demo'")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params("params.yaml")
    m = paths.mining_dir("0") / "M.csv"
    if not m.exists():
        raise SystemExit(f"round 0 is not done here (run `madseg demo` first): missing {m}")
    figures = detection(params, top_n=len(read_csv(m, required=["image_id"])))
    merged = (read_json(OUT) if OUT.exists() else {}) | {f"{args.world}.{k}": v for k, v in figures.items()}
    write_json(OUT, dict(sorted(merged.items())))
    for key, value in figures.items():
        log.info("%-30s %.3f", f"{args.world}.{key}", value)


if __name__ == "__main__":
    main()
