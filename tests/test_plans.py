"""The two DuckDB plans (compiled SQL, columnar kernel): which one runs, and that they agree.

The property tests (test_properties.py) run every generated stream under both plans and
require identical tables; here: the choice ``plan="auto"`` makes, the errors, and the
inputs and sizes the generated streams do not reach (many users, wide time ranges,
several Parquet files, quarantined rows, per-event gaps and stitched identities).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_properties import run_both_plans

import sessionize
from sessionize.cli.main import main
from sessionize.columnar import kernel
from sessionize.columnar.kernel import (
    _argsort_pair,
    _by_user,
    _take,
    unsupported_rule,
)
from sessionize.engines import duckdb as engine_duckdb
from sessionize.rules import Rules

BASE_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def generated(n: int, seed: int = 7, *, users: int = 300, span_us: int = 40 * 86_400_000_000,
              ms: bool = True) -> pa.Table:
    """Segment-like events: skewed users, ~20 % anonymous, ties, missing messageIds."""
    rng = np.random.default_rng(seed)
    who = np.minimum(rng.zipf(1.3, n) - 1, users - 1)
    ts = BASE_US + rng.integers(0, span_us, n)
    if ms:  # millisecond precision and bursts make ties
        ts = ts // 1000 * 1000
    burst = rng.random(n) < 0.3
    ts[burst] = ts[burst] // 60_000_000 * 60_000_000
    anonymous = rng.random(n) < 0.2
    user_id = [None if a else f"user-{w}" for a, w in zip(anonymous, who)]
    anon_id = [f"anon-{w % 97}" for w in who]
    message = [None if rng.random() < 0.1 else f"m{rng.integers(0, n // 2)}" for _ in range(n)]
    names = rng.choice(["Page Viewed", "Clicked", "Signed Up", None], n)
    library = rng.choice(["analytics.js", "analytics-ios", "analytics-node"], n)
    return pa.table({
        "messageId": pa.array(message, pa.string()),
        "type": pa.array(np.where(names == None, "identify", "track"), pa.string()),  # noqa: E711
        "event": pa.array(names.tolist(), pa.string()),
        "userId": pa.array(user_id, pa.string()),
        "anonymousId": pa.array(anon_id, pa.string()),
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "context": pa.array([{"library": {"name": lib}} for lib in library]),
    })


# -- which plan runs -----------------------------------------------------------------------
def test_auto_picks_the_columnar_plan_for_gap_rules():
    with sessionize.run(sessionize.sample_path()) as result:
        assert result.plan == "columnar"
    with sessionize.run(generated(200), gap_by="platform",
                        gaps={"web": "30m", "mobile": "5m"}, identity="stitch") as result:
        assert result.plan == "columnar"


@pytest.mark.parametrize("options", [
    {"midnight": "UTC"}, {"max_duration": "2h"}, {"start_events": ["Signed Up"]},
    {"passive_events": ["identify"]}, {"enrich": True}, {"memory_limit": "2GB"},
])
def test_auto_picks_the_sql_plan(options):
    with sessionize.run(generated(200), **options) as result:
        assert result.plan == "sql"


def test_auto_picks_the_sql_plan_for_a_database_file(tmp_path):
    with sessionize.run(sessionize.sample_path(), database=tmp_path / "run.duckdb") as result:
        assert result.plan == "sql"
        assert len(result.sessions) == 4


def test_columnar_plan_refuses_a_rule_it_does_not_run():
    with pytest.raises(sessionize.OptionError, match="does not run the midnight rule"):
        sessionize.run(sessionize.sample_path(), plan="columnar", midnight="UTC")


def test_unknown_plan_is_refused():
    with pytest.raises(sessionize.OptionError, match="'plan' must be one of auto, sql, "
                                                     "columnar \\(got 'fast'\\)"):
        sessionize.run(sessionize.sample_path(), plan="fast")


def test_unsupported_rule_names_the_first_rule():
    assert unsupported_rule(Rules.from_options()) is None
    assert unsupported_rule(Rules.from_options(gap_by="platform", gaps={"web": "1h"})) is None
    assert unsupported_rule(Rules.from_options(profile="mobile")) == "start_events"


def test_cli_plan_flag(tmp_path):
    written = {}
    for plan in ("sql", "columnar"):
        out, err = io.StringIO(), io.StringIO()
        code = main(["run", "--sample", "--plan", plan, "--out", str(tmp_path / plan)],
                    stdout=out, stderr=err)
        assert code == 0, err.getvalue()
        written[plan] = [pq.read_table(tmp_path / plan / f"{name}.parquet")
                         for name in ("events", "sessions", "users")]
    assert written["sql"] == written["columnar"]


# -- the plans agree ------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {}, {"gap": "5m"}, {"identity": "stitch"}, {"identity": "first", "gap": "90s"},
    {"gap_by": "platform", "gaps": {"web": "30m", "mobile": "2m"}},
])
def test_plans_agree_on_generated_events(options):
    tables = run_both_plans(generated(20_000), on_invalid="quarantine", **options)
    assert tables["events"].num_rows == 20_000


def test_plans_agree_on_many_users_over_two_centuries():
    # 54 bits of microseconds and 12 bits of users do not fit one 64-bit key: lexsort
    table = generated(12_000, users=4_000, span_us=300 * 365 * 86_400_000_000, ms=False)
    table = table.set_column(5, "timestamp", pa.array(
        np.asarray(table["timestamp"].cast(pa.int64())) - 120 * 365 * 86_400_000_000,
        pa.timestamp("us", tz="UTC")))
    run_both_plans(table)


def test_plans_agree_on_several_parquet_files_and_quarantined_rows(tmp_path):
    table = generated(5_000, seed=3)
    broken = table.slice(0, 50).set_column(
        3, "userId", pa.nulls(50, pa.string())).set_column(4, "anonymousId",
                                                          pa.nulls(50, pa.string()))
    pq.write_table(table.slice(0, 2_500), tmp_path / "a.parquet")
    pq.write_table(pa.concat_tables([broken, table.slice(2_500)]), tmp_path / "b.parquet")
    tables = run_both_plans(str(tmp_path), on_invalid="quarantine")
    assert tables["quarantine"].num_rows == 50
    assert tables["events"].num_rows == 5_000


def test_plans_agree_on_json_input(tmp_path):
    rows = generated(3_000, seed=5).to_pylist()
    for row in rows:
        row["timestamp"] = row["timestamp"].isoformat().replace("+00:00", "Z")
    path = tmp_path / "events.json"
    path.write_text(json.dumps(rows))
    run_both_plans(str(path))


def test_plans_agree_when_ids_have_one_width(monkeypatch):
    # UUID-like messageIds and anonymousIds, and userIds of one width with some missing,
    # take the fixed-width gather
    table = generated(4_000, seed=11)
    rng = np.random.default_rng(11)
    hexes = [f"{v:032x}" for v in rng.integers(0, 2**63, 4_000)]
    table = table.set_column(0, "messageId", pa.array(hexes, pa.string()))
    table = table.set_column(4, "anonymousId", pa.array(
        [h[::-1] for h in hexes], pa.string()).take(pa.array(rng.integers(0, 500, 4_000))))
    table = table.set_column(3, "userId", pc.utf8_lpad(table.column("userId"), 10, "0"))
    used = _spy(monkeypatch, "_fixed_width_gatherer")
    run_both_plans(table)
    assert len(used) >= 2
    assert any(result.null_count for result in used)  # the userIds


def _spy(monkeypatch, name):
    """The results of the gathers the kernel's gatherer ``name`` made (when it did not
    decline), in a list that fills as the kernel runs."""
    used = []
    real = getattr(kernel, name)

    def prepare(values, size, **options):
        gather = real(values, size, **options)
        return None if gather is None else (lambda at: used.append(gather(at)) or used[-1])
    monkeypatch.setattr(kernel, name, prepare)
    return used


def _special(prepare, values, at):
    """``values`` at ``at`` by one of the kernel's special gathers (``None``: it declines)."""
    gather = prepare(values, len(at))
    return None if gather is None else gather(at)


