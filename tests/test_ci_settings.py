"""CI runs everything: the full Hypothesis profile and the slow tests (tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CI_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"


@pytest.mark.parametrize("setting", ["HYPOTHESIS_PROFILE=ci", "SESSIONIZE_RUNSLOW=1"])
def test_the_ci_script_exports_the_thorough_settings_before_running_the_tests(setting):
    script = CI_SCRIPT.read_text()
    exported = re.search(rf"^export {re.escape(setting)}$", script, re.M)
    assert exported, f".ci/run must contain the line 'export {setting}' (tests/conftest.py)"
    assert exported.start() < script.index(".venv/bin/pytest")


def test_the_dev_profile_is_quick_and_the_ci_profile_thorough():
    from hypothesis import settings

    assert settings.get_profile("ci").max_examples == 1000
    assert settings.get_profile("ci").deadline is None
    assert settings.get_profile("dev").max_examples < settings.get_profile("ci").max_examples
