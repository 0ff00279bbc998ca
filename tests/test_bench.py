"""The benchmark runner's own logic (bench/run.py): the order tools run in."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run import repeat_order  # noqa: E402


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_every_tool_follows_every_other_equally_often(n):
    tools = [f"t{i}" for i in range(n)]
    repeats = n if n % 2 == 0 else 2 * n
    rows = [repeat_order(tools, r) for r in range(repeats)]
    assert all(sorted(row) == tools for row in rows)
    # every tool starts the same number of repeats
    assert set(collections.Counter(row[0] for row in rows).values()) == {repeats // n}
    # within the repeats, every ordered pair of neighbours occurs equally often
    pairs = collections.Counter((a, b) for row in rows for a, b in zip(row, row[1:]))
    assert len(pairs) == n * (n - 1)
    assert len(set(pairs.values())) == 1


def test_no_tool_always_follows_the_same_peer_in_five_repeats():
    # the suite's usual five tools and five repeats
    tools = ["sessionize", "sessionize_unordered", "notebook_pandas", "idiomatic_polars",
             "idiomatic_duckdb"]
    runs = [tool for r in range(5) for tool in repeat_order(tools, r)]
    before = collections.defaultdict(set)
    for a, b in zip(runs, runs[1:]):
        before[b].add(a)
    assert all(len(peers) >= 2 for peers in before.values())
    assert repeat_order([], 0) == [] and repeat_order(["only"], 7) == ["only"]