@pytest.mark.parametrize("values", [
    pa.array(["abc", "def", "ghi", "jkl"]),
    pa.array(["abc", "def", "ghi", "jkl", "mno"]).slice(1),            # an offset
    pa.chunked_array([["ab", "cd"], [], ["ef"], ["gh", "ij"]]),        # several chunks
    pa.chunked_array([pa.array(["xy", "zz", "ab"]).slice(1), ["cd"]]),
    pa.array(["abcd", "efgh"], pa.large_string()),
    pa.array([b"\x00\x01", b"\xff\x00"], pa.binary()),
    pa.array(["abc", None, "ghi", None]),                              # missing, last too
    pa.array([None, "abc", None, "def"], pa.large_string()),
    pa.chunked_array([[None, None], ["ab", None], [None, "cd"]], pa.string()),  # null chunk
    pa.array(["zz", None, "ab", "cd", None]).slice(1),
    # a missing value written with the width's bytes (some writers do)
    pa.Array.from_buffers(pa.string(), 3, [pa.py_buffer(bytes([0b101])),
                                           pa.py_buffer(np.array([0, 2, 4, 6], np.int32)),
                                           pa.py_buffer(b"abXXcd")]),
])
def test_fixed_width_gather_matches_arrow(values):
    at = np.array([len(values) - 1, 0, 0, len(values) - 1, 1], np.int64)
    taken = _special(kernel._fixed_width_gatherer, values, at)
    assert taken is not None
    # prepared early, the rows are copied when it gathers: the same values
    later = kernel._fixed_width_gatherer(values, len(at), copy_now=False)
    assert later(at).equals(taken)
    taken.validate(full=True)
    expected = values.take(pa.array(at))
    expected = expected.combine_chunks() if isinstance(expected, pa.ChunkedArray) else expected
    assert taken.equals(expected)
    assert _take(values, at[:0]).equals(expected.slice(0, 0))


@pytest.mark.parametrize("values", [
    pa.array(["abc", "de", "ghi"]),                  # lengths differ
    pa.array(["abc", None, ""]),                     # an empty string is not missing
    pa.array([None, None, None], pa.string()),       # nothing to take the width from
    pa.Array.from_buffers(pa.string(), 3, [pa.py_buffer(bytes([0b101])),  # a missing
                                           pa.py_buffer(np.array([0, 2, 3, 5], np.int32)),
                                           pa.py_buffer(b"abXcd")]),      # of length 1
    pa.array(["", "", ""]),                          # empty strings
    pa.chunked_array([["ab"], ["abc"]]),             # widths differ between chunks
    pa.array(["x" * 65, "y" * 65]),                  # wider than FIXED_WIDTH_MAX
    pa.array([1, 2, 3]),
])
def test_other_columns_take_arrows_gather(values):
    at = np.array([len(values) - 1, 0, 1], np.int64)
    assert kernel._fixed_width_gatherer(values, len(at)) is None
    expected = values.take(pa.array(at))
    taken = _take(values, at)
    assert (taken.combine_chunks() if isinstance(taken, pa.ChunkedArray) else taken).equals(
        expected.combine_chunks() if isinstance(expected, pa.ChunkedArray) else expected)


def _one(array):
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


@pytest.mark.parametrize("values", [
    pa.array(["track", None, "page", "track", "identify"] * 4),
    pa.array(["a", "b", None, "a", "c", "b"] * 3, pa.large_string()),
    pa.chunked_array([["x", "y"], [], [None, "x"], ["z", "w", "y"]]),  # new values later
    pa.array(["a", "b", "c", "d", "a"] * 4).slice(3),                  # an offset
    pa.chunked_array([pa.array([], pa.string())]),
])
def test_gather_through_a_dictionary_matches_arrow(values, monkeypatch):
    monkeypatch.setattr(kernel, "DICTIONARY_FROM", 1)
    at = np.random.default_rng(2).integers(0, max(len(values), 1), 40 if len(values) else 0)
    taken = _special(kernel._dictionary_gatherer, values, at)
    expected = _one(values.take(pa.array(at, pa.int64())))
    if not len(values):
        assert taken is None
        return
    taken.validate(full=True)
    assert taken.type == values.type and taken.equals(expected)
    assert _one(_take(values, at)).equals(expected)


