"""The declared runtime dependencies are exactly what evalkit's own code imports.

A dependency nothing imports costs every user an install; an import nothing declares breaks
on a clean machine. The one declared exception is accelerate, which diffusers and
transformers use, when present, to load weights without initialising them first.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
USED_THROUGH_OTHER_LIBRARIES = {"accelerate"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (type-checker-only imports install nothing)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _imported_top_level_modules() -> set[str]:
    found = set()
    for path in (ROOT / "evalkit").rglob("*.py"):
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "evalkit"}


def test_runtime_dependencies_are_what_the_package_imports():
    declared = {_normal(re.split(r"[<>=!~;\[ ]", d)[0])
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = metadata.packages_distributions()
    imported = {_normal(providers[m][0]) for m in _imported_top_level_modules()}
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == USED_THROUGH_OTHER_LIBRARIES, "declared but never imported"
