"""Layers: no import cycle among madseg's modules, counting the imports inside functions (they run too) and
``importlib.import_module`` of a literal name (or of an f-string's literal prefix: every module it completes).

The graph is read from the source, not from an interpreter's imports, so an import that a branch or a lazy
function would reach only sometimes still counts. An edge goes to the most specific madseg module an import
names (``from madseg.io import store`` -> ``madseg.io.store``; ``from madseg.mining import mine_mad`` ->
``madseg.mining``, the package's ``__init__``). Importing a submodule also runs its parent packages'
``__init__``, but that is not an edge: a package that re-exports its own submodules is no cycle, while a
submodule that imports its package's ``__init__`` by name is one.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from pathlib import Path

import madseg

SRC = Path(madseg.__file__).resolve().parent
PACKAGE = "madseg"
Edges = dict[str, dict[str, int]]  # module -> imported module -> line of the first such import


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific madseg module that ``name`` (a module or a name inside one) lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_import_module(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _dynamic(arg: ast.expr, modules: dict[str, Path]) -> list[str]:
    """What ``importlib.import_module(arg)`` may import: a literal module, or for an f-string with a literal
    prefix (``f"madseg.stages.{stage}"``) every module that completes it."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return [m for m in modules if m.startswith(prefix) and "." not in m[len(prefix) :]]
    return []


def import_graph() -> tuple[Edges, dict[str, Path]]:
    """Every madseg module's imports of madseg modules, wherever in the file they are."""
    modules = _modules()
    edges: Edges = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    source = f"{base}.{source}" if source else base
                # `from pkg import sub` imports the submodule; `from pkg import name` only the package
                names = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
                names = _dynamic(node.args[0], modules)
            for name in names:
                if name != PACKAGE and not name.startswith(PACKAGE + "."):
                    continue
                target = _target(name, modules)
                if target is not None and target != module:
                    found[target] = min(found.get(target, node.lineno), node.lineno)
        edges[module] = found
    return edges, modules


def strongly_connected(edges: Edges) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def a_cycle(component: list[str], edges: Edges) -> list[str]:
    """A shortest cycle through the component's first module, as modules (the first repeated at the end)."""
    start, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child in inside and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component of two or more always has one


def describe(component: list[str], edges: Edges, modules: dict[str, Path]) -> str:
    cycle = a_cycle(component, edges)
    steps = [
        f"    {a} ({modules[a].relative_to(SRC.parent.parent)}:{edges[a][b]}) imports {b}"
        for a, b in itertools.pairwise(cycle)
    ]
    return f"  cycle among {len(component)} modules {component}, e.g.:\n" + "\n".join(steps)


def test_no_import_cycle_among_madseg_modules():
    edges, modules = import_graph()
    components = strongly_connected(edges)
    report = "\n".join(describe(c, edges, modules) for c in components)
    print(report or "no import cycle")
    assert not components, f"{len(components)} import cycle(s) among madseg modules:\n{report}"


def reached(start: str, edges: Edges) -> set[str]:
    """The modules that importing ``start`` runs: its imports, transitively, with their parent packages."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [*edges.get(module, {}), *([module.rpartition(".")[0]] if "." in module else [])]
    return seen


def test_the_library_stays_below_the_backends():
    """Only stages and commands choose a backend: inference and mining never reach cluster or backends, mining
    reads no file (arrays and frames in, frames out), and the stages that train or evaluate run no mining."""
    edges, _ = import_graph()
    above = {"madseg.backends", "madseg.cluster"}
    file_io = {"madseg.io.store", "madseg.io.atomic", "madseg.io.images", "madseg.io.tables", "madseg.io.voc"}
    assert not reached("madseg.inference", edges) & (above | {"madseg.mining"})
    assert not reached("madseg.mining", edges) & (above | file_io | {"madseg.inference"})
    for stage in ("pretrain", "evaluate", "finetune"):
        ran = reached(f"madseg.stages.{stage}", edges)
        assert not {m for m in ran if m in above or m.startswith("madseg.mining")}, stage


def test_models_and_io_sit_below_the_params():
    """config checks values against the models' input policies and views, so no model or file format may read
    params: what adopts a user's files as params name them (madseg.artefacts) lives above config."""
    edges, modules = import_graph()
    below = [m for m in modules if m.startswith(("madseg.models", "madseg.io", "madseg.labels"))]
    assert below and not [m for m in below if "madseg.config" in reached(m, edges)]


# ---------------------------------------------------------------------------- the checker on planted graphs
def test_the_checker_finds_a_planted_cycle_and_names_it():
    edges: Edges = {
        "a": {"b": 1},
        "b": {"c": 2},
        "c": {"a": 3, "d": 4},
        "d": {},
        "e": {"e": 5},
        "f": {"d": 1},
    }
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert a_cycle(["a", "b", "c"], edges) == ["a", "b", "c", "a"]
    assert strongly_connected({"x": {"y": 1}, "y": {}}) == []


def test_imports_inside_functions_and_submodules_count():
    edges, modules = import_graph()
    assert "madseg.mining" in modules and modules["madseg.mining"].name == "__init__.py"
    # the package re-exports its submodules: an edge from the package to them, none back
    assert "madseg.mining.mad" in edges["madseg.mining"]
    assert "madseg.mining" not in edges["madseg.mining.mad"]
    # `from madseg import paths` names the module paths, not the package madseg
    assert "madseg.compare" in edges["madseg.cli"]  # importlib.import_module("madseg.compare")
    assert "madseg.paths" in edges["madseg.stages.mine"] and PACKAGE not in edges["madseg.stages.mine"]
