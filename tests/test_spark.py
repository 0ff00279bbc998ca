"""The Spark engine (``engine="spark"``): the same compiled rules, the same answers.

Runs on ``local[2]`` with one SparkSession for the module. Skipped only when pyspark
is not installed and the ``CI`` variable is unset: in CI these tests must run. A smoke
test always runs; the full suite is ``slow`` (``--runslow`` or ``SESSIONIZE_RUNSLOW=1``,
which ``.ci/run`` exports).
Known engine gaps are strict xfails, so closing one is noticed.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import Event, graph_identities
from reference import sessionize as reference
from test_cases import CASES, compare
from test_identity_graph import SHARED, graph_streams
from test_identity_graph import to_table as graph_table
from test_invalid import REASONS, ROWS, write_ndjson
from test_notebook import EXPECTED, same_table
from test_properties import streams, to_table, us

import sessionize
from sessionize import InvalidEventsError, MalformedJSONError, OptionError
from sessionize.cli.main import main
from sessionize.sql import dialects

HAVE_SPARK = importlib.util.find_spec("pyspark") is not None
needs_spark = pytest.mark.skipif(not HAVE_SPARK and not os.environ.get("CI"),
                                 reason="pyspark is not installed (CI installs it)")
# pyspark warns on import about pandas 3; nothing else is filtered.
spark_noise = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning")
SPARK_TESTS = [needs_spark, spark_noise]
ADDED = ["resolved_user", "prev_timestamp", "time_since_last_event", "new_session",
         "session_id", "session_key", "start_reason"]


@pytest.fixture(scope="module")
def spark():
    from sessionize.engines.spark import spark_session

    session = spark_session("local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


def on_spark(spark, source, **options):
    return sessionize.run(source, engine="spark", spark=spark, **options)


def tables(result, events_columns=None) -> dict[str, list[dict]]:
    events = result.events.to_arrow()
    if events_columns is not None:
        events = events.select(events_columns)
    return {"events": events.to_pylist(), "sessions": result.sessions.to_arrow().to_pylist(),
            "users": result.users.to_arrow().to_pylist()}


# --- no Spark needed ------------------------------------------------------------------------
def test_dialect_rewrites_do_what_their_doctests_say():
    failed, tried = doctest.testmod(dialects)
    assert tried >= 10 and failed == 0


def test_unknown_engine_and_misplaced_spark_options_are_usage_errors():
    with pytest.raises(OptionError, match=r"'engine' must be one of duckdb, spark, .*'flink'"):
        sessionize.run(sessionize.sample_path(), engine="flink")
    with pytest.raises(OptionError, match="needs engine='spark'.*\n.*Hint"):
        sessionize.run(sessionize.sample_path(), spark=object())


# --- on Spark -------------------------------------------------------------------------------
@pytest.mark.usefixtures("spark")
class TestSparkSmoke:
    """Always run: the Spark engine starts, runs the notebook's rule and refuses what it
    cannot do. The full suite below is ``slow`` (tests/conftest.py); CI runs it."""

    pytestmark = SPARK_TESTS

    def test_notebook_table_is_reproduced(self, spark):
        with on_spark(spark, sessionize.sample_path()) as result:
            same_table(result.events.to_pandas(), EXPECTED)
            sessions = result.sessions.to_pandas()
            assert sessions[["resolved_user", "session_id", "event_count", "start_reason",
                             "first_event", "last_event", "duration_seconds"]].values.tolist() \
                == [["anon_456", 1, 1, "first_event", "Feature Used", "Feature Used", 0.0],
                    ["user_001", 1, 2, "first_event", "identify", "Signup Completed", 120.0],
                    ["user_001", 2, 2, "inactivity", "Login", "Feature Used", 300.0],
                    ["user_002", 1, 1, "first_event", "identify", "identify", 0.0]]
            assert "3 users, 4 sessions" in result.summary()
            assert "UNIX_MICROS" in result.sql("assign")

    def test_duckdb_options_are_refused(self, spark):
        with pytest.raises(OptionError, match="'memory_limit' tunes DuckDB.*\n.*Hint"):
            on_spark(spark, sessionize.sample_path(), memory_limit="1GB")
        with pytest.raises(OptionError, match=r"cannot read stdin"):
            on_spark(spark, "-")


BAD_INPUTS = sorted((Path(__file__).parent / "bad_inputs").iterdir())


def _outcome(run, path, mode):
    """What a run of a bad input gives: the error (type, first line), or the events' message
    ids and the quarantine's (reason, file, line) rows."""
    try:
        with run(str(path), on_invalid=mode) as result:
            events = sorted(map(str, result.events.to_arrow().column("messageId").to_pylist())
                            ) if len(result.events) and "messageId" in result.events.columns \
                else len(result.events)
            quarantine = sorted(
                (q["quarantine_reason"], q["source_file"], q["source_line"])
                for q in result.quarantine.to_arrow().to_pylist())
            return events, quarantine
    except sessionize.SessionizeError as exc:
        return type(exc).__name__, str(exc).splitlines()[0]