def test_gather_through_a_dictionary_only_for_few_distinct_values(monkeypatch):
    monkeypatch.setattr(kernel, "DICTIONARY_FROM", 1)
    many = pa.array([f"id-{i}" for i in range(5_000)])
    at = np.arange(5_000)[::-1].copy()
    assert kernel._dictionary_gatherer(many, len(at)) is None
    assert kernel._dictionary_gatherer(pa.array([1, 2, 3]), 2) is None
    # a column whose first values repeat (a sorted input) is judged across its length
    mostly_first = pa.array(["a"] * 100_000 + [f"id-{i}" for i in range(100_000)])
    assert kernel._dictionary_gatherer(mostly_first, 10) is None
    monkeypatch.setattr(kernel, "DICTIONARY_FROM", 10_000)  # small gathers: Arrow's take
    assert kernel._dictionary_gatherer(pa.array(["a"] * 5_000), len(at)) is None


@pytest.mark.parametrize("values", [
    pa.array([{"library": {"name": n}} for n in ["analytics.js", "analytics-ios"] * 10]),
    pa.array([None if i % 3 == 0 else {"a": i, "b": {"c": None if i % 4 else "x"}}
              for i in range(30)]),                                      # nulls at each level
    pa.array([{"a": i, "b": {"c": "y"}} for i in range(30)]).slice(5),   # an offset
    pa.chunked_array([pa.array([{"a": 1, "s": "p"}, None]),
                      pa.array([{"a": 2, "s": None}, {"a": 3, "s": "q"}] * 5)]),
])
def test_struct_gather_field_by_field_matches_arrow(values, monkeypatch):
    monkeypatch.setattr(kernel, "DICTIONARY_FROM", 1)
    at = np.random.default_rng(3).integers(0, len(values), 50)
    taken = _special(kernel._struct_gatherer, values, at)
    taken.validate(full=True)
    expected = _one(values.take(pa.array(at, pa.int64())))
    assert taken.type == values.type
    assert taken.to_pylist() == expected.to_pylist()
    assert taken.equals(expected)
    assert kernel._struct_gatherer(pa.array(["a"]), 1) is None


def test_plans_agree_when_columns_are_gathered_through_dictionaries(monkeypatch):
    # every string and struct column of a small run takes the dictionary and struct paths
    monkeypatch.setattr(kernel, "DICTIONARY_FROM", 1)
    used = _spy(monkeypatch, "_dictionary_gatherer")
    run_both_plans(generated(3_000, seed=16))
    assert len(used) >= 3  # type, event, library name


# -- events_order="none" --------------------------------------------------------------------
def _numbered(table: pa.Table) -> pa.Table:
    """``table`` shuffled, with a column ``n`` numbering its rows in the new order."""
    order = np.random.default_rng(3).permutation(table.num_rows)
    table = table.take(pa.array(order))
    return table.append_column("n", pa.array(np.arange(table.num_rows)))


@pytest.mark.parametrize("options", [
    {}, {"identity": "stitch"}, {"identity": "graph"},
    {"gap_by": "platform", "gaps": {"web": "30m", "mobile": "2m"}},
    {"midnight": "UTC"},  # the SQL plan only
])
@pytest.mark.parametrize("plan", ["columnar", "sql"])
def test_unordered_events_are_the_same_rows(plan, options):
    table = _numbered(generated(3_000, seed=9))
    table = table.set_column(3, "userId", pa.array(
        [None if i % 50 == 0 else v for i, v in enumerate(table["userId"].to_pylist())],
        pa.string()))
    broken = [i % 97 == 0 for i in range(table.num_rows)]
    table = table.set_column(4, "anonymousId", pa.array(
        [None if b else v for b, v in zip(broken, table["anonymousId"].to_pylist())],
        pa.string()))
    if plan == "columnar" and unsupported_rule(Rules.from_options(**options)):
        plan = "auto"
    outputs = {}
    for order in ("time", "none"):
        with sessionize.run(table, plan=plan, events_order=order, on_invalid="quarantine",
                            **options) as result:
            outputs[order] = {name: getattr(result, name).to_arrow()
                              for name in ("events", "sessions", "users", "quarantine")}
            used = result.plan
    timed, unordered = outputs["time"], outputs["none"]
    assert unordered["events"].schema == timed["events"].schema
    assert unordered["events"].sort_by("n").equals(timed["events"].sort_by("n"))
    for name in ("sessions", "users", "quarantine"):
        assert unordered[name].equals(timed[name]), name
    assert unordered["quarantine"].num_rows > 0
    if used == "columnar":  # the input's order, the quarantined rows left out
        n = unordered["events"].column("n").to_pylist()
        assert n == sorted(n)


def test_unordered_run_sorting_users_in_ranges_matches_the_sql_plan(monkeypatch):
    monkeypatch.setattr(kernel, "HALVES_FROM", 0)  # both cores sort by user, in ranges
    table = _numbered(generated(6_000, seed=12, users=900))
    with sessionize.run(table, plan="sql") as sql, \
            sessionize.run(table, plan="columnar", events_order="none") as columnar:
        want = {name: getattr(sql, name).to_arrow() for name in ("events", "sessions", "users")}
        got = {name: getattr(columnar, name).to_arrow()
               for name in ("events", "sessions", "users")}
    assert got["events"].sort_by("n").equals(want["events"].sort_by("n"))
    assert got["sessions"].equals(want["sessions"]) and got["users"].equals(want["users"])


def test_unordered_events_keep_the_input_order_when_nothing_is_quarantined():
    table = _numbered(generated(2_000, seed=4))
    with sessionize.run(table, plan="columnar", events_order="none") as result:
        events = result.events.to_arrow()
    assert events.column("n").to_pylist() == list(range(2_000))
    assert events.column("messageId").equals(table.column("messageId"))


def test_only_a_run_sorts_the_time_order(monkeypatch, tmp_path):
    # thresholds and the report never show events, so they skip the time sort
    # ... nor read the input's columns with the keys
    asked = []
    real = kernel.assign
    monkeypatch.setattr(kernel, "assign", lambda *a, **k: asked.append(
        (k["time_order"], k["inputs"] is not None)) or real(*a, **k))
    table = generated(2_000, seed=6)
    with sessionize.run(table):
        pass
    sessionize.thresholds(table)
    sessionize.report(table)
    pq.write_table(table, tmp_path / "in.parquet")
    for command in ("thresholds", "report"):
        extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
        assert main([command, str(tmp_path / "in.parquet"), *extra], stdout=io.StringIO(),
                    stderr=io.StringIO()) == 0
    assert asked == [(True, True)] + [(False, False)] * 4


