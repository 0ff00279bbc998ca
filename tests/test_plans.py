"""The two DuckDB plans (compiled SQL, columnar kernel): which one runs, and that they agree.

The property tests (test_properties.py) run every generated stream under both plans and
require identical tables; here: the choice ``plan="auto"`` makes, the errors, and the
inputs and sizes the generated streams do not reach (many users, wide time ranges,
several Parquet files, quarantined rows, per-event gaps and stitched identities).
"""

from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_properties import run_both_plans

import sessionize
from sessionize.api import execute
from sessionize.cli.main import main
from sessionize.columnar import gather, kernel
from sessionize.columnar.gather import _numpy_dtype, to_numpy
from sessionize.columnar.kernel import unsupported_rule
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
    {"midnight": "UTC"}, {"midnight": "event"}, {"max_duration": "2h"}, {"campaign": True},
    {"start_events": ["Signed Up"], "end_events": ["Logged Out"]},
    {"passive_events": ["identify"]}, {"client_session": "context.library.name"},
    {"client_session": "context.library.name", "client_session_mode": "compare"},
    {"user_change": True}, {"user_change": True, "identity": "graph"},
    {"enrich": True}, {"first_last": ["event"]},
])
def test_auto_picks_the_columnar_plan_for_the_rules_it_runs(options):
    with sessionize.run(generated(200), **options) as result:
        assert result.plan == "columnar"


def test_auto_picks_the_sql_plan_with_a_database_file(tmp_path):
    # the columnar kernel runs every rule; a database file keeps the SQL plan's tables
    with sessionize.run(generated(200), database=str(tmp_path / "t.duckdb"),
                        enrich=True) as result:
        assert result.plan == "sql"


def test_auto_picks_the_sql_plan_for_a_database_file(tmp_path):
    with sessionize.run(sessionize.sample_path(), database=tmp_path / "run.duckdb") as result:
        assert result.plan == "sql"
        assert len(result.sessions) == 4


def test_columnar_plan_refuses_a_rule_it_does_not_run(monkeypatch):
    # every rule runs on the columnar plan today: a rule it did not run would be refused
    monkeypatch.setattr(engine_duckdb, "unsupported_rule",
                        lambda rules: "enrich" if rules.enrich else None)
    with pytest.raises(sessionize.OptionError, match="does not run the enrich rule"):
        sessionize.run(sessionize.sample_path(), plan="columnar", enrich=True)
    with sessionize.run(sessionize.sample_path(), enrich=True) as result:
        assert result.plan == "sql"


def test_unknown_plan_is_refused():
    with pytest.raises(sessionize.OptionError, match="'plan' must be one of auto, sql, "
                                                     "columnar, bucketed \\(got 'fast'\\)"):
        sessionize.run(sessionize.sample_path(), plan="fast")


def test_the_columnar_plan_runs_every_rule():
    assert unsupported_rule(Rules.from_options()) is None
    assert unsupported_rule(Rules.from_options(gap_by="platform", gaps={"web": "1h"})) is None
    assert unsupported_rule(Rules.from_options(profile="mobile")) is None
    assert unsupported_rule(Rules.from_options(profile="saas")) is None
    assert unsupported_rule(Rules.from_options(
        profile="saas", enrich=True, first_last=["event"], client_session="sid",
        user_change=True, campaign=True, start_events=["Open"], passive_events=["identify"],
        identity="graph")) is None


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
    # the rules beyond the gap (bench/rules_overhead.py's set, and each alone)
    {"gap_by": "platform", "gaps": {"web": "30m", "mobile": "5m", "server": "30m"},
     "midnight": "Europe/Berlin", "campaign": True, "start_events": ["Signed Up"],
     "end_events": ["Clicked"], "passive_events": ["identify"],
     "max_duration": "24h", "identity": "stitch"},
    {"midnight": "America/New_York", "gap": "6h"}, {"midnight": "event", "gap": "6h"},
    {"max_duration": "10m", "gap": "2h"}, {"passive_events": ["identify", "Clicked"]},
    {"passive_events": ["identify"], "gap_by": "platform", "gaps": {"mobile": "1m"}},
    {"client_session": "context.library.name", "identity": "stitch"},
    {"user_change": True, "identity": "stitch", "gap": "6h"}, {"user_change": True},
    {"enrich": True, "bounce": "30s"}, {"first_last": ["event", "context.library.name"]},
    {"first_last": ["event", "userId", "timestamp", "context"], "enrich": True,
     "identity": "graph"},
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


