"""Write (or check) each dvc.yaml stage's code dependencies: the files `madseg run STAGE` runs.

    .venv/bin/python scripts/stage_code.py          # rewrite dvc.yaml's src/ dependencies in place
    .venv/bin/python scripts/stage_code.py --check  # exit 1 and name the stages whose lists drifted

Data dependencies are kept as they are; comments and layout of dvc.yaml survive (ruamel's round trip).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ruamel.yaml import YAML

from madseg.stage_code import command_stage, stage_code

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("madseg.stage_code")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = ROOT / "dvc.yaml"
    doc = yaml.load(path)
    drifted = []
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        module = command_stage(body["cmd"])
        if module is None:
            continue
        deps = body.get("deps", [])
        code = stage_code(module, ROOT)
        current = [d for d in deps if isinstance(d, str) and d.startswith("src/")]
        if current != code:
            drifted.append(name)
            data = [d for d in deps if not (isinstance(d, str) and d.startswith("src/"))]
            deps.clear()
            deps.extend(code + data)
            body["deps"] = deps
    if args.check:
        if drifted:
            log.error(
                "code dependencies drifted in dvc.yaml: %s (run scripts/stage_code.py)", ", ".join(drifted)
            )
            sys.exit(1)
        return
    if drifted:
        yaml.dump(doc, path)
    log.info("dvc.yaml: %d stages rewritten: %s", len(drifted), ", ".join(drifted) or "none")


if __name__ == "__main__":
    main()
