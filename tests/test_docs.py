"""The docs are executable: the guide's examples run, and the README's commands are CI's."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

import sessionize
from sessionize.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.S)


def run_python_blocks(doc: str, minimum: int) -> None:
    namespace: dict = {}
    blocks = [code for kind, code in BLOCK.findall((ROOT / "docs" / doc).read_text())
              if kind == "python"]
    assert len(blocks) >= minimum
    for code in blocks:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, f"docs/{doc}", "exec"), namespace)  # noqa: S102


def test_rules_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python_blocks("rules.md", minimum=7)


def test_identity_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python_blocks("identity.md", minimum=3)


def test_incremental_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python_blocks("incremental.md", minimum=3)


def test_guide_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(sessionize.sample_path(), tmp_path / "events.json")
    namespace: dict = {}
    blocks = BLOCK.findall((ROOT / "docs" / "guide.md").read_text())
    assert len(blocks) >= 10
    for kind, code in blocks:
        if kind == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, "docs/guide.md", "exec"), namespace)  # noqa: S102
            continue
        for line in code.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "sessionize"
            out, err = io.StringIO(), io.StringIO()
            try:
                status = main(argv[1:], stdout=out, stderr=err)
            except SystemExit as exit_:  # --help exits through argparse
                status = exit_.code
            assert status == 0, err.getvalue()
    assert (tmp_path / "out" / "sessions.csv").exists()
    assert (tmp_path / "out-cli" / "events.ndjson").exists()


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", quickstart, re.S)


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one():
    run_sample, run_tests = readme_commands()
    assert "sessionize run --sample" in run_sample
    assert "pytest" in run_tests
    assert run_tests in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("name", ["CHANGELOG.md", "CONTRIBUTING.md", "BENCHMARKS.md"])
def test_project_documents_exist(name):
    assert (ROOT / name).read_text().strip()