@pytest.mark.parametrize("order", ["time", "none"])
@pytest.mark.parametrize("source", ["parquet", "json", "frame"])
def test_input_columns_read_with_the_keys_match_a_second_read(order, source, tmp_path):
    # run() reads the input's columns in the keys query; report and thresholds do not
    table = generated(3_000, seed=13)
    table = table.set_column(3, "userId", pa.array(
        [None if i % 40 == 0 else v for i, v in enumerate(table["userId"].to_pylist())],
        pa.string()))
    table = table.set_column(4, "anonymousId", pa.array(
        [None if i % 80 == 0 else v for i, v in enumerate(table["anonymousId"].to_pylist())],
        pa.string()))  # every 80th row has no user: quarantined
    if source == "parquet":
        pq.write_table(table, tmp_path / "in.parquet")
        table = str(tmp_path / "in.parquet")
    elif source == "json":
        rows = table.to_pylist()
        for row in rows:
            row["timestamp"] = row["timestamp"].isoformat().replace("+00:00", "Z")
        (tmp_path / "in.json").write_text(json.dumps(rows))
        table = str(tmp_path / "in.json")
    tables = {}
    for with_keys in (True, False):
        with sessionize.run(table, plan="columnar", events_order=order, on_invalid="quarantine",
                            _events_table=with_keys) as result:
            columnar = result._engine.columnar
            # a time-ordered run streams them, one column at a time, where a cursor can
            # read the input (files; a frame is registered on the run's connection only)
            streams = with_keys and order == "time" and source != "frame"
            assert (columnar.streamed is not None) == streams
            assert (columnar.inputs is not None) == (with_keys and not streams)
            tables[with_keys] = {name: getattr(result, name).to_arrow()
                                 for name in ("events", "sessions", "users", "quarantine")}
            result._engine.ensure_assign()  # the assign stage shows only its own columns
            assign_columns = result._engine.con.table("sz_assign").columns
            assert not [c for c in assign_columns if c.startswith("__sz_in_")]
    assert tables[True]["quarantine"].num_rows == 38
    for name in ("events", "sessions", "users", "quarantine"):
        assert tables[True][name].equals(tables[False][name]), name


@pytest.mark.parametrize("source", ["parquet", "json", "frame", "numeric_ids", "stitch"])
def test_keys_read_once_match_the_compiled_keys_query(source, monkeypatch, tmp_path):
    # the time and a messageId carried as it is are not converted twice: the keys table
    # is still exactly the compiled stage's (with the carried columns after it)
    table = generated(2_000, seed=15)
    options = {"identity": "stitch"} if source == "stitch" else {}
    if source == "numeric_ids":  # a messageId that is not text is cast: read it twice
        table = table.set_column(0, "messageId", pa.array(
            [None if i % 9 == 0 else i % 500 for i in range(2_000)], pa.int64()))
    if source == "parquet":
        pq.write_table(table, tmp_path / "in.parquet")
        table = str(tmp_path / "in.parquet")
    elif source == "json":
        rows = table.to_pylist()
        for row in rows:
            row["timestamp"] = row["timestamp"].isoformat().replace("+00:00", "Z")
        (tmp_path / "in.json").write_text(json.dumps(rows))
        table = str(tmp_path / "in.json")
    read = []
    real = engine_duckdb.read_keys

    def spy(con, compiled, inputs, message_column):
        keys = real(con, compiled, inputs, message_column)
        full = con.sql(engine_duckdb.keys_sql(compiled, inputs)).to_arrow_table()
        read.append((message_column is not None and inputs is not None, keys.equals(full)))
        return keys

    monkeypatch.setattr(engine_duckdb, "read_keys", spy)
    # unordered: the keys carry the input's columns (a time-ordered run streams them)
    with sessionize.run(table, plan="columnar", events_order="none", **options) as result:
        result.events.to_arrow()
    assert read == [(source in ("parquet", "json", "frame"), True)]


@pytest.mark.parametrize("quarantined", [False, True])
def test_time_ordered_events_stream_the_input_one_column_at_a_time(quarantined, monkeypatch,
                                                                   tmp_path):
    # each input column is read alone, once, and gathered; the messageId the keys hold
    # is not read again; the events are the SQL plan's
    table = generated(3_000, seed=16)
    if quarantined:  # every 70th row has no user: the rows read are not the keys'
        table = table.set_column(4, "anonymousId", pa.array(
            [None if i % 70 == 0 else v for i, v in enumerate(table["anonymousId"].to_pylist())],
            pa.string()))
        table = table.set_column(3, "userId", pa.array(
            [None if i % 70 == 0 else v for i, v in enumerate(table["userId"].to_pylist())],
            pa.string()))
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=500)
    reads = []
    real_stream = kernel._stream_early

    def spy(background, stream, *args):
        real_read = stream.read

        def read(names):
            reads.append(list(names))
            return real_read(names)
        return real_stream(background, dataclasses.replace(stream, read=read), *args)

    monkeypatch.setattr(kernel, "_stream_early", spy)
    options = {"on_invalid": "quarantine"} if quarantined else {}
    tables = {}
    for plan in ("columnar", "sql"):
        with sessionize.run(str(tmp_path / "in.parquet"), plan=plan, **options) as result:
            tables[plan] = result.events.to_arrow()
    shown = [c for c in table.column_names if c not in ("messageId", "timestamp")]
    assert sorted(map(tuple, reads)) == sorted((c,) for c in shown)
    assert tables["columnar"].equals(tables["sql"])


