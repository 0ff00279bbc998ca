"""The package declares what it needs: ``pip install sessionize`` alone must give a
working ``sessionize.run``."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _unconditional_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports at module level, outside any
    ``if`` (``TYPE_CHECKING``, version checks) or function: what importing it needs."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "sessionize"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")
            for spec in project["dependencies"]}


def test_every_module_level_import_is_a_declared_dependency():
    distributions = packages_distributions()
    needed = {}
    for path in sorted((ROOT / "src" / "sessionize").rglob("*.py")):
        for name in _unconditional_imports(path):
            for dist in distributions.get(name, [name]):
                needed.setdefault(dist.lower().replace("_", "-"), []).append(
                    str(path.relative_to(ROOT)))
    missing = {dist: files for dist, files in needed.items() if dist not in _declared()}
    assert not missing, f"imported at module level but not in [project] dependencies: {missing}"


def test_the_check_sees_numpy_and_pyarrow():
    """The check above is not vacuous: the kernel's own imports are found."""
    found = _unconditional_imports(ROOT / "src" / "sessionize" / "columnar" / "kernel.py")
    assert {"numpy", "pyarrow"} <= found
