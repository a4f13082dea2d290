"""The photo world's figures of issue 30 in one flat file: metrics/photo_study.json.

Reads a finished photo-world project (`madseg photos fetch`, `madseg init --demo --preset photos`, `madseg demo`):
its metrics/validity.json (T0 of every round, the corner-case gain, M's mIoU beside entropy's and random's picks at
the same budget), metrics/slices.json (the truth factors the final round's top 10 slices recover),
metrics/rounds/round_0.json (every model's T0) and, where scripts/validity_study.py has run there,
metrics/study.json (MAD's margins over entropy and random across seeds).
A figure that was not measured is written as null, never guessed. Run from this project's root:

    .venv/bin/python scripts/photo_study.py PHOTO_PROJECT [--host "2-core AMD EPYC"] [--minutes 41.5]
"""

from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path

from madseg import paths
from madseg.io.atomic import read_json, write_json

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
        "corner_miou_gain": validity.get("corner_miou_gain"),
        "t0_drop": validity.get("t0_drop"),
        "seeds": len(study.get("seeds", [])) or None,  # how many seeds the study's margins are the mean of
        "slices_factors_recovered": slices.get("slices_factors_recovered"),
        "slices_factors": slices.get("factors"),
        # every model's T0 at round 0: the competitors should be strong too (within 15 points of the target)
        **{f"T0.{key[: -len('.T0.miou')]}": value for key, value in round_0.items() if key.endswith(".T0.miou")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a finished photo-world project")
    parser.add_argument("--host", default=None, help="where it ran, e.g. '2-core AMD EPYC'")
    parser.add_argument("--minutes", type=float, default=None, help="the demo's wall time there")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = photo_study(args.project)
    figures.update(host=args.host, demo_minutes=args.minutes, date=datetime.date.today().isoformat())
    write_json(OUT, figures)
    for key, value in figures.items():
        log.info("%-26s %s", key, value)


if __name__ == "__main__":
    main()
