"""What each DVC stage depends on beyond its templates: the code it runs, and the data that params.yaml names.

- Code: its stage module and every madseg module it imports, transitively. Without them `dvc repro` silently
  keeps outputs that a code change made wrong.
- Data named by params that DVC's templates cannot express: every crawl folder, reference set and the URL list
  (a template cannot turn a list into dependencies), and the simulated annotators' truth (declared only while
  ``annotation.backend`` is ``simulated``: a Label Studio campaign has none, and a missing dependency stops DVC).

`madseg dvc-deps` writes both into dvc.yaml (:func:`sync_dvc_yaml`); `madseg run` refuses a stage whose data
dependencies dvc.yaml lacks (:func:`check_declared`), and a test fails when the code lists drift.

Imports are read from the source (``import madseg.x``, ``from madseg.x import y``, relative imports), also those
inside functions, since lazy imports run too. The command line module is the exception: only its module-level
imports run for every stage; its function-level imports belong to other subcommands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from madseg.config import Params
from madseg.stops import ExpectedStop

PACKAGE = "madseg"
SRC = Path(__file__).resolve().parent.parent  # the folder holding the madseg package
ENTRY = "madseg.cli"  # what `madseg run STAGE` executes before the stage module
COMMAND = re.compile(r"\bmadseg run (\w+)")


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None if it is not madseg's."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.AST, module: str, is_package: bool, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)  # type: ignore[attr-defined]
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)  # submodules imported by name
    return names


def closure(modules: Iterable[str]) -> set[Path]:
    """Source files of ``modules`` and of every madseg module they import, transitively (with parent packages)."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a.b.c runs a/__init__ and a/b/__init__ first
        tree = ast.parse(path.read_text(), str(path))
        todo.extend(_imported(tree, name, path.name == "__init__.py", top_level_only=name == ENTRY))
    return files


def stage_code(stage: str) -> list[str]:
    """The files `madseg run <stage>` runs, as dvc.yaml names them (``src/madseg/...``), sorted."""
    if module_file(f"{PACKAGE}.stages.{stage}") is None:
        raise ValueError(f"no stage module madseg.stages.{stage}")
    files = closure([ENTRY, f"{PACKAGE}.stages.{stage}"])
    return sorted(p.relative_to(SRC.parent).as_posix() for p in files)


def command_stage(cmd: str) -> str | None:
    """The madseg stage a dvc.yaml command runs (``madseg run pretrain --model x`` -> ``pretrain``), if any."""
    match = COMMAND.search(cmd)
    return match.group(1) if match else None


# the stages that hand the simulated annotators the pool's truth (madseg.annotation.backend.make_backend)
TRUTH_READERS = ("export_weak_tasks", "import_scores", "export_pixel_tasks", "import_masks")


class PipelineOutOfDate(ExpectedStop):
    """dvc.yaml does not declare data that params.yaml names (run `madseg dvc-deps`)."""

    exit_code = 7


TRUTH_DEP = "${annotation.simulated.truth_dir}"  # DVC fills it in from params.yaml


def data_deps(params: Params) -> dict[str, list[str]]:
    """Stage module -> the dependencies params.yaml names: crawl_index's every folder, reference set and URL list
    (literal paths, sorted: a template cannot expand a list), the truth readers' truth folder (a template)."""
    crawl = {*params.crawl.folders, *params.crawl.reference_sets}
    if params.crawl.url_list:
        crawl.add(params.crawl.url_list)
    truth = [TRUTH_DEP] if params.annotation.backend == "simulated" else []
    return {"crawl_index": sorted(crawl), **{stage: truth for stage in TRUTH_READERS}}


def sync_dvc_yaml(root: Path, params: Params, *, check: bool = False) -> list[str]:
    """Write each stage's code and params-named data dependencies into ``root``/dvc.yaml (comments kept).

    Hand-written dependencies stay: the templated ones (``${...}``) of every stage, and every dependency of the
    stages without params-named data. Returns the names of the stages whose lists changed; with ``check``
    nothing is written.
    """
    from ruamel.yaml import YAML

    rt = YAML()
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    doc = rt.load(path)
    named = data_deps(params)
    drifted = []
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        module = command_stage(body["cmd"])
        if module is None:
            continue
        deps = body.get("deps") or []
        kept = [str(d) for d in deps if not str(d).startswith("src/")]
        if module == "crawl_index":  # every data dependency of the crawl is named by params
            kept = named[module]
        elif module in named:
            kept = named[module] + [d for d in kept if d != TRUTH_DEP]
        wanted = stage_code(module) + kept
        if [str(d) for d in deps] != wanted:
            drifted.append(name)
            if not check:
                deps.clear()
                deps.extend(wanted)
                body["deps"] = deps
    if drifted and not check:
        rt.dump(doc, path)
    return drifted


def check_declared(module: str, params: Params, root: Path = Path(".")) -> None:
    """PipelineOutOfDate when dvc.yaml's stage running ``module`` lacks a dependency params.yaml names."""
    path = root / "dvc.yaml"
    wanted = data_deps(params).get(module)
    if not wanted or not path.exists():
        return
    resolved = {TRUTH_DEP: params.annotation.simulated.truth_dir}
    for name, stage in (yaml.safe_load(path.read_text()).get("stages") or {}).items():
        body = stage.get("do", stage)
        if command_stage(body.get("cmd", "")) == module:
            missing = [resolved.get(d, d) for d in wanted if d not in (body.get("deps") or [])]
            if missing:
                raise PipelineOutOfDate(
                    f"dvc.yaml does not declare {missing} as dependencies of {name}, which params.yaml names: "
                    "run `madseg dvc-deps` (it writes them in), then `dvc repro`"
                )
