"""Every import that runs when a module of tdn_calc/ or cli/ is imported needs a declared
core dependency (a plain ``pip install tdn-calc`` must work: ``tdn train`` once failed for
want of PyYAML), and every optional package imported lazily is named by some extra.

Module-level imports are statements outside any function; those inside a
``try: ... except ImportError`` are optional by construction and count as lazy."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "tdn_calc").rglob("*.py")), *sorted((ROOT / "cli").rglob("*.py"))]
# import names whose distribution packages_distributions() may not know (not installed here)
KNOWN = {"yaml": "pyyaml", "sevenn": "sevenn", "tblite": "tblite", "rdkit": "rdkit",
         "datamol": "datamol", "lmdb": "lmdb", "threadpoolctl": "threadpoolctl",
         "matplotlib": "matplotlib", "torch_sim": "torch-sim-atomistic", "chgnet": "chgnet",
         "gpaw": "gpaw", "dask": "dask", "distributed": "distributed", "quacc": "quacc"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project.get("optional-dependencies", {}).values()
              for r in reqs}
    return core, extras


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names):
            return True
    return False


def _imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """``(top-level name, line, eager)`` of every absolute import; eager: module level and
    outside ``try/except ImportError``."""
    found = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never imported at run time
            elif isinstance(child, ast.Try) and _catches_import_error(child):
                visit(child, False)
            elif isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], child.lineno, eager) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, eager))
            else:
                visit(child, eager)

    visit(tree, True)
    return found


@functools.cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once


def _distributions(top: str) -> set[str]:
    """The distributions that provide import name ``top`` (several for namespace packages:
    pymatgen is pymatgen and pymatgen-core)."""
    found = {_name(d) for d in _installed().get(top, [])}
    return found or ({KNOWN[top]} if top in KNOWN else set())


def _audit() -> tuple[list[str], list[str]]:
    core, extras = _declared()
    eager_problems, lazy_problems = [], []
    for path in SOURCES:
        for top, line, eager in _imports(ast.parse(path.read_text(), str(path))):
            if top in sys.stdlib_module_names or top in ("tdn_calc", "__future__"):
                continue
            dists = _distributions(top)
            where = f"{path.relative_to(ROOT)}:{line}: import {top}"
            dist = " or ".join(sorted(dists)) or "unknown"
            if eager and not dists & core:
                eager_problems.append(f"{where} (distribution {dist}) is not a core dependency")
            elif not eager and not dists & (core | extras):
                lazy_problems.append(f"{where} (distribution {dist}) is in no extra")
    return eager_problems, lazy_problems


def test_module_level_imports_are_core_dependencies():
    eager, _ = _audit()
    assert not eager, "\n".join(eager)


def test_lazily_imported_packages_are_in_an_extra():
    _, lazy = _audit()
    assert not lazy, "\n".join(lazy)


def test_the_audit_sees_imports_by_kind():
    tree = ast.parse("import numpy\ntry:\n    import lmdb\nexcept ImportError:\n    lmdb = None\n"
                     "def f():\n    import yaml\nif True:\n    from torch import nn\n"
                     "if TYPE_CHECKING:\n    import pymatgen\n")
    assert _imports(tree) == [("numpy", 1, True), ("lmdb", 3, False), ("yaml", 7, False),
                              ("torch", 9, True)]
