"""The PostgreSQL engine (``engine="postgres"``) on a real server (tests/postgres_cluster.py),
held equal to DuckDB: the seed, every fixture case, a property sample, bad rows.

Each input is read as DuckDB reads it and copied into a PostgreSQL table in DuckDB's input
order (the table's physical order is the engine's input order). Values are compared
exactly; only their client spelling is normalised (instants in UTC, JSON text parsed).
"""

from __future__ import annotations

import io
import json
import os

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_cluster import copy_from_duckdb, dsn, postgres_dsn, postgres_server  # noqa: F401
from test_cases import CASES, compare
from test_properties import streams, to_table
from test_warehouse import RULE_SETS, TABLES, duckdb_source, normal

import sessionize
from sessionize import InputError, InvalidEventsError, OptionError
from sessionize.cli.main import main

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def load(source, pg, name="src") -> None:
    con, _ = duckdb_source(source)
    con.execute("ALTER TABLE src DROP COLUMN input_order")
    copy_from_duckdb(con, "src", pg, name)


def tables(result) -> dict[str, list[dict]]:
    return {name: [{k: normal(v) for k, v in row.items()}
                   for row in getattr(result, name).to_arrow().to_pylist()]
            for name in (*TABLES, "quarantine")}


def same_as_duckdb(source, pg_dsn, name="src", **options) -> dict:
    with sessionize.run(source, **options) as want, \
            sessionize.run(name, engine="postgres", dsn=pg_dsn, **options) as got:
        assert got.engine.name == "postgres"
        expected, actual = tables(want), tables(got)
        for table in TABLES:
            assert actual[table] == expected[table], table
        if len(want.quarantine):
            keep = ("quarantine_reason", "source_row")
            assert [{k: r[k] for k in keep} for r in actual["quarantine"]] == \
                [{k: r[k] for k in keep} for r in expected["quarantine"]]
        return actual


@pytest.fixture
def pg(postgres_dsn):  # noqa: F811
    with psycopg.connect(postgres_dsn) as con:
        yield con


def test_seed_equals_duckdb(pg, postgres_dsn):  # noqa: F811
    load(sessionize.sample_path(), pg)
    got = same_as_duckdb(sessionize.sample_path(), postgres_dsn)
    assert [s["session_id"] for s in got["sessions"]] == [1, 1, 2, 1]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_case_equals_duckdb(path, tmp_path, pg, postgres_dsn):  # noqa: F811
    case = json.loads(path.read_text())
    source = tmp_path / "events.json"
    source.write_text(json.dumps(case["events"]))
    options = case.get("options", {})
    load(str(source), pg)
    if options.get("identity") == "graph":
        with pytest.raises(OptionError, match="identity='graph' does not run on "
                                              "engine='postgres'.*\nHint"):
            sessionize.run("src", engine="postgres", dsn=postgres_dsn, **options)
        return
    same_as_duckdb(str(source), postgres_dsn, **options)
    with sessionize.run("src", engine="postgres", dsn=postgres_dsn, **options) as result:
        compare(result.sessions.to_arrow().to_pylist(), case["expected_sessions"], "sessions")


