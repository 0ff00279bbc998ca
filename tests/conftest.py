"""How thorough a run is: quick by default, everything in CI.

- Hypothesis profiles: ``dev`` (the default: the README's ``pytest`` stays a few minutes
  on a 2-core machine) and ``ci`` (1,000 examples; ``.ci/run`` exports
  ``HYPOTHESIS_PROFILE=ci``). Property tests scale their own counts by the profile's
  ``max_examples`` (``test_properties.examples``), so every one runs under both.
- ``slow`` tests (the Spark engine's full suite: a JVM, seconds per job) run with
  ``--runslow`` or ``SESSIONIZE_RUNSLOW=1`` (``.ci/run`` exports it); without them a
  Spark smoke test still runs, and the Spark SQL text is pinned by test_compiled_sql.

Where the ``CI`` variable is set and these are not, CI's choices apply, so a CI that
forgets them still runs everything.
"""

import os

import pytest
from hypothesis import settings

IN_CI = bool(os.environ.get("CI"))
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev")
settings.load_profile(PROFILE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true",
                     help="also run the slow tests (the Spark engine's full suite); "
                          "SESSIONIZE_RUNSLOW=1 does the same")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: expensive; runs with --runslow or "
                                       "SESSIONIZE_RUNSLOW=1 (CI runs it)")


def run_slow(config: pytest.Config) -> bool:
    flag = os.environ.get("SESSIONIZE_RUNSLOW")
    return config.getoption("--runslow") or flag == "1" or (flag is None and IN_CI)


def pytest_report_header(config: pytest.Config) -> str:
    return (f"sessionize: hypothesis profile {PROFILE!r} "
            f"(max_examples={settings().max_examples}), slow tests "
            f"{'run' if run_slow(config) else 'skipped (--runslow or SESSIONIZE_RUNSLOW=1)'}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or SESSIONIZE_RUNSLOW=1 (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
