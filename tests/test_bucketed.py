"""The bucketed plan (engines/bucketed.py): the columnar kernel per bucket of users, for
inputs larger than memory. Its tables must equal the in-memory plans' (same schema, same
rows, same order), with several buckets; ``auto`` picks it under a memory_limit; a
killed write leaves the previous output (docs/guide.md, section 8)."""

from __future__ import annotations

import bisect
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from test_cases import CASES
from test_plans import generated
from test_properties import examples, rule_options, rule_streams, rule_table, streams, to_table

import sessionize
from sessionize.cli.main import main
from sessionize.engines.bucketed import bucket_count, bucket_sql, parse_size, unsupported_rule
from sessionize.rules import Rules

TABLES = ("events", "sessions", "users", "quarantine")
SESSIONIZE = str(Path(sys.executable).with_name("sessionize"))


def tables(source, **options) -> dict[str, pa.Table]:
    with sessionize.run(source, **options) as result:
        assert result.plan == options.get("plan", result.plan)
        return {name: getattr(result, name).to_arrow() for name in TABLES}


def assert_same(got: dict[str, pa.Table], want: dict[str, pa.Table], *,
                ordered: bool = True) -> None:
    for name, table in want.items():
        assert got[name].schema == table.schema, name
        rows, expected = got[name].to_pylist(), table.to_pylist()
        if not ordered and name == "events":
            rows, expected = (sorted(rows, key=repr), sorted(expected, key=repr))
        assert rows == expected, name


def test_bucket_sql_is_a_binary_search_of_the_bounds():
    bounds = ["b", "d", "f", "h", "k"]
    con = duckdb.connect()
    for name in ["", "a", "b", "c", "d", "e", "g", "h", "i", "k", "z", "\u00fc"]:
        got = con.execute(f"SELECT {bucket_sql('u', bounds)} FROM (SELECT ? AS u)",
                          [name]).fetchall()[0][0]
        assert got == bisect.bisect_right(bounds, name), name


def test_sizes_and_bucket_counts():
    assert parse_size("4GB") == 4_000_000_000
    assert parse_size("512 MiB") == 512 * 2**20
    with pytest.raises(sessionize.OptionError, match="'memory_limit' must be a size"):
        parse_size("lots")
    # twice the events, twice the buckets; twice the memory, half
    assert bucket_count(50_000_000, 100, 4 * 10**9, 2) == 15
    assert bucket_count(100_000_000, 100, 4 * 10**9, 2) == 30
    assert bucket_count(100_000_000, 100, 8 * 10**9, 2) == 15
    assert bucket_count(10, 100, 4 * 10**9, 2) == 1


@pytest.mark.parametrize("options", [
    {}, {"gap": "5m", "identity": "stitch"}, {"identity": "first"}, {"identity": "graph"},
    {"gap_by": "platform", "gaps": {"web": "30m", "mobile": "5m", "server": "30m"},
     "midnight": "Europe/Berlin", "campaign": True, "start_events": ["Signed Up"],
     "end_events": ["Clicked"], "passive_events": ["identify"],
     "max_duration": "24h", "identity": "stitch"},
    {"midnight": "event", "gap": "6h"}, {"dedupe": True},
])
@pytest.mark.parametrize("events_order", ["time", "none"])
def test_bucketed_plan_equals_the_columnar_plan(options, events_order):
    table = generated(6_000, seed=4)
    want = tables(table, plan="columnar", on_invalid="quarantine", events_order=events_order,
                  **options)
    for buckets in ((1, 5) if not options else (5,)):
        got = tables(table, plan="bucketed", buckets=buckets, on_invalid="quarantine",
                     events_order=events_order, **options)
        assert_same(got, want, ordered=events_order == "time")


