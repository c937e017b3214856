"""The modules of tdn_calc import each other without cycles.

Every ``import`` and ``from ... import`` of a tdn_calc module counts, at module level or inside
a function (a function-level import hides a cycle from Python, not from the design). The
sources are parsed with ``ast``, nothing is imported. ``cli/`` and ``models/`` install as
``tdn_calc.cli`` and ``tdn_calc.models`` (pyproject.toml), so they are read under those names.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tdn_calc"
# source folder -> the package it installs as
SOURCES = {
    ROOT / "tdn_calc": PACKAGE,
    ROOT / "cli": "tdn_calc.cli",
    ROOT / "models": "tdn_calc.models",
}

Edge = tuple[str, str, str]  # (importer, imported, "file:line")


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the installed package."""
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, known: set[str]):
    """The tdn_calc modules an import statement names (``from pkg import sub`` names
    ``pkg.sub`` when that is a module, else ``pkg``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importer's package
        base = module.split(".") if _is_package(path) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    names = [f"{source}.{alias.name}" for alias in node.names]
    return [name if name in known else source for name in names]


def _implied(target: str, importer: str, known: set[str]) -> list[str]:
    """``target`` and the packages above it that importing it runs first, less those the
    importer sits in (they are already being imported when it runs)."""
    parts = target.split(".")
    chain = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
    mine = importer.split(".")
    own = {".".join(mine[:k]) for k in range(1, len(mine) + 1)}
    return [name for name in chain if name in known and (name == target or name not in own)]


def import_edges() -> list[Edge]:
    """Every import of one tdn_calc module by another, with where it is written."""
    modules = _modules()
    known = set(modules)
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for target in _targets(node, module, path, known):
                for name in _implied(target, module, known):
                    if name != module:
                        edges.append((module, name, where))
    return edges


def find_cycle(edges: list[Edge]) -> list[Edge]:
    """One import cycle as its edges in order, or ``[]`` when the graph is acyclic."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge[0], []).append(edge)
    done: set[str] = set()
    stack: list[str] = []  # the modules on the current path
    path: list[Edge] = []  # path[k] leads from stack[k] to stack[k + 1]

    def visit(node: str) -> list[Edge]:
        stack.append(node)
        for edge in graph.get(node, []):
            target = edge[1]
            if target in stack:
                return [*path[stack.index(target) :], edge]
            if target not in done:
                path.append(edge)
                found = visit(target)
                if found:
                    return found
                path.pop()
        stack.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done:
            found = visit(node)
            if found:
                return found
    return []


def _describe(cycle: list[Edge]) -> str:
    return "\n".join(f"  {a} -> {b}  ({where})" for a, b, where in cycle)


def test_the_module_list_covers_cli_and_models():
    modules = _modules()
    assert "tdn_calc.cli.main" in modules
    assert "tdn_calc.models" in modules
    assert "tdn_calc.checkpoint" in modules


def test_the_parser_sees_relative_absolute_and_function_level_imports():
    edges = {(a, b) for a, b, _ in import_edges()}
    assert ("tdn_calc.graph", "tdn_calc.atomic_graph") in edges  # from .atomic_graph import
    assert ("tdn_calc.cli.data", "tdn_calc.cli.data_catalysis") in edges  # cli/ relative
    assert ("tdn_calc.cli.data", "tdn_calc.cli._run") in edges  # tdn_calc.cli = cli/
    assert ("tdn_calc.train.trainer", "tdn_calc.checkpoint") in edges  # in a function, ..
    assert ("tdn_calc.cli.models", "tdn_calc.registry") in edges  # in a function, absolute
    assert ("tdn_calc.calculator", "tdn_calc.checkpoint") in edges


def test_find_cycle_names_the_cycle():
    edges = [("a", "b", "a.py:1"), ("b", "c", "b.py:2"), ("c", "a", "c.py:3"), ("a", "d", "a:4")]
    assert [e[:2] for e in find_cycle(edges)] == [("a", "b"), ("b", "c"), ("c", "a")]
    assert find_cycle([("a", "b", ""), ("b", "c", ""), ("a", "c", "")]) == []


def test_the_data_format_does_not_import_the_data_pipelines():
    """tdn_calc.data (format, readers) sits below tdn_calc.datagen (the pipelines)."""
    upward = [
        (a, b, where)
        for a, b, where in import_edges()
        if a.split(".")[:2] == ["tdn_calc", "data"] and b.split(".")[:2] == ["tdn_calc", "datagen"]
    ]
    assert not upward, "tdn_calc.data imports tdn_calc.datagen:\n" + _describe(upward)


def test_tdn_calc_has_no_import_cycle():
    cycle = find_cycle(import_edges())
    assert not cycle, "import cycle among tdn_calc modules:\n" + _describe(cycle)