def test_time_ordered_runs_read_the_input_before_they_sort(monkeypatch, tmp_path):
    # the input's columns are read while the users are encoded and the events sorted
    # (their single-threaded steps leave a core idle), not once the time order is known
    pq.write_table(generated(3_000, seed=18), tmp_path / "in.parquet")
    calls = []
    for name in ("_stream_early", "_encode_users", "_time_then_user"):
        real = getattr(kernel, name)
        monkeypatch.setattr(kernel, name, lambda *a, _real=real, _name=name, **kw:
                            calls.append(_name) or _real(*a, **kw))
    with sessionize.run(str(tmp_path / "in.parquet"), plan="columnar") as result:
        assert result.events.to_arrow().num_rows == 3_000
    assert calls == ["_stream_early", "_encode_users", "_time_then_user"]


@pytest.mark.parametrize("events", [3_000, 1])
def test_streamed_columns_wait_for_a_time_order_sorted_apart(events, monkeypatch, tmp_path):
    # where the packed keys do not fit (or one event), the time order is sorted on a
    # thread of its own: the columns read early are gathered once it ends, and the
    # events are still the SQL plan's
    pq.write_table(generated(3_000, seed=19).slice(0, events), tmp_path / "in.parquet")
    monkeypatch.setattr(kernel, "_time_then_user", lambda *a: None)
    tables = {}
    for plan in ("columnar", "sql"):
        with sessionize.run(str(tmp_path / "in.parquet"), plan=plan) as result:
            if plan == "columnar":
                assert result._engine.columnar.streamed is not None
            tables[plan] = result.events.to_arrow()
    assert tables["columnar"].num_rows == events
    assert tables["columnar"].equals(tables["sql"])


def test_a_failed_run_stops_reading_its_input(monkeypatch, tmp_path):
    # a run that fails after the input's columns started being read cancels the reads
    # not started and waits for the one running, before the connection closes
    pq.write_table(generated(3_000, seed=20), tmp_path / "in.parquet")
    started = []
    real = kernel._stream_early

    def spy(background, stream, *args):
        def slow(names):  # without the wait, the reads would still be running below
            time.sleep(0.2)
            return stream.read(names)
        reads = real(background, dataclasses.replace(stream, read=slow), *args)
        started.append(reads)
        return reads

    def fail(*args):
        raise MemoryError("no room to sort")

    monkeypatch.setattr(kernel, "_stream_early", spy)
    monkeypatch.setattr(kernel, "_time_then_user", fail)
    with pytest.raises(MemoryError, match="no room to sort"):
        sessionize.run(str(tmp_path / "in.parquet"), plan="columnar")
    assert len(started) == 1 and started[0].jobs
    assert all(job.done() for job in started[0].jobs.values())


def test_input_columns_are_read_again_for_other_identities():
    # stitch and graph resolve users through a narrow join: the events re-read the input
    table = generated(2_000, seed=14)
    with sessionize.run(table, plan="columnar", identity="stitch") as result:
        assert result._engine.columnar.inputs is None
        assert result.events.to_arrow().num_rows == 2_000


def test_the_events_sql_shown_is_the_one_run():
    with sessionize.run(sessionize.sample_path()) as timed, \
            sessionize.run(sessionize.sample_path(), events_order="none") as unordered:
        assert "ORDER BY" in timed.sql("events")
        assert "ORDER BY" not in unordered.sql("events")
        assert unordered.sql("events") in timed.sql("events")


def test_events_order_is_checked():
    with pytest.raises(sessionize.OptionError, match="'events_order' must be one of time, "
                       "none \\(got 'user'\\)"):
        sessionize.run(sessionize.sample_path(), events_order="user")


def test_cli_events_order_flag(tmp_path):
    table = _numbered(generated(500, seed=2))
    pq.write_table(table, tmp_path / "in.parquet")
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", str(tmp_path / "in.parquet"), "--events-order", "none", "--out",
                 str(tmp_path / "out")], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    events = pq.read_table(tmp_path / "out" / "events.parquet")
    assert events.column("n").to_pylist() == list(range(500))


@pytest.mark.parametrize("users", [1, 2, 7, 5_000])
def test_user_sort_in_ranges_matches_one_sort(users, monkeypatch):
    monkeypatch.setattr(kernel, "HALVES_FROM", 0)
    rng = np.random.default_rng(users)
    n = 20_000
    codes = np.minimum(rng.zipf(1.3, n) - 1, users - 1)
    ts = rng.integers(0, 50, n)  # many ties: their messageId and row order shows
    msg = pa.array([None if i % 3 == 0 else f"m{v}" for i, v in
                    enumerate(rng.integers(0, 9, n))], pa.string())
    row = rng.permutation(n)
    want = _by_user(codes, ts, ts, msg, row, 1)
    for parts in (2, 3):
        for got, expected in zip(_by_user(codes, ts, ts, msg, row, parts), want):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("unit", [1, 1_000, 1_000_000])
@pytest.mark.parametrize("halves", [False, True])
def test_time_then_user_sort_matches_both_sorts(unit, halves, monkeypatch):
    # the time order from a sort of (time, position) values, ties fixed by (user,
    # messageId, row), and the user order as that order sorted by user: the same orders,
    # users and times as the two argsorts with their own tie fixes
    if halves:
        monkeypatch.setattr(kernel, "HALVES_FROM", 0)  # each half on a core, then a merge
    rng = np.random.default_rng(unit)
    n = 30_000
    codes = np.minimum(rng.zipf(1.2, n) - 1, 999)
    ts = BASE_US + rng.integers(0, 400, n) * unit  # many ties, within users and across them
    ts[::11] += 1 if unit == 1 else 0
    msg = pa.array([None if i % 4 == 0 else f"m{v}" for i, v in
                    enumerate(rng.integers(0, 6, n))], pa.string())
    row = rng.permutation(n)
    by_time, by_user, u, t, view = kernel._time_then_user(codes, ts, msg, row)
    np.testing.assert_array_equal(by_time, kernel._time_order(codes, ts, msg, row))
    for got, want in zip((by_user, u, t), _by_user(codes, ts, ts - ts.min(), msg, row, 1)):
        np.testing.assert_array_equal(got, want)
    assert u.dtype == t.dtype == np.int64
    # what the sorts leave of the time order, for the events' columns
    np.testing.assert_array_equal(view.codes, codes[by_time])
    np.testing.assert_array_equal(view.ts, ts[by_time])
    np.testing.assert_array_equal(by_time[view.at], by_user)
    inverse = np.empty(n, np.int64)
    inverse[by_user] = np.arange(n)
    np.testing.assert_array_equal(view.user_positions(), inverse[by_time])


