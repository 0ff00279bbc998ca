"""The layout's promises: layered imports, no cycles, imports at module level."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parent.parent / "src" / "sessionize"
OPTIONAL = {"pandas", "polars", "pyspark", "py4j", "tomllib", "tomli"}


def test_the_layers_contract_holds():
    """pyproject.toml's import-linter contracts: lower layers never import higher ones."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=SRC.parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("sessionize", exclude_type_checking_imports=True)
    cycles = [(a, b) for a in sorted(graph.modules)
              for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


def _function_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (
                        inner.level > 0 or (inner.module or "").startswith("sessionize")):
                    found.append(f"{path.name}:{inner.lineno} from {'.' * inner.level}"
                                     f"{inner.module or ''}")
    return found


def test_own_modules_are_imported_at_module_level():
    """Function-level imports are for optional dependencies only, never to hide a cycle."""
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in _function_level_imports(path)]
    assert found == []


def test_the_check_sees_a_function_level_import(tmp_path):
    """The check above is not vacuous."""
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from .result import Result\n    return Result\n")
    assert _function_level_imports(sample) == ["m.py:2 from .result"]