@pytest.mark.usefixtures("spark")
class TestSpark:
    pytestmark = [*SPARK_TESTS, pytest.mark.slow]

    @pytest.mark.parametrize("path", BAD_INPUTS, ids=[p.name for p in BAD_INPUTS])
    def test_bad_input_is_placed_as_the_duckdb_engine_places_it(self, spark, path):
        """Issue 22's cases on Spark: the same events, quarantine rows (with the same
        input lines) and errors as DuckDB, through the same careful pass for local files."""
        for mode in ("raise", "quarantine"):
            expected = _outcome(sessionize.run, path, mode)
            assert _outcome(lambda *a, **k: on_spark(spark, *a, **k), path, mode) == expected

    @pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
    def test_fixture_case(self, spark, path, tmp_path):
        case = json.loads(path.read_text())
        source = tmp_path / "events.json"
        source.write_text(json.dumps(case["events"]))
        with on_spark(spark, str(source), **case.get("options", {})) as result:
            compare(result.sessions.to_arrow().to_pylist(), case["expected_sessions"],
                    "sessions")
            if "expected_events" in case:
                compare(result.events.to_arrow().to_pylist(), case["expected_events"], "events")

    @settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(streams(), min_size=5, max_size=5))
    def test_matches_the_reference(self, spark, batch):
        """Five generated streams per Spark run (users namespaced per stream), so ten runs
        check fifty streams: one Spark job costs seconds, one stream microseconds."""
        gap, events = _combine(batch)
        with on_spark(spark, to_table(events), gap=f"{gap}us",
                      on_invalid="quarantine") as result:
            got = tables(result)
            quarantined = len(result.quarantine)
        want = reference(events, gap)
        assert quarantined == len(events) - len(want["events"])
        got_events = sorted(
            ({"row": e["row"], "resolved_user": e["resolved_user"],
              "prev_us": us(e["prev_timestamp"]), "gap_us": us(e["time_since_last_event"]),
              "new_session": e["new_session"], "session_id": e["session_id"],
              "session_key": e["session_key"], "start_reason": e["start_reason"]}
             for e in got["events"]), key=lambda e: e["row"])
        assert got_events == sorted(want["events"], key=lambda e: e["row"])
        assert [(s["resolved_user"], s["session_id"], s["session_key"], us(s["session_start"]),
                 us(s["session_end"]), s["event_count"], s["start_reason"], s["first_event"],
                 s["last_event"], s["duration_seconds"]) for s in got["sessions"]] == \
            [(s["resolved_user"], s["session_id"], s["session_key"], s["start_us"], s["end_us"],
              s["event_count"], s["start_reason"], s["first_event"], s["last_event"],
              s["duration_seconds"]) for s in want["sessions"]]
        assert [(u["resolved_user"], u["session_count"], u["event_count"], us(u["first_seen"]),
                 us(u["last_seen"])) for u in got["users"]] == \
            [(u["resolved_user"], u["session_count"], u["event_count"], u["first_seen_us"],
              u["last_seen_us"]) for u in want["users"]]

    @pytest.mark.parametrize("kind", ["parquet", "ndjson", "csv", "arrow"])
    def test_same_tables_as_duckdb(self, spark, tmp_path, kind):
        """Ties without messageId across two files: input order decides, on both engines."""
        source = _write_events(tmp_path, kind, _generated(400))
        columns = ["userId", "anonymousId", "messageId", "event", "timestamp", *ADDED]
        with sessionize.run(source) as duck, on_spark(spark, source) as sparked:
            assert tables(sparked, columns) == tables(duck, columns)

    def test_unordered_events_are_the_same_rows(self, spark, tmp_path):
        source = _write_events(tmp_path, "parquet", _generated(400))
        columns = ["userId", "anonymousId", "messageId", "event", "timestamp", *ADDED]
        with sessionize.run(source) as duck, \
                on_spark(spark, source, events_order="none") as sparked:
            want, got = tables(duck, columns), tables(sparked, columns)
        def key(event):  # the whole row: identical rows are interchangeable
            return tuple(str(event[c]) for c in columns)
        assert sorted(got["events"], key=key) == sorted(want["events"], key=key)
        assert got["sessions"] == want["sessions"] and got["users"] == want["users"]

    def test_invalid_rows_raise_the_same_error(self, spark, tmp_path):
        path = write_ndjson(tmp_path / "events.ndjson", ROWS)
        errors = []
        for options in ({}, {"engine": "spark", "spark": spark}):
            with pytest.raises(InvalidEventsError) as info:
                sessionize.run(path, **options)
            errors.append(info.value)
        assert str(errors[1]) == str(errors[0])
        # local files: both engines name each row's file and line (docs/spark.md)
        assert errors[0].problems[0]["line"] == 2
        assert errors[1].problems == errors[0].problems and errors[1].count == 5

    def test_invalid_rows_are_quarantined_alike(self, spark, tmp_path):
        path = write_ndjson(tmp_path / "events.ndjson", ROWS)
        columns = ["messageId", "timestamp", "quarantine_reason", "source_row"]
        with sessionize.run(path, on_invalid="quarantine") as duck, \
                on_spark(spark, path, on_invalid="quarantine") as sparked:
            got = sparked.quarantine.to_arrow().select(columns).to_pylist()
            assert got == duck.quarantine.to_arrow().select(columns).to_pylist()
            assert {r["messageId"]: r["quarantine_reason"] for r in got} == REASONS
            assert tables(sparked, ADDED) == tables(duck, ADDED)

    def test_malformed_json_raises_or_is_quarantined(self, spark, tmp_path):
        path = tmp_path / "events.ndjson"
        path.write_text(json.dumps(ROWS[0]) + "\n{not json\n" + json.dumps(ROWS[-1]) + "\n")
        with pytest.raises(MalformedJSONError, match="line 2.*not json.*\n.*Hint"):
            on_spark(spark, str(path))
        with on_spark(spark, str(path), on_invalid="quarantine") as result:
            bad = result.quarantine.to_arrow().to_pylist()
            assert [(r["quarantine_reason"], r["source_line"], r["raw_line"]) for r in bad] == \
                [("malformed_json", 2, "{not json")]
            assert len(result.events) == 2

    def test_write_stages_then_renames(self, spark, tmp_path):
        with on_spark(spark, sessionize.sample_path()) as result:
            for fmt in ("parquet", "csv", "ndjson"):
                paths = result.write(tmp_path / "out", format=fmt)
                assert [os.path.basename(p) for p in paths] == \
                    [f"events.{fmt}", f"sessions.{fmt}", f"users.{fmt}"]
        assert sorted(os.listdir(tmp_path / "out"))[0].startswith("events")  # no staging left
        events = pq.read_table(tmp_path / "out" / "events.parquet")
        assert events.schema.field("timestamp").type == pa.timestamp("us", "UTC")
        assert events.column("time_since_last_event").to_pylist()[:2] == [None, 120.0]
        part = next((tmp_path / "out" / "events.ndjson").glob("part-*"))
        line = json.loads(part.read_text().splitlines()[0])
        assert line["timestamp"] == "2024-01-01T09:00:00.000000Z" and line["userId"] == "user_001"

    def test_a_spark_dataframe_is_a_source(self, spark):
        frame = spark.createDataFrame(to_table(_generated(50)).drop(["row"]))
        with on_spark(spark, frame) as result:
            assert len(result.events) == 50 and result.events.spark_df.count() == 50

    @settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(graph_streams(), min_size=4, max_size=4))
    def test_identity_graph_matches_the_reference(self, spark, batch):
        """The label propagation rounds as Spark jobs: four generated graphs per run."""
        gap, options, events = _combine_graphs(batch)
        with on_spark(spark, graph_table(events), gap=f"{gap}us", identity="graph",
                      identity_cap=options.identity_cap, user_change=options.user_change,
                      on_invalid="quarantine") as result:
            got = sorted((e["row"], e["resolved_user"], e["session_id"], e["start_reason"])
                         for e in result.events.to_arrow().to_pylist())
            identities = {r["identifier"]: (r["resolved_user"], r["rule"])
                          for r in result.identities.to_arrow().to_pylist()}
        assert identities == graph_identities(events, options.identity_cap)
        assert got == sorted((e["row"], e["resolved_user"], e["session_id"], e["start_reason"])
                             for e in reference(events, gap, options)["events"])

    @pytest.mark.parametrize("identity", ["stitch", "graph"])
    def test_identity_tables_and_diagnostics_as_on_duckdb(self, spark, tmp_path, identity):
        path = tmp_path / "events.json"
        path.write_text(json.dumps(SHARED))
        with sessionize.run(str(path), identity=identity) as duck, \
                on_spark(spark, str(path), identity=identity) as sparked:
            rows = lambda r: sorted(r.identities.to_arrow().to_pylist(),  # noqa: E731
                                    key=lambda x: x["identifier"])
            assert rows(sparked) == rows(duck)
            assert sparked.identity_diagnostics() == duck.identity_diagnostics()
            assert sparked.summary() == duck.summary()
            paths = sparked.write(tmp_path / "out")
        assert os.path.basename(paths[-1]) == "identities.parquet"

    def test_cli_runs_on_spark(self, spark, tmp_path, capsys):
        status = main(["run", "--sample", "--out", str(tmp_path), "--engine", "spark",
                       "--master", "local[2]"])
        assert status == 0, capsys.readouterr().err
        assert "user_001       2" in capsys.readouterr().out
        written = pq.read_table(tmp_path / "events.parquet").to_pandas()
        # Spark cannot write intervals: the gap is written as seconds (docs/spark.md)
        written["time_since_last_event"] = pd.to_timedelta(written["time_since_last_event"],
                                                           unit="s")
        same_table(written, EXPECTED)
        assert spark.range(1).count() == 1  # the session the CLI found is still running

    def test_timestamp_text_is_judged_alike(self, spark, tmp_path):
        # one grammar (compiler.ISO_TEXT) decides before either engine's cast sees the text
        texts = ["2024-01-01T09", "2024-01-01T09:00:00Europe/Paris", "2024-01-01T09:00:00 PST",
                 "2024-01-01T09:00:00+25:00", "2024-1-1T9:0:0Z", "1.7041032e9",
                 "0001-01-01T00:00:00+14:00", "2024-01-01T09:00+0530", "2024-01-01",
                 "2024-01-01T09:00Z", "2024-01-01 09:00:00.123456789+05:30",
                 "2024-01-01T09:00:00+05", "9999-12-31T23:59:59.999999Z"]
        rows = [{"userId": "u", "messageId": f"m{i}", "timestamp": text}
                for i, text in enumerate(texts)]
        path = write_ndjson(tmp_path / "events.ndjson", rows)
        with sessionize.run(path, on_invalid="quarantine") as duck, \
                on_spark(spark, path, on_invalid="quarantine") as sparked:
            refused = sorted(r["messageId"] for r in sparked.quarantine.to_arrow().to_pylist())
            assert refused == sorted(r["messageId"] for r in duck.quarantine.to_arrow().to_pylist())
            assert refused == ["m0", "m1", "m11", "m2", "m3", "m4", "m6", "m7", "m9"]

    def test_csv_output_is_rfc_4180_like_duckdbs(self, spark, tmp_path):
        rows = [{"userId": "u", "messageId": "m1", "timestamp": "2024-01-01T09:00:00Z",
                 "event": 'say "hi", then\nleave'},
                {"userId": "u", "messageId": "m2", "timestamp": "2024-01-01T09:01:00Z",
                 "event": "back\\slash"}]
        path = write_ndjson(tmp_path / "events.ndjson", rows)
        with sessionize.run(path) as duck, on_spark(spark, path) as sparked:
            duck.write(tmp_path / "duck", format="csv")
            sparked.write(tmp_path / "spark", format="csv")
        parts = sorted((tmp_path / "spark" / "events.csv").glob("part-*.csv"))
        read = pd.concat([pd.read_csv(p) for p in parts]).sort_values("messageId")
        want = pd.read_csv(tmp_path / "duck" / "events.csv").sort_values("messageId")
        assert read["event"].tolist() == want["event"].tolist() == \
            ['say "hi", then\nleave', "back\\slash"]


