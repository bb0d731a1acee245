"""The declared runtime dependencies and extras are exactly what evalkit's own code imports.

A dependency nothing imports costs every user an install; an import nothing declares breaks
on a clean machine. The one declared exception is accelerate, which diffusers and
transformers use, when present, to load weights without initialising them first. An extra's
packages are imported only by that extra's own modules, which check for them first
(evalkit.runtime.extras), so the default install runs everything else.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib

from evalkit.runtime.extras import EXTRAS

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


# The modules that make up each extra: the only ones that may import its packages.
EXTRA_MODULES = {
    "fid": ("evalkit/metrics/fid.py", "evalkit/tiny/fid.py"),
    "hpsv2": ("evalkit/metrics/hpsv2.py", "evalkit/tiny/hpsv2.py"),
    "site": ("evalkit/publishing/site/",),
    "datasets": ("evalkit/intake/sources.py",),
}


def _imports_by_file() -> dict[str, set[str]]:
    """Top-level third-party modules each evalkit file imports at run time."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "evalkit").rglob("*.py"):
        names = found.setdefault(path.relative_to(ROOT).as_posix(), set())
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        names -= set(sys.stdlib_module_names) | {"evalkit"}
    return found


def _distributions(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[<>=!~;\[ ]", d)[0]) for d in requirements}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_and_extras_are_what_the_package_imports():
    project = _project()
    declared = _distributions(project["dependencies"])
    for extra in EXTRAS:
        declared |= _distributions(project["optional-dependencies"][extra])
    providers = metadata.packages_distributions()
    imported = {_normal(providers[m][0]) for names in _imports_by_file().values() for m in names}
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == USED_THROUGH_OTHER_LIBRARIES, "declared but never imported"


def test_extras_in_pyproject_are_the_ones_the_code_names():
    extras = _project()["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert _distributions(extras[extra]) == {_normal(d) for _, d in packages}, extra
    assert _distributions(extras["all"]) == {"evalkit"} and set(EXTRAS) <= set(extras)
    assert "evalkit[all]" in extras["dev"], "make test installs and tests every extra"


def test_an_extras_packages_are_imported_only_by_its_own_modules():
    owners = {module: extra for extra, packages in EXTRAS.items() for module, _ in packages}
    for file, names in _imports_by_file().items():
        for name in names & set(owners):
            assert file.startswith(EXTRA_MODULES[owners[name]]), f"{file} imports {name} of extra {owners[name]}"


def test_a_missing_extra_is_one_line_naming_the_install(tmp_path):
    """`evalkit run --metrics fid` in a child process where torch_fidelity cannot be imported (a None entry
    in sys.modules): refused before anything is written, in one line naming the extra to install."""
    out = tmp_path / "out"
    code = ("import sys; sys.modules['torch_fidelity'] = None\n"
            f"sys.argv = ['evalkit', 'run', {str(tmp_path)!r}, '--metrics', 'fid', '--out', {str(out)!r}]\n"
            "from evalkit.cli import main; main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "needs torch-fidelity, which is not installed" in result.stderr
    assert "pip install 'evalkit[fid]'" in result.stderr
    assert not out.exists()
