"""The benchmark runner's own logic (bench/run.py): the order tools run in, and the
machine's memory state it reports."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest

import sessionize
from sessionize.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run import format_memory, memory_state, repeat_order  # noqa: E402


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


def test_memory_state_reads_free_memory_and_page_cache():
    meminfo = ("MemTotal:       24683836 kB\nMemFree:          230912 kB\n"
               "MemAvailable:   18069504 kB\nBuffers:            1024 kB\n"
               "Cached:         18385920 kB\n")
    state = memory_state(meminfo)
    assert state == {"free_gib": 0.2, "page_cache_gib": 17.5}
    assert format_memory(state) == "0.2 GiB free, 17.5 GiB page cache"
    assert memory_state("") == {} and format_memory({}) == "unknown"
    assert set(memory_state()) <= {"free_gib", "page_cache_gib"}  # this machine's


def test_the_rich_file_runs_every_rule_on_the_columnar_plan(tmp_path):
    import pyarrow.parquet as pq
    import rules_overhead

    path = rules_overhead.rich_file(3_000, 5, tmp_path)
    context = pq.read_schema(path).field("context").type
    assert [context.field(i).name for i in range(context.num_fields)] == [
        "library", "timezone", "campaign", "sessionId", "page", "device", "os"]
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--plan", "columnar",
                 "--quiet", *rules_overhead.ALL_RULES])
    assert code == 0
    sessions = pq.read_table(tmp_path / "out" / "sessions.parquet")
    reasons = set(sessions.column("start_reason").to_pylist())
    assert {"start_event", "client_session", "campaign_change"} <= reasons
    with sessionize.run(str(path)) as plain:  # the gap rule alone, on the same file
        assert plain.plan == "columnar"


@pytest.mark.parametrize("peer", ["--duckdb", "--pandas"])
def test_peers_write_their_three_tables(peer, tmp_path):
    if peer == "--pandas":
        pytest.importorskip("pandas")
    import ab
    import generate
    import pyarrow.parquet as pq

    path = generate.events_file(2_000, 3, "parquet", tmp_path)
    assert ab.main([peer, str(path), str(tmp_path / "out")]) == 0
    counts = {name: pq.read_metadata(tmp_path / "out" / f"{name}.parquet").num_rows
              for name in ("events", "sessions", "users")}
    assert counts["events"] == 2_000
    assert 0 < counts["users"] <= counts["sessions"] < 2_000