def test_time_ordered_runs_take_the_packed_sorts_where_they_fit(monkeypatch):
    # millisecond times over 40 days fit (time, position) keys; microseconds over three
    # centuries do not, and the run falls back to the two argsorts (still agreeing)
    fitted = []
    real = kernel._time_then_user
    monkeypatch.setattr(kernel, "_time_then_user",
                        lambda *a: fitted.append(real(*a) is not None) or real(*a))
    run_both_plans(generated(3_000, seed=21))
    wide = generated(3_000, seed=21, span_us=300 * 365 * 86_400_000_000, ms=False)
    run_both_plans(wide)
    with sessionize.run(wide, plan="columnar", events_order="none"):
        pass  # no time order: no time sort at all
    assert fitted == [True, False]


def test_time_then_user_sort_declines_keys_over_64_bits():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 5, 1_000)
    msg = pa.array(["m"] * 1_000)
    row = np.arange(1_000)
    wide = BASE_US + rng.integers(0, 1 << 55, 1_000)  # 55 bits of microseconds + 10 of rows
    assert kernel._time_then_user(codes, wide, msg, row) is None
    assert kernel._time_then_user(codes[:1], wide[:1], msg[:1], row[:1]) is None
    narrow = wide // 1_000_000 * 1_000_000  # whole seconds: 20 bits fewer
    assert kernel._time_then_user(codes, narrow, msg, row) is not None


def test_packed_sort_matches_lexsort():
    rng = np.random.default_rng(1)
    for major_max, minor_max in [(10, 1 << 40), (1 << 30, 1 << 40), (3, 5),
                                 (1 << 40, 1 << 40), (1, 1)]:
        major = rng.integers(0, major_max, 5_000)
        minor = rng.integers(0, minor_max, 5_000)
        minor[::7] = minor[0]  # ties keep their input order (a stable sort)
        want = np.lexsort((minor, major))
        np.testing.assert_array_equal(_argsort_pair(major, minor), want)
        order, major_sorted, minor_sorted = kernel._sort_pair(major, minor)
        np.testing.assert_array_equal(order, want)
        np.testing.assert_array_equal(major_sorted, major[want])  # from the packed key
        np.testing.assert_array_equal(minor_sorted, minor[want])
        assert major_sorted.dtype == minor_sorted.dtype == np.int64


def test_columnar_events_are_built_when_first_read():
    with sessionize.run(sessionize.sample_path()) as result:
        assert len(result.events) == 6          # known without building the table
        assert result.events._arrow is None
        assert result.events.to_arrow(limit=2).num_rows == 2
        assert result.events._arrow is not None
        assert result.events.relation.aggregate("count(*)").fetchall() == [(6,)]


def test_columnar_plan_is_for_the_duckdb_engine():
    with pytest.raises(sessionize.OptionError, match="DuckDB engine only"):
        sessionize.run(sessionize.sample_path(), engine="spark", plan="columnar")


# -- the threshold analysis and the report on both plans -------------------------------------
def analyses_both_plans(source, *, platform="auto", **options):
    """The SQL plan's threshold analysis and report page, after checking the columnar
    plan (which computes them from its arrays, gaps.py) gives identical ones."""
    out = {}
    for plan in ("sql", "columnar"):
        with sessionize.run(source, plan=plan, **options) as result:
            assert result.plan == plan
            page = result.report(platform=platform)
            out[plan] = (page.analysis.to_dict(), page.analysis.events, page.html)
    assert out["columnar"][0] == out["sql"][0]
    assert out["columnar"][1] == out["sql"][1]
    assert out["columnar"][2] == out["sql"][2]
    return out["sql"][0]


@pytest.mark.parametrize("platform", ["auto", None])
def test_analysis_and_report_agree_on_generated_events(platform):
    analysis = analyses_both_plans(generated(20_000), platform=platform)
    assert analysis["platforms"] == ([] if platform is None else ["mobile", "server", "web"])


def test_analysis_agrees_with_many_platform_values_several_files_and_quarantine(tmp_path):
    # 120 distinct values: the platform texts are mapped with a join, not a CASE;
    # two files number their rows apart, and quarantined rows leave holes
    table = generated(6_000, seed=11)
    table = table.append_column("country", pa.array(
        [f"c{i % 120}" for i in range(table.num_rows)]))
    broken = table.slice(0, 40).set_column(
        3, "userId", pa.nulls(40, pa.string())).set_column(4, "anonymousId",
                                                          pa.nulls(40, pa.string()))
    pq.write_table(table.slice(0, 3_000), tmp_path / "a.parquet")
    pq.write_table(pa.concat_tables([broken, table.slice(3_000)]), tmp_path / "b.parquet")
    analysis = analyses_both_plans(str(tmp_path), platform="country", on_invalid="quarantine")
    assert len(analysis["platforms"]) == 120


def test_report_quality_sample_agrees(monkeypatch):
    # a small sample size makes the quality checks sample one user in four
    from sessionize.report import quality

    monkeypatch.setattr(quality, "SAMPLE_EVENTS", 2_500)
    analyses_both_plans(generated(10_000, seed=2), identity="stitch")


def test_analysis_agrees_when_every_event_is_quarantined():
    table = generated(50).set_column(3, "userId", pa.nulls(50, pa.string())).set_column(
        4, "anonymousId", pa.nulls(50, pa.string()))
    analysis = analyses_both_plans(table, on_invalid="quarantine")
    assert analysis["users"]["all"] == 0


def test_user_encoding_in_two_halves_matches_one_pass(monkeypatch):
    from sessionize.columnar import kernel

    rng = np.random.default_rng(4)
    values = [f"user-{i}" for i in rng.integers(0, 700, 6_000)] + ["é", "Z", "a"]
    chunked = pa.chunked_array([values[i:i + 1_000] for i in range(0, len(values), 1_000)])
    one_codes, one_names = kernel._encode_users(chunked)
    monkeypatch.setattr(kernel, "HALVES_FROM", 1)
    assert len(kernel._halves(chunked)) == 2
    codes, names = kernel._encode_users(chunked)
    np.testing.assert_array_equal(codes, one_codes)
    assert names.equals(one_names)
    single_codes, single_names = kernel._encode_users(chunked, halves=False)
    np.testing.assert_array_equal(single_codes, one_codes)
    assert single_names.equals(one_names)
    assert names.to_pylist() == sorted(set(values), key=str.encode)  # byte order, as SQL
    assert names.take(pa.array(codes)).to_pylist() == values


