"""How stable the failure slices' recovery of the demo world's truth factors is, and how far it is from its
bound.

For every round of the demo, finds the slices of M^(i+1) again (madseg.slices.find_slices, as the slices stage
does) for each k-means seed and cluster count asked for, and counts the truth factors the 10 top slices
recover. Beside it, per round: the factors a rule of the slices' own vocabulary isolates when chosen with the
truth (madseg.slices.hindsight_bound), and the same search's count for the factors shuffled among M's images
(its chance level). Writes metrics/slices_study.json (flat keys ``round_<r>.clusters_<k>.seed_<s>``,
``round_<r>.clusters_<k>.mean``, ``round_<r>.hindsight``, ``round_<r>.hindsight_shuffled``) and prints a
markdown table. Needs a finished demo (`madseg demo`); reads the truth, so it validates and never feeds the
loop. Run from the project root (the demo's three rounds, 3 seeds x 4 cluster counts: about a minute):

    .venv/bin/python scripts/slice_study.py [--seeds 0,1,2] [--clusters 10,12,15,20]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from madseg import paths
from madseg.config import load_params
from madseg.io.atomic import write_json
from madseg.io.store import PredictionStore
from madseg.io.tables import read_csv
from madseg.io.truth import read_pool_factors
from madseg.slices import factors_recovered, find_slices, hindsight_bound, slice_table
from madseg.validity import factor_names

log = logging.getLogger("madseg.slice_study")
OUT = Path("metrics/slices_study.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="k-means seeds (slices.seed values)")
    parser.add_argument("--clusters", default="10,12,15,20", help="cluster counts (slices.clusters values)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds, cluster_counts = _ints(args.seeds), _ints(args.clusters)
    params = load_params("params.yaml")
    pool_factors = read_pool_factors(params.annotation.simulated.truth_dir)
    factors = factor_names(pool_factors)
    attributes = read_csv(paths.POOL_ATTRIBUTES, required=["id"]).set_index("id")
    out: dict[str, float] = {}
    rows = []
    for round_key in sorted(params.rounds, key=int):
        table = slice_table(
            attributes,
            PredictionStore(paths.target_predictions(round_key)).stats(),
            params.dataset.class_list().names,
        )
        m = read_csv(paths.mining_dir(round_key) / "M.csv", required=["image_id"])["image_id"]
        m_factors = pool_factors.reindex(m).fillna("")
        in_m = table.index.isin(m)
        row = {"round": round_key, "M": len(m)}
        for k in cluster_counts:
            counts = []
            for seed in seeds:
                slices = find_slices(table, in_m, clusters=k, seed=seed)
                counts.append(len(factors_recovered(slices, m_factors, factors, top=10)))
                out[f"round_{round_key}.clusters_{k}.seed_{seed}"] = counts[-1]
            out[f"round_{round_key}.clusters_{k}.mean"] = float(np.mean(counts))
            row[f"k = {k}"] = f"{np.mean(counts):.1f} ({min(counts)}–{max(counts)})"
        bound = hindsight_bound(table, in_m, m_factors, factors, seed=params.seed)
        out[f"round_{round_key}.hindsight"] = bound["factors_describable_in_hindsight"]
        out[f"round_{round_key}.hindsight_shuffled"] = bound["factors_describable_shuffled"]
        row |= {
            "hindsight": str(bound["factors_describable_in_hindsight"]),
            "shuffled": f"{bound['factors_describable_shuffled']:.1f}",
        }
        rows.append(row)
    write_json(OUT, out)
    header = list(rows[0])
    table_md = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    table_md += [f"| {' | '.join(str(r[h]) for h in header)} |" for r in rows]
    log.info(
        "factors recovered by the 10 top slices, mean (min–max) over seeds %s:\n%s",
        seeds,
        "\n".join(table_md),
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


if __name__ == "__main__":
    main()