def _combine(batch: list[tuple[int, list[Event]]]) -> tuple[int, list[Event]]:
    """Several streams as one input: ids namespaced per stream (blank ids stay blank, so
    they stay missing), rows renumbered; the first stream's gap applies to all."""
    def tag(value: str | None, k: int) -> str | None:
        return value if value is None or value.strip(" ") == "" else f"s{k}/{value}"

    events = []
    for k, (_, stream) in enumerate(batch):
        for e in stream:
            events.append(Event(len(events), e.ts_us, tag(e.user_id, k), tag(e.anonymous_id, k),
                                e.message_id, e.name))
    return batch[0][0], events


def _combine_graphs(batch):
    """Several generated graphs as one input, ids namespaced per graph (blank ids stay
    blank); the first graph's gap and options apply to all."""
    def tag(value: str | None, k: int) -> str | None:
        return value if value is None or value.strip(" ") == "" else f"g{k}/{value}"

    events = []
    for k, (_, _, stream) in enumerate(batch):
        for e in stream:
            events.append(Event(len(events), e.ts_us, tag(e.user_id, k), tag(e.anonymous_id, k),
                                e.message_id, e.name, kind=e.kind,
                                previous_id=tag(e.previous_id, k)))
    return batch[0][0], batch[0][1], events


def _generated(n: int) -> list[Event]:
    """Bursty events of a few users, many exact ties, messageIds missing on half."""
    rnd = random.Random(7)
    base = 1_704_067_200_000_000
    out = []
    for row in range(n):
        ts = base + rnd.choice([0, 1, 60, 1800, 1801, 7200]) * 1_000_000 * rnd.randint(0, 20)
        user = rnd.choice(["u1", "u2", "u3", None])
        out.append(Event(row, ts, user, rnd.choice(["a1", "a2"]),
                         f"m{row % 7}" if row % 2 else None, rnd.choice(["Viewed", None])))
    return out


def _write_events(tmp_path, kind: str, events: list[Event]):
    table = to_table(events).drop(["row"])
    if kind == "arrow":
        return table
    half = len(events) // 2
    folder = tmp_path / kind
    folder.mkdir()
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        target = folder / f"part-{i}.{kind}"
        if kind == "parquet":
            pq.write_table(part, target)
            continue
        rows = part.to_pylist()
        for r in rows:
            r["timestamp"] = r["timestamp"].isoformat().replace("+00:00", "Z")
        if kind == "ndjson":
            target.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            import csv

            with target.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    return str(folder)
