"""Which source files each DVC stage runs: its stage module and every madseg module it imports, transitively.

dvc.yaml must list them as dependencies, or `dvc repro` silently keeps outputs that a code change made wrong.
``scripts/stage_code.py`` writes the lists into dvc.yaml; a test fails when they drift.

Imports are read from the source (``import madseg.x``, ``from madseg.x import y``, relative imports), also those
inside functions, since lazy imports run too. The command line module is the exception: only its module-level
imports run for every stage; its function-level imports belong to other subcommands.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

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


def stage_code(stage: str, root: Path) -> list[str]:
    """The files `madseg run <stage>` runs, relative to ``root`` (the project), sorted."""
    if module_file(f"{PACKAGE}.stages.{stage}") is None:
        raise ValueError(f"no stage module madseg.stages.{stage}")
    files = closure([ENTRY, f"{PACKAGE}.stages.{stage}"])
    return sorted(p.relative_to(root.resolve()).as_posix() for p in files)


def command_stage(cmd: str) -> str | None:
    """The madseg stage a dvc.yaml command runs (``madseg run pretrain --model x`` -> ``pretrain``), if any."""
    match = COMMAND.search(cmd)
    return match.group(1) if match else None