def test_bucketed_plan_with_quarantined_rows_and_several_files(tmp_path):
    table = generated(5_000, seed=3)
    broken = table.slice(0, 50).set_column(
        3, "userId", pa.nulls(50, pa.string())).set_column(4, "anonymousId",
                                                          pa.nulls(50, pa.string()))
    pq.write_table(table.slice(0, 2_500), tmp_path / "a.parquet")
    pq.write_table(pa.concat_tables([broken, table.slice(2_500)]), tmp_path / "b.parquet")
    want = tables(str(tmp_path), plan="sql", on_invalid="quarantine")
    got = tables(str(tmp_path), plan="bucketed", buckets=4, on_invalid="quarantine")
    assert_same(got, want)
    assert got["quarantine"].num_rows == 50
    with pytest.raises(sessionize.InvalidEventsError, match="50 invalid events"):
        sessionize.run(str(tmp_path), plan="bucketed", buckets=4)


def test_bucketed_plan_without_valid_events():
    table = generated(20).set_column(5, "timestamp", pa.nulls(20, pa.timestamp("us", "UTC")))
    want = tables(table, plan="columnar", on_invalid="quarantine")
    got = tables(table, plan="bucketed", buckets=3, on_invalid="quarantine")
    assert_same(got, want)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bucketed_plan_on_the_fixture_cases(path: Path, tmp_path: Path):
    """Every fixture case (tests/cases) whose rules the kernel runs, under the bucketed
    plan with three buckets and under the columnar plan."""
    case = json.loads(path.read_text())
    options = case.get("options", {})
    if unsupported_rule(Rules.from_options(**{k: v for k, v in options.items()
                                              if k != "on_invalid"})):
        pytest.skip("a rule the bucketed plan does not run (enrich, first_last, user_change)")
    source = tmp_path / "events.json"
    source.write_text(json.dumps(case["events"]))
    want = tables(str(source), plan="columnar", **options)
    assert_same(tables(str(source), plan="bucketed", buckets=3, **options), want)


@examples(30)
@given(streams())
def test_bucketed_plan_matches_on_generated_streams(case):
    gap, events = case
    table = to_table(events)
    want = tables(table, plan="columnar", gap=f"{gap}us", on_invalid="quarantine")
    got = tables(table, plan="bucketed", buckets=3, gap=f"{gap}us", on_invalid="quarantine")
    assert_same(got, want)


@examples(30)
@given(rule_streams())
def test_bucketed_plan_matches_on_generated_rules(case):
    gap, options, events = case
    # not per bucket yet (engines/bucketed.py, unsupported_rule)
    options = dataclasses.replace(options, enrich=False, first_last=(), user_change=False)
    table = rule_table(events, options)
    kwargs = rule_options(gap, options)
    want = tables(table, plan="columnar", **kwargs)
    assert_same(tables(table, plan="bucketed", buckets=3, **kwargs), want)


# -- which plan runs ------------------------------------------------------------------------
def test_auto_picks_the_bucketed_plan_when_the_input_does_not_fit_the_memory_limit():
    # three copies of 200 events fit in 2 GB: the columnar plan; of 20,000 not in 4 MB
    with sessionize.run(generated(200), memory_limit="2GB") as result:
        assert result.plan == "columnar"
    with sessionize.run(generated(20_000), memory_limit="4MB") as result:
        assert result.plan == "bucketed"
        assert len(result.events) == 20_000


def test_auto_picks_the_bucketed_plan_when_the_input_does_not_fit(monkeypatch):
    table = generated(2_000)
    with sessionize.run(table) as result:
        assert result.plan == "columnar"
    # a machine with 1 MiB of memory: three copies of 2,000 events do not fit half of it
    monkeypatch.setattr(os, "sysconf", lambda name: 1024 if name == "SC_PAGE_SIZE" else 1024)
    with sessionize.run(table) as result:
        assert result.plan == "bucketed"
        assert len(result.events) == 2_000
    with sessionize.run(table, enrich=True) as result:
        assert result.plan == "sql"  # a rule the bucketed plan does not run yet


@pytest.mark.parametrize("option", [{"enrich": True}, {"first_last": ["event"]},
                                    {"user_change": True}])