def test_plans_agree_when_ids_have_one_width():
    # UUID-like messageIds and anonymousIds, and userIds of one width with some missing
    table = generated(4_000, seed=11)
    rng = np.random.default_rng(11)
    hexes = [f"{v:032x}" for v in rng.integers(0, 2**63, 4_000)]
    table = table.set_column(0, "messageId", pa.array(hexes, pa.string()))
    table = table.set_column(4, "anonymousId", pa.array(
        [h[::-1] for h in hexes], pa.string()).take(pa.array(rng.integers(0, 500, 4_000))))
    table = table.set_column(3, "userId", pc.utf8_lpad(table.column("userId"), 10, "0"))
    run_both_plans(table)


def _one(array):
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


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


def test_unordered_run_with_many_users_matches_the_sql_plan():
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
    real = engine_duckdb.assign  # the engine's name for kernel.assign
    monkeypatch.setattr(engine_duckdb, "assign", lambda *a, **k: asked.append(
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
        with execute(table, plan="columnar", events_order=order, on_invalid="quarantine",
                     events_table=with_keys) as result:
            columnar = result.engine.columnar
            # a time-ordered run streams them, one column at a time, where a cursor can
            # read the input (files; a frame is registered on the run's connection only)
            streams = with_keys and order == "time" and source != "frame"
            assert (columnar.stream is not None) == streams
            assert (columnar.inputs is not None) == (with_keys and not streams)
            tables[with_keys] = {name: getattr(result, name).to_arrow()
                                 for name in ("events", "sessions", "users", "quarantine")}
            result.engine.ensure_assign()  # the assign stage shows only its own columns
            assign_columns = result.engine.con.table("sz_assign").columns
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
def test_time_ordered_events_stream_the_input_one_column_at_a_time(quarantined, tmp_path):
    # each input column is read alone, once, while the run sorts; the messageId the keys
    # hold is not read again; the events are the SQL plan's
    table = generated(3_000, seed=16)
    if quarantined:  # every 70th row has no user: the rows read are not the keys'
        table = table.set_column(4, "anonymousId", pa.array(
            [None if i % 70 == 0 else v for i, v in enumerate(table["anonymousId"].to_pylist())],
            pa.string()))
        table = table.set_column(3, "userId", pa.array(
            [None if i % 70 == 0 else v for i, v in enumerate(table["userId"].to_pylist())],
            pa.string()))
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=500)
    options = {"on_invalid": "quarantine"} if quarantined else {}
    tables = {}
    for plan in ("columnar", "sql"):
        with sessionize.run(str(tmp_path / "in.parquet"), plan=plan, threads=2,
                            **options) as result:
            if plan == "columnar":
                reads = result.engine.columnar.reads
            tables[plan] = result.events.to_arrow()
    shown = [c for c in table.column_names if c not in ("messageId", "timestamp")]
    assert sorted(reads) == sorted(shown)
    assert all(job.done() and job.exception() is None for job in reads.values())
    assert tables["columnar"].equals(tables["sql"])


def test_input_columns_are_read_again_for_other_identities():
    # stitch and graph resolve users through a narrow join: the events re-read the input
    table = generated(2_000, seed=14)
    with sessionize.run(table, plan="columnar", identity="stitch") as result:
        assert result.engine.columnar.inputs is None
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
            page = sessionize.report(result, platform=platform)
            out[plan] = (page.analysis.to_dict(), page.analysis.events, page.html)
    assert out["columnar"][0] == out["sql"][0]
    assert out["columnar"][1] == out["sql"][1]
    # the pages are the same but for the minute each was generated in
    stamp = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert stamp.sub("", out["columnar"][2]) == stamp.sub("", out["sql"][2])
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
    from sessionize.reporting import quality

    monkeypatch.setattr(quality, "SAMPLE_EVENTS", 2_500)
    analyses_both_plans(generated(10_000, seed=2), identity="stitch")


def test_analysis_agrees_when_every_event_is_quarantined():
    table = generated(50).set_column(3, "userId", pa.nulls(50, pa.string())).set_column(
        4, "anonymousId", pa.nulls(50, pa.string()))
    analysis = analyses_both_plans(table, on_invalid="quarantine")
    assert analysis["users"]["all"] == 0


@pytest.mark.parametrize("rules", [
    "",
    # every rule: booleans and dictionary codes are unpacked from their bits (to_numpy and
    # fill_null(False) import pandas for them)
    "gap_by='platform', gaps={'web': '1h'}, midnight='event', campaign=True, "
    "start_events=['Signup Completed'], end_events=['identify'], passive_events=['identify'], "
    "client_session='context.library.name', user_change=True, max_duration='1h', enrich=True, "
    "first_last=['event'], identity='stitch'",
])
def test_a_run_and_a_report_do_not_import_pandas(rules):
    # pa.array and Array.to_numpy import pandas on first use (0.2 s); the columnar plan
    # builds its arrays from numpy buffers instead
    import subprocess
    import sys

    code = ("import sys, sessionize\n"
            f"r = sessionize.run(sessionize.sample_path(), {rules})\n"
            "r.events.to_arrow(), r.sessions.to_arrow(), r.users.to_arrow(), sessionize.report(r)\n"
            "assert r.plan == 'columnar'\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("nulls", [False, True])
def test_booleans_and_codes_unpacked_from_their_bits(nulls):
    rng = np.random.default_rng(3)
    values = rng.random(1000) < 0.5
    missing = (rng.random(1000) < 0.3) if nulls else np.zeros(1000, bool)
    flags = pa.array(values.tolist(), pa.bool_(), mask=missing)
    indices = pa.array(rng.integers(0, 9, 1000).tolist(), pa.int32(), mask=missing)
    for offset, length in [(0, 1000), (3, 990), (8, 0), (13, 7)]:
        want = values[offset:offset + length] & ~missing[offset:offset + length]
        assert gather.bools(flags.slice(offset, length)).tolist() == want.tolist()
        got = gather.dictionary_codes(indices.slice(offset, length)).tolist()
        assert got == [-1 if v is None else v
                       for v in indices.slice(offset, length).to_pylist()]


def test_numpy_views_of_arrow_arrays():
    values = pa.array([5, 6, 7, 8], pa.int32()).slice(1, 2)
    np.testing.assert_array_equal(to_numpy(values), [6, 7])
    stamps = pa.array([0, 1_000_000], pa.timestamp("us", tz="UTC"))
    np.testing.assert_array_equal(to_numpy(stamps), [0, 1_000_000])
    days = pa.array([1, 2], pa.date32())
    np.testing.assert_array_equal(to_numpy(days), [1, 2])
    chunked = pa.chunked_array([[1, 2], [3]], pa.int64())
    np.testing.assert_array_equal(to_numpy(chunked), [1, 2, 3])


def test_columnar_sessions_and_users_are_handed_over_as_built():
    # not read back through DuckDB (10M events: 0.28 s); run_both_plans checks they are
    # the SQL plan's tables, schema included
    with sessionize.run(generated(2_000), plan="columnar") as result:
        assert result.sessions.to_arrow() is result.engine.columnar.sessions
        assert result.users.to_arrow() is result.engine.columnar.users
        assert len(result.sessions) == result.engine.columnar.sessions.num_rows
        assert result.sessions.to_arrow(limit=3).num_rows == 3
        counted = result.sessions.relation.aggregate("count(*)").fetchall()
        assert counted == [(len(result.sessions),)]


@pytest.mark.parametrize(("chunks", "expected"), [
    ([[1, 2, 5], [], [6, 9]], True),
    ([[1, 2, 5], [5, 9]], False),      # equal across a chunk boundary
    ([[1, 3, 2]], False),
    ([[], []], True),
    ([[4], [3]], False),
])
def test_increasing_rows(chunks, expected):
    assert kernel._increasing(pa.chunked_array(chunks, pa.int64())) is expected


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


@pytest.mark.parametrize("users", [1, 2, 255, 256, 257, 65_536, 65_537, 300_000])
def test_radix_sort_by_user_code_matches_a_stable_argsort(users):
    # one 16-bit digit up to 65,536 users, then a last digit of 8 bits (or 16)
    rng = np.random.default_rng(users)
    codes = np.concatenate([np.arange(users), rng.integers(0, users, 5_000)])
    rng.shuffle(codes)
    order = kernel._by_code(codes, users)
    np.testing.assert_array_equal(order, np.argsort(codes, kind="stable"))
    assert len(kernel._by_code(np.zeros(0, np.int64), 0)) == 0


@pytest.mark.parametrize("arrow_type", [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
    pa.uint64(), pa.float16(), pa.float32(), pa.float64()])
def test_numpy_views_of_numbers_take_numpy_s_own_type(arrow_type):
    # worked out without pyarrow's to_pandas_dtype (which imports pandas on older pyarrow)
    values = pa.array([1, 2, 3]).cast(arrow_type)
    assert _numpy_dtype(arrow_type) == values.to_numpy().dtype
    np.testing.assert_array_equal(to_numpy(values), [1, 2, 3])


@pytest.mark.parametrize(("arrow_type", "counts"), [
    (pa.timestamp("us", tz="UTC"), "i8"), (pa.date32(), "i4"), (pa.date64(), "i8"),
    (pa.duration("ms"), "i8"), (pa.time32("s"), "i4"), (pa.time64("us"), "i8")])
def test_numpy_views_of_times_are_their_integer_counts(arrow_type, counts):
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


def test_plans_agree_on_the_edges_of_max_duration_and_end_events():
    # windows of max_duration from the session's first event, each including its end:
    # (0, m], (m, 2m], ...; the first event of each later window starts a session, and
    # an end event's next event starts one too
    m = 600_000_000
    times = [0, m, m + 1, 2 * m, 2 * m + 1, 2 * m + 2]
    names = ["a", "b", "c", "d", "Close", "e"]
    table = pa.table({
        "userId": pa.array(["u"] * len(times), pa.string()),
        "messageId": pa.array([f"m{i}" for i in range(len(times))], pa.string()),
        "event": pa.array(names, pa.string()),
        "timestamp": pa.array([BASE_US + t for t in times], pa.timestamp("us", tz="UTC")),
    })
    tables = run_both_plans(table, gap="1d", max_duration="10m", end_events=["Close"])
    assert tables["events"].column("start_reason").to_pylist() == [
        "first_event", None, "max_duration", None, "max_duration", "start_event"]


@pytest.mark.parametrize(("late_ids", "reasons"), [
    # at 10 us the device's order is (time, messageId): zed's m5, then amy's m9, so only
    # amy's event follows another user's; the time order has amy first (by user)
    (["m5", "m9"], ["first_event", "first_event", None, "user_change"]),
    # a missing messageId sorts last: amy's m9, then zed's: both follow another user
    ([None, "m9"], ["first_event", "first_event", "user_change", "user_change"]),
])
def test_plans_agree_on_a_device_s_order_at_one_instant(late_ids, reasons):
    table = pa.table({
        "userId": pa.array(["amy", "zed", "zed", "amy"], pa.string()),
        "anonymousId": pa.array(["tab"] * 4, pa.string()),
        "messageId": pa.array(["a1", "z1", *late_ids], pa.string()),
        "timestamp": pa.array([BASE_US, BASE_US, BASE_US + 10, BASE_US + 10],
                              pa.timestamp("us", tz="UTC")),
    })
    tables = run_both_plans(table, user_change=True)
    events = sorted(zip(tables["events"].column("messageId").to_pylist(),
                        tables["events"].column("userId").to_pylist(),
                        tables["events"].column("start_reason").to_pylist()),
                    key=lambda e: ["a1", "z1", *late_ids].index(e[0]))
    assert [e[2] for e in events] == reasons


def test_plans_agree_on_the_edges_of_enrichment():
    # a bounce lasts strictly less than `bounce` with at most one view; first and last
    # values are the session's first and last present ones, never a neighbour's
    s, h = 1_000_000, 3_600_000_000
    times = [0, 10 * s, h, h + 10 * s - 1, 2 * h, 2 * h + 10 * s - 1, 0]
    table = pa.table({
        "userId": pa.array(["u"] * 6 + ["v"], pa.string()),
        "messageId": pa.array([f"m{i}" for i in range(7)], pa.string()),
        "type": pa.array(["page", "track", "screen", "Page", "page", "track", "track"],
                         pa.string()),
        "timestamp": pa.array([BASE_US + t for t in times], pa.timestamp("us", tz="UTC")),
        "properties": pa.array([{"path": p} for p in [None, "/x", "/y", None, None, None, "/z"]],
                               pa.struct([("path", pa.string())])),
        "plan": pa.array([None, "free", "pro", None, None, None, "team"], pa.string()),
    })
    tables = run_both_plans(table, gap="30m", enrich=True, bounce="10s", first_last=["plan"])
    got = [(r["resolved_user"], r["session_id"], r["landing_page"], r["exit_page"],
            r["page_views"], r["screens"], r["is_bounce"], r["first_plan"], r["last_plan"])
           for r in tables["sessions"].to_pylist()]
    assert got == [("u", 1, "/x", "/x", 1, 0, False, "free", "free"),  # lasts 10 s exactly
                   ("u", 2, "/y", "/y", 1, 1, False, "pro", "pro"),    # two views
                   ("u", 3, None, None, 1, 0, True, None, None),
                   ("v", 1, "/z", "/z", 0, 0, True, "team", "team")]


def test_plans_agree_on_enrichment_with_quarantined_rows():
    # the enrichment's values are read for every input row, quarantined ones included
    table = generated(3_000)
    users = table.column("userId").to_pylist()
    table = table.set_column(3, "userId", pa.array(
        [None if i % 7 == 0 else u for i, u in enumerate(users)], pa.string()))
    table = table.set_column(4, "anonymousId", pa.array(
        [None if i % 7 == 0 else a for i, a in enumerate(table.column("anonymousId").to_pylist())],
        pa.string()))
    tables = run_both_plans(table, on_invalid="quarantine", enrich=True, first_last=["event"])
    assert tables["quarantine"].num_rows == 429


def test_plans_agree_on_midnight_where_the_zone_changes():
    # 23:30 UTC in UTC, then 23:40 UTC in Berlin (00:40 there): both are the next day in
    # Berlin, the event's zone, so no midnight split (the previous event's own date, in
    # UTC, is the day before); then 23:50 UTC in Kolkata (05:20, the same next day)
    day = 1_704_067_200_000_000 + 86_400_000_000 * 10  # 2024-01-11T00:00Z
    minute = 60_000_000
    times = [day - 30 * minute, day - 20 * minute, day - 10 * minute]
    table = pa.table({
        "userId": pa.array(["u"] * 3, pa.string()),
        "messageId": pa.array(["m0", "m1", "m2"], pa.string()),
        "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        "tz": pa.array(["UTC", "Europe/Berlin", "Asia/Kolkata"], pa.string()),
    })
    tables = run_both_plans(table, midnight="event", timezone_column="tz")
    assert tables["events"].column("start_reason").to_pylist() == ["first_event", None, None]
