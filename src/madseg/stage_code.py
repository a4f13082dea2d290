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
from madseg.stops import PipelineOutOfDate

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
TRUTH_DEP = "${annotation.simulated.truth_dir}"  # DVC fills it in from params.yaml
TARGET_STAGE = "pretrain_target"
TARGET_CURVE = "metrics/pretrain/target_curve.csv"  # written only when the target is trained here


def data_deps(params: Params) -> dict[str, list[str]]:
    """dvc.yaml stage name -> the dependencies params.yaml names: crawl_index's every folder, reference set and URL
    list (literal paths, sorted: a template cannot expand a list), the photo world's sources (make_world), the
    truth readers' truth folder (a template), and the file of a target the user brings (a path only some targets
    have)."""
    crawl = {*params.crawl.folders, *params.crawl.reference_sets}
    if params.crawl.url_list:
        crawl.add(params.crawl.url_list)
    truth = [TRUTH_DEP] if params.annotation.backend == "simulated" else []
    target = [params.models.target.path] if params.models.target.path else []
    world = [params.world.photos.sources] if params.world.kind == "photos" else []
    return {
        "crawl_index": sorted(crawl),
        "make_world": world,
        TARGET_STAGE: target,
        **{stage: truth for stage in TRUTH_READERS},
    }


def trains_target(params: Params) -> bool:
    """Whether the pretrain stage trains the target (and so writes its loss curve) rather than adopting a file."""
    return params.models.target.source == "registry" and params.models.target.path is None


def _curve_declared(body) -> bool:
    return any(TARGET_CURVE in (p if isinstance(p, dict) else {p: None}) for p in body.get("plots") or [])


def _declare_curve(body, declared: bool) -> None:
    plots = [p for p in body.get("plots") or [] if TARGET_CURVE not in (p if isinstance(p, dict) else {p: None})]
    if declared:
        plots.append({TARGET_CURVE: {"cache": False, "x": "step", "y": "loss"}})
    if plots:
        body["plots"] = plots
    else:
        body.pop("plots", None)


def sync_dvc_yaml(root: Path, params: Params, *, check: bool = False) -> list[str]:
    """Write each stage's code and params-named data dependencies into ``root``/dvc.yaml (comments kept).

    Hand-written dependencies stay: the templated ones (``${...}``) of every stage, and every dependency of the
    stages without params-named data. The target's loss curve is declared only while the target is trained
    here. Returns the names of the stages whose lists changed; with ``check`` nothing is written.
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
        if name in ("crawl_index", "make_world"):  # every data dependency of theirs is named by params
            kept = named[name]
        elif name in named:  # the params-named ones are written anew; the templated ones stay
            kept = named[name] + [d for d in kept if d != TRUTH_DEP and (name != TARGET_STAGE or "${" in d)]
        wanted = stage_code(module) + kept
        curve_drifted = name == TARGET_STAGE and _curve_declared(body) != trains_target(params)
        if [str(d) for d in deps] != wanted or curve_drifted:
            drifted.append(name)
            if not check:
                deps.clear()
                deps.extend(wanted)
                if "deps" not in body:  # a template's stage without hand-written deps: they follow its command
                    body.insert(list(body).index("cmd") + 1, "deps", deps)
                if name == TARGET_STAGE:
                    _declare_curve(body, trains_target(params))
    if drifted and not check:
        rt.dump(doc, path)
    return drifted


def stage_name(module: str, model: str | None = None) -> str:
    """The dvc.yaml stage a `madseg run` call belongs to (the target's pretraining has a stage of its own)."""
    return TARGET_STAGE if module == "pretrain" and model == "target" else module


def check_declared(module: str, params: Params, root: Path = Path("."), *, model: str | None = None) -> None:
    """PipelineOutOfDate when dvc.yaml's stage running ``module`` lacks a dependency params.yaml names."""
    path = root / "dvc.yaml"
    name = stage_name(module, model)
    wanted = data_deps(params).get(name)
    if not wanted or not path.exists():
        return
    resolved = {TRUTH_DEP: params.annotation.simulated.truth_dir}
    body = (yaml.safe_load(path.read_text()).get("stages") or {}).get(name)
    if body is None:
        return
    body = body.get("do", body)
    missing = [resolved.get(d, d) for d in wanted if d not in (body.get("deps") or [])]
    if missing:
        raise PipelineOutOfDate(
            f"dvc.yaml does not declare {missing} as dependencies of {name}, which params.yaml names — "
            "run `madseg dvc-deps` (it writes them in), then `dvc repro`"
        )