def test_the_bucketed_plan_refuses_a_rule_it_does_not_run_yet(option):
    (name,) = option
    with pytest.raises(sessionize.OptionError,
                       match=f"plan='bucketed' does not run the {name} rule yet"):
        sessionize.run(sessionize.sample_path(), plan="bucketed", **option)


def test_buckets_option_is_checked():
    with pytest.raises(sessionize.OptionError, match="'buckets' must be a whole number"):
        sessionize.run(sessionize.sample_path(), buckets=0)
    with pytest.raises(sessionize.OptionError, match="'buckets' applies to the bucketed plan"):
        sessionize.run(sessionize.sample_path(), plan="sql", buckets=2)


def test_analyses_of_a_bucketed_result_say_what_to_do():
    with sessionize.run(generated(300), plan="bucketed", buckets=2) as result:
        assert result.stats()["events"] == 300
        with pytest.raises(sessionize.OptionError, match="keeps no per-event assignment"):
            sessionize.thresholds(result)


# -- writing --------------------------------------------------------------------------------
def test_cli_bucketed_plan_writes_the_same_files(tmp_path):
    source = tmp_path / "events.parquet"
    pq.write_table(generated(3_000, seed=9), source)
    written = {}
    for plan in ("columnar", "bucketed"):
        out, err = io.StringIO(), io.StringIO()
        extra = ["--buckets", "4"] if plan == "bucketed" else []
        code = main(["run", str(source), "--plan", plan, *extra, "--out", str(tmp_path / plan)],
                    stdout=out, stderr=err)
        assert code == 0, err.getvalue()
        written[plan] = [pq.read_table(tmp_path / plan / f"{name}.parquet")
                         for name in ("events", "sessions", "users")]
    assert written["bucketed"] == written["columnar"]
    for fmt in ("csv", "ndjson"):  # the other formats are written from the Parquet tables
        for plan in ("columnar", "bucketed"):
            extra = ["--buckets", "4"] if plan == "bucketed" else []
            assert main(["run", str(source), "--plan", plan, *extra, "--format", fmt,
                         "--out", str(tmp_path / f"{plan}-{fmt}")], stdout=io.StringIO(),
                        stderr=io.StringIO()) == 0
        for name in ("events", "sessions", "users"):
            assert (tmp_path / f"bucketed-{fmt}" / f"{name}.{fmt}").read_text() == \
                (tmp_path / f"columnar-{fmt}" / f"{name}.{fmt}").read_text(), (fmt, name)


def test_a_killed_bucketed_run_leaves_the_previous_output(tmp_path):
    """A real ``sessionize run --plan bucketed`` killed with SIGKILL while it works on its
    buckets, then while it publishes: the output directory holds the previous set of
    tables, whole, or (after the publish began) the new one."""
    source = tmp_path / "events.parquet"
    pq.write_table(generated(200_000, seed=2, users=5_000), source)
    out = tmp_path / "out"
    main(["run", "--sample", "--out", str(out)], stdout=io.StringIO(), stderr=io.StringIO())
    before = {name: pq.read_table(out / f"{name}.parquet") for name in ("events", "sessions",
                                                                         "users")}
    work = tmp_path / "work"
    work.mkdir()
    for delay in (0.5, 1.5, 3.0):
        proc = subprocess.Popen([SESSIONIZE, "run", str(source), "--plan", "bucketed",
                                 "--buckets", "8", "--temp-directory", str(work),
                                 "--out", str(out), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        now = {name: pq.read_table(out / f"{name}.parquet") for name in before}
        if not finished:
            # before the publish: the previous tables; a publish is milliseconds at the end
            assert now == before or now["events"].num_rows == 200_000
    # a finished run replaces them and clears what the killed ones left
    code = main(["run", str(source), "--plan", "bucketed", "--buckets", "8", "--out", str(out)],
                stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 0
    assert pq.read_table(out / "events.parquet").num_rows == 200_000
    assert not [p for p in os.listdir(out) if p.startswith(".sessionize-tmp-")]