def test_a_run_and_a_report_do_not_import_pandas():
    # pa.array and Array.to_numpy import pandas on first use (0.2 s); the columnar plan
    # builds its arrays from numpy buffers instead
    import subprocess
    import sys

    code = ("import sys, sessionize\n"
            "r = sessionize.run(sessionize.sample_path())\n"
            "r.events.to_arrow(), r.sessions.to_arrow(), r.users.to_arrow(), r.report()\n"
            "assert r.plan == 'columnar'\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_numpy_views_of_arrow_arrays():
    from sessionize.columnar.kernel import _to_numpy

    values = pa.array([5, 6, 7, 8], pa.int32()).slice(1, 2)
    np.testing.assert_array_equal(_to_numpy(values), [6, 7])
    stamps = pa.array([0, 1_000_000], pa.timestamp("us", tz="UTC"))
    np.testing.assert_array_equal(_to_numpy(stamps), [0, 1_000_000])
    days = pa.array([1, 2], pa.date32())
    np.testing.assert_array_equal(_to_numpy(days), [1, 2])
    chunked = pa.chunked_array([[1, 2], [3]], pa.int64())
    np.testing.assert_array_equal(_to_numpy(chunked), [1, 2, 3])


def test_carried_columns_are_gathered_early_and_not_twice(monkeypatch):
    # a time-ordered run prepares the input's columns' gathers as soon as the keys
    # arrive and gathers them while it finishes; the events table takes those gathers
    # instead of starting its own, and a run whose events are never read cancels the
    # ones not yet started
    table = generated(4_000, seed=17)
    taken = []
    real = kernel._take
    monkeypatch.setattr(kernel, "_take", lambda values, at: taken.append(len(values))
                        or real(values, at))
    prepared, started = [], []
    real_prepare, real_early = kernel._prepare_early, kernel._gather_early
    monkeypatch.setattr(kernel, "_prepare_early",
                        lambda keys, inputs: prepared.append(inputs) or real_prepare(keys, inputs))
    monkeypatch.setattr(kernel, "_gather_early",
                        lambda *a: started.append(a[1]) or real_early(*a))
    with sessionize.run(table) as result:
        events = result.events.to_arrow()
    carried = sorted(set(table.column_names) - {"timestamp"})  # the time is the parsed one
    assert [sorted(inputs) for inputs in prepared] == [carried]
    assert [sorted(jobs) for jobs in started] == [sorted(prepared[0].values())]
    # the carried columns come from their prepared gathers; only resolved_user and the
    # session keys are gathered from scratch: no column twice
    assert len(taken) == 2
    with sessionize.run(table, plan="sql") as sql:
        assert events.equals(sql.events.to_arrow())
    with sessionize.run(table) as result:  # events never read
        columnar = result._engine.columnar
        jobs = [*columnar.early.values(), *columnar.prepared.values()]
    assert columnar.early is None and columnar.prepared is None
    done, running = concurrent.futures.wait(jobs, timeout=10)
    assert not running
    with sessionize.run(table, events_order="none"):
        pass
    assert len(prepared) == len(started) == 2  # nothing prepared without a time order


@pytest.mark.parametrize("chunks", [[], [0], [5], [3, 0, 4, 1], [1] * 9])
def test_take_of_a_few_values_chunk_by_chunk_matches_arrow(chunks):
    rng = np.random.default_rng(len(chunks))
    values = [f"m{i}" if i % 4 else None for i in range(sum(chunks))]
    at = 0
    parts = []
    for length in chunks:
        parts.append(pa.array(values[at:at + length], pa.string()))
        at += length
    column = pa.chunked_array(parts, pa.string())
    indices = rng.integers(0, max(len(values), 1), 2 * len(values)) if values else np.zeros(0,
                                                                                      np.int64)
    want = column.take(pa.array(indices, pa.int64())).combine_chunks()
    assert kernel._take_few(column, indices).equals(want)
    assert kernel._take_few(column.combine_chunks(), indices).equals(want)


def test_columnar_sessions_and_users_are_handed_over_as_built():
    # not read back through DuckDB (10M events: 0.28 s); run_both_plans checks they are
    # the SQL plan's tables, schema included
    with sessionize.run(generated(2_000), plan="columnar") as result:
        assert result.sessions.to_arrow() is result._engine.columnar.sessions
        assert result.users.to_arrow() is result._engine.columnar.users
        assert len(result.sessions) == result._engine.columnar.sessions.num_rows
        assert result.sessions.to_arrow(limit=3).num_rows == 3
        counted = result.sessions.relation.aggregate("count(*)").fetchall()
        assert counted == [(len(result.sessions),)]


@pytest.mark.parametrize("reuse", [False, True])
def test_position_sort_in_blocks_matches_a_stable_argsort(reuse, monkeypatch):
    # positions are or-ed into the key a block at a time; with reuse the key is built in
    # the caller's array
    monkeypatch.setattr(kernel, "POSITION_BLOCK", 7)
    major = np.random.default_rng(4).integers(0, 50, 1_000)
    want = np.argsort(major, kind="stable")
    positions, values = kernel._sort_positions(major.copy(), 10, reuse=reuse)
    np.testing.assert_array_equal(positions, want)
    np.testing.assert_array_equal(values, major[want])
    empty = kernel._sort_positions(np.zeros(0, np.int64), 1, reuse=reuse)
    assert [len(part) for part in empty] == [0, 0]


@pytest.mark.parametrize(("chunks", "expected"), [
    ([[1, 2, 5], [], [6, 9]], True),
    ([[1, 2, 5], [5, 9]], False),      # equal across a chunk boundary
    ([[1, 3, 2]], False),
    ([[], []], True),
    ([[4], [3]], False),
])
def test_increasing_rows(chunks, expected):
    assert kernel._increasing(pa.chunked_array(chunks, pa.int64())) is expected


def test_time_unit_is_judged_on_every_value():
    since = np.arange(0, 10_000_000, 1_000_000, dtype=np.int64).repeat(1_000)
    assert kernel._unit(since) == 1_000_000
    since[1] += 1_000  # outside the sample: whole milliseconds, not seconds
    assert kernel._unit(since) == 1_000
    since[3] += 1
    assert kernel._unit(since) == 1


def test_plans_agree_when_the_keys_are_not_in_row_order(monkeypatch):
    # the input rows break the last ties; the usual keys are in row order and their
    # positions stand in for the rows, here the rows themselves are read
    monkeypatch.setattr(kernel, "_increasing", lambda column: False)
    table = _numbered(generated(4_000, seed=23))  # n: a unique number per event
    run_both_plans(table)
    with sessionize.run(table, plan="sql", events_order="none") as sql, \
            sessionize.run(table, plan="columnar", events_order="none") as columnar:
        for name in ("events", "sessions", "users"):
            want, got = getattr(sql, name).to_arrow(), getattr(columnar, name).to_arrow()
            assert got.schema == want.schema
            key = ["n"] if name == "events" else ["resolved_user", "session_id"][
                :2 if name == "sessions" else 1]
            assert got.sort_by([(c, "ascending") for c in key]).to_pylist() == \
                want.sort_by([(c, "ascending") for c in key]).to_pylist()


def test_inverse_permutation_in_blocks(monkeypatch):
    monkeypatch.setattr(kernel, "POSITION_BLOCK", 7)
    order = np.random.default_rng(5).permutation(1_000)
    np.testing.assert_array_equal(kernel._inverse(order), np.argsort(order))
    assert len(kernel._inverse(np.zeros(0, np.int64))) == 0


def test_a_run_closed_unread_ends_its_input_stream(tmp_path):
    # sessions read, events never: closing cancels the streamed columns not started and
    # lets the one reading the input end before the connection closes
    pq.write_table(generated(3_000, seed=17), tmp_path / "in.parquet")
    result = sessionize.run(str(tmp_path / "in.parquet"), plan="columnar")
    columnar = result._engine.columnar
    jobs = [job for job, _ in columnar.streamed.values()] + list(columnar.reads.jobs.values())
    assert result.sessions.to_arrow().num_rows > 0
    result.close()
    assert columnar.streamed is None and columnar.reads is None
    assert all(job.done() for job in jobs)
    assert not [job for job in jobs if not job.cancelled() and job.exception() is not None]


@pytest.mark.parametrize("users", [1, 2, 255, 256, 257, 65_536, 65_537, 300_000])
def test_radix_sort_by_user_code_matches_a_stable_argsort(users):
    # one 16-bit digit up to 65,536 users, then a last digit of 8 bits (or 16)
    rng = np.random.default_rng(users)
    codes = np.concatenate([np.arange(users), rng.integers(0, users, 5_000)])
    rng.shuffle(codes)
    order, in_order = kernel._by_code(codes, users)
    want = np.argsort(codes, kind="stable")
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(in_order, codes[want])
    empty = kernel._by_code(np.zeros(0, np.int64), 0)
    assert [len(part) for part in empty] == [0, 0]


@pytest.mark.parametrize(("events_order", "halves"), [("time", False), ("none", True)])
def test_users_are_encoded_on_both_cores_only_when_nothing_runs_beside(
        monkeypatch, tmp_path, events_order, halves):
    # a time-ordered run reads the input's columns on the other core meanwhile, so its
    # users are encoded in one pass; an unordered run has that core free
    pq.write_table(generated(3_000, seed=19), tmp_path / "in.parquet")
    seen = []
    real = kernel._encode_users
    monkeypatch.setattr(kernel, "_encode_users",
                        lambda user, **kw: seen.append(kw.get("halves")) or real(user, **kw))
    with sessionize.run(str(tmp_path / "in.parquet"), plan="columnar",
                        events_order=events_order) as result:
        assert result.events.to_arrow().num_rows == 3_000
    assert seen == [halves]


@pytest.mark.parametrize("arrow_type", [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
    pa.uint64(), pa.float16(), pa.float32(), pa.float64()])
def test_numpy_views_of_numbers_take_numpy_s_own_type(arrow_type):
    # worked out without pyarrow's to_pandas_dtype (which imports pandas on older pyarrow)
    from sessionize.columnar.kernel import _numpy_dtype, _to_numpy

    values = pa.array([1, 2, 3]).cast(arrow_type)
    assert _numpy_dtype(arrow_type) == values.to_numpy().dtype
    np.testing.assert_array_equal(_to_numpy(values), [1, 2, 3])


@pytest.mark.parametrize(("arrow_type", "counts"), [
    (pa.timestamp("us", tz="UTC"), "i8"), (pa.date32(), "i4"), (pa.date64(), "i8"),
    (pa.duration("ms"), "i8"), (pa.time32("s"), "i4"), (pa.time64("us"), "i8")])
def test_numpy_views_of_times_are_their_integer_counts(arrow_type, counts):
    from sessionize.columnar.kernel import _numpy_dtype

    assert _numpy_dtype(arrow_type) == np.dtype(counts)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_kernel_starts_no_more_threads_than_it_is_given(threads):
    # every thread the threading module starts runs the profile function first: it
    # records the kernel's worker threads started while a run, its events and its
    # threshold analysis are built
    import threading

    started = []

    def first_call(frame, event, arg):
        started.append(threading.current_thread().name)
        sys.setprofile(None)

    table = generated(20_000, seed=5)
    threading.setprofile(first_call)
    try:
        with sessionize.run(table, plan="columnar", threads=threads) as result:
            events = result.events.to_arrow()
            sessionize.thresholds(result)
    finally:
        threading.setprofile(None)
    workers = [name for name in started if name.startswith("sessionize-kernel")]
    if threads == 1:
        assert workers == []  # everything ran on the calling thread
    else:
        assert workers  # the probe sees the kernel's threads when it has some
    with sessionize.run(table, plan="sql") as sql:
        assert events.equals(sql.events.to_arrow())