@pytest.fixture(scope="module")
def shared(postgres_server):  # noqa: F811
    with psycopg.connect(dsn(), autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS props")
        con.execute("CREATE DATABASE props")
    with psycopg.connect(dsn("props")) as con:
        yield con


@settings(max_examples=100 if CI else 12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(streams(), st.sampled_from(RULE_SETS))
def test_generated_streams_equal_duckdb(shared, case, options):
    gap, events = case
    table = to_table(events)
    shared.execute("DROP TABLE IF EXISTS src")
    load(table, shared)
    same_as_duckdb(table, dsn("props"), gap=f"{gap}us", on_invalid="quarantine", **options)


# --- bad input, as on DuckDB -----------------------------------------------------------------
BAD = [{"userId": "u1", "timestamp": "2024-01-01T09:00:00Z", "messageId": "m1"},
       {"userId": None, "anonymousId": "", "timestamp": "2024-01-01T09:01:00Z",
        "messageId": "m2"},
       {"userId": "u1", "timestamp": "not a time", "messageId": "m3"},
       {"userId": "u1", "timestamp": "2024-02-30T09:00:00Z", "messageId": "m4"}]


def test_invalid_rows_raise_as_on_duckdb(tmp_path, pg, postgres_dsn):  # noqa: F811
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(BAD))
    load(str(source), pg)
    with pytest.raises(InvalidEventsError) as on_duckdb:
        sessionize.run(str(source))
    with pytest.raises(InvalidEventsError) as on_postgres:
        sessionize.run("src", engine="postgres", dsn=postgres_dsn)
    # a file has lines to name, a table has none: the rest of each problem is the same
    def located(problems, *, where):
        return [{k: v for k, v in p.items() if k not in ("file", "line", "message")}
                | {"where": where(p)} for p in problems]
    assert located(on_postgres.value.problems, where=lambda p: None) == located(
        on_duckdb.value.problems, where=lambda p: None)
    assert all(p["file"] is None and p["line"] is None for p in on_postgres.value.problems)
    assert all(p["line"] is not None for p in on_duckdb.value.problems)
    assert on_postgres.value.count == 3 and "Hint: on_invalid='quarantine'" in str(
        on_postgres.value)


def test_quarantine_into_a_schema_all_tables_at_once(tmp_path, pg, postgres_dsn):  # noqa: F811
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(BAD))
    load(str(source), pg, "public.raw_events")
    same_as_duckdb(str(source), postgres_dsn, name="public.raw_events", on_invalid="quarantine")
    engine = sessionize.Postgres(dsn=postgres_dsn, into="analytics")
    with sessionize.run("public.raw_events", engine=engine, on_invalid="quarantine") as result:
        assert result.stats()["quarantined"] == {"invalid_timestamp": 2, "missing_user": 1}
    found = pg.execute("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = 'analytics' ORDER BY 1").fetchall()
    assert [r[0] for r in found] == ["sessionize_events", "sessionize_quarantine",
                                     "sessionize_sessions", "sessionize_users"]
    assert pg.execute("SELECT count(*) FROM analytics.sessionize_events").fetchone()[0] == 1


def test_a_connection_is_left_open_and_tidy(pg, postgres_dsn):  # noqa: F811
    load(sessionize.sample_path(), pg)
    pg.commit()
    with sessionize.run("src", engine=sessionize.Postgres(connection=pg)) as result:
        assert len(result.sessions) == 4
    assert not pg.closed
    left = pg.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'sz\\_%' "
                      "AND relpersistence = 't'").fetchone()[0]
    assert left == 0


def test_usage_errors_name_what_is_wrong(postgres_dsn):  # noqa: F811
    with pytest.raises(InputError, match=r"no table 'nowhere.tracks'.*\nHint"):
        sessionize.run("nowhere.tracks", engine="postgres", dsn=postgres_dsn)
    with pytest.raises(OptionError, match="needs a dsn= or a connection="):
        sessionize.Postgres()
    with pytest.raises(OptionError, match=r"'threads' does not apply to engine='postgres'"):
        sessionize.run("t", engine="postgres", dsn=postgres_dsn, threads=2)
    with pytest.raises(OptionError, match=r"'dsn' needs engine='postgres'"):
        sessionize.run(sessionize.sample_path(), dsn=postgres_dsn)
    with pytest.raises(OptionError, match="cannot connect to PostgreSQL"):
        sessionize.run("t", engine="postgres", dsn="postgresql://nobody@127.0.0.1:1/x")


def test_cli_runs_inside_postgres(pg, postgres_dsn):  # noqa: F811
    load(sessionize.sample_path(), pg, "public.tracks")
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", "--engine", "postgres", "--dsn", postgres_dsn, "--source",
                 "public.tracks", "--into", "sessions_out"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "3 users, 4 sessions" in out.getvalue()
    assert '"sessions_out"."sessionize_sessions"' in out.getvalue()
    assert pg.execute("SELECT count(*) FROM sessions_out.sessionize_sessions").fetchone()[0] == 4
    err = io.StringIO()
    assert main(["run", "--engine", "postgres", "--dsn", postgres_dsn, "--source",
                 "public.tracks"], stdout=io.StringIO(), stderr=err) == 2
    assert "--into" in err.getvalue()
