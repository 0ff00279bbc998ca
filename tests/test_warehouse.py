"""The standalone query per table (``sessionize.to_sql``), run where it can run here:
DuckDB and a real PostgreSQL server (tests/postgres_cluster.py), each held equal to
``sessionize.run`` on the same events: the seed, every fixture case, a property sample.

The source table is the input as ``sessionize run`` reads it, plus ``input_order`` (its
row number), passed as ``order_by``: the run's last tie-breaker, so the tables must be
equal value for value, in the same row order. Values are normalised only for how each
client spells them: instants to UTC, JSON text parsed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_cluster import copy_from_duckdb, postgres_dsn, postgres_server  # noqa: F401
from test_cases import CASES
from test_properties import streams, to_table

import sessionize
from sessionize import OptionError
from sessionize.io.inputs import load
from sessionize.sql import standalone
from sessionize.sql.standalone import standalone_sql

TABLES = ("events", "sessions", "users")
CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def normal(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def rows(columns, records) -> list[dict]:
    return [{c: normal(v) for c, v in zip(columns, record)} for record in records]


def run_tables(source, **options) -> dict[str, list[dict]]:
    with sessionize.run(source, on_invalid="quarantine", **options) as result:
        return {name: rows(getattr(result, name).columns,
                           [tuple(r.values()) for r in getattr(result, name).to_arrow()
                            .to_pylist()])
                for name in TABLES}


def duckdb_source(source) -> tuple[duckdb.DuckDBPyConnection, dict[str, str]]:
    """``source`` read as ``sessionize run`` reads it, as table ``src`` with ``input_order``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    loaded = load(con, source, text_columns=[], on_invalid="raise",
                  workdir=tempfile.mkdtemp(prefix="sz-test-"))
    con.execute("CREATE TABLE src AS SELECT * EXCLUDE (__sz_row), __sz_row AS input_order "
                "FROM sz_input ORDER BY __sz_row")
    return con, loaded.schema


def on_duckdb(con, schema, rules) -> dict[str, list[dict]]:
    out = {}
    for table in TABLES:
        rel = con.sql(standalone_sql(rules, dialect="duckdb", source="src", table=table,
                                     schema=schema, order_by="input_order"))
        out[table] = rows(rel.columns, rel.fetchall())
    return out


def on_postgres(pg, schema, rules, table_name="src") -> dict[str, list[dict]]:
    out = {}
    for table in TABLES:
        cur = pg.execute(standalone_sql(rules, dialect="postgres", source=table_name,
                                        table=table, schema=schema, order_by="input_order"))
        out[table] = rows([d.name for d in cur.description], cur.fetchall())
    return out


def assert_same(got: dict, want: dict, what: str) -> None:
    for table in TABLES:
        assert got[table] == want[table], f"{what}: {table} differ"


@pytest.fixture
def pg(postgres_dsn):  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_dsn) as con:
        # any session time zone: the query must not depend on it
        con.execute("SET TimeZone = 'America/New_York'")
        yield con


def case_source(path: Path, tmp_path: Path) -> tuple[str, dict]:
    case = json.loads(path.read_text())
    source = tmp_path / "events.json"
    source.write_text(json.dumps(case["events"]))
    return str(source), case.get("options", {})


# --- DuckDB ----------------------------------------------------------------------------------
def test_seed_on_duckdb():
    con, schema = duckdb_source(sessionize.sample_path())
    assert_same(on_duckdb(con, schema, sessionize.Rules()),
                run_tables(sessionize.sample_path()), "seed")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_case_on_duckdb(path, tmp_path):
    source, options = case_source(path, tmp_path)
    rules = sessionize.Rules.from_options(**options)
    con, schema = duckdb_source(source)
    if rules.identity == "graph":
        with pytest.raises(OptionError, match=r"identity='graph'.*one duckdb query"):
            on_duckdb(con, schema, rules)
        return
    assert_same(on_duckdb(con, schema, rules), run_tables(source, **options), path.stem)


# --- PostgreSQL ------------------------------------------------------------------------------
def test_seed_on_postgres(pg):
    con, schema = duckdb_source(sessionize.sample_path())
    copy_from_duckdb(con, "src", pg, "src")
    assert_same(on_postgres(pg, schema, sessionize.Rules()),
                run_tables(sessionize.sample_path()), "seed")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_case_on_postgres(path, tmp_path, pg):
    source, options = case_source(path, tmp_path)
    rules = sessionize.Rules.from_options(**options)
    if rules.identity == "graph":
        return  # refused for every dialect (test_fixture_case_on_duckdb)
    con, schema = duckdb_source(source)
    copy_from_duckdb(con, "src", pg, "src")
    assert_same(on_postgres(pg, schema, rules), run_tables(source, **options), path.stem)


#: Rule sets the property sample draws from: every rule that reads only what the generated
#: streams carry (user ids, time, messageId, event name).
RULE_SETS = [
    {},
    {"passive_events": ["Clicked"]},
    {"start_events": ["Page Viewed"], "end_events": ["Clicked"]},
    {"max_duration": "2h"},
    {"midnight": "Europe/Berlin"},
    {"user_change": True},
    {"identity": "stitch"},
    {"identity": "first", "passive_events": ["Page Viewed"], "max_duration": "1h"},
    {"gap_by": "event", "gaps": {"Clicked": "1m"}, "passive_events": ["Page Viewed"]},
    {"client_session": "event"},
    {"campaign": ["event"]},
]


@pytest.fixture(scope="module")
def pg_module(postgres_server):  # noqa: F811
    import psycopg
    from postgres_cluster import dsn

    with psycopg.connect(dsn()) as con:
        con.execute("SET TimeZone = 'Asia/Kolkata'")
        yield con


@settings(max_examples=100 if CI else 12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(streams(), st.sampled_from(RULE_SETS))
def test_generated_streams_on_duckdb_and_postgres(pg_module, case, options):
    gap, events = case
    table = to_table(events)
    options = {"gap": f"{gap}us", **options}
    rules = sessionize.Rules.from_options(**options)
    want = run_tables(table, **options)
    con, schema = duckdb_source(table)
    assert_same(on_duckdb(con, schema, rules), want, "duckdb")
    pg_module.execute("DROP TABLE IF EXISTS src")
    copy_from_duckdb(con, "src", pg_module, "src")
    assert_same(on_postgres(pg_module, schema, rules), want, "postgres")


# --- without an order column: the content decides ---------------------------------------------
@settings(max_examples=30 if CI else 8, deadline=None, derandomize=True)
@given(streams(min_size=1), st.randoms(use_true_random=False))
def test_row_order_does_not_matter_without_order_by(case, rnd):
    gap, events = case
    shuffled = events[:]
    rnd.shuffle(shuffled)
    outputs = []
    for batch in (events, shuffled):
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("arrow_src", to_table(batch))
        con.execute("CREATE TABLE src AS SELECT * FROM arrow_src")
        query = standalone_sql(sessionize.Rules(gap=f"{gap}us"), dialect="duckdb", source="src",
                               table="events", schema={c: str(t) for c, t in zip(
                                   con.table("src").columns, con.table("src").types)})
        outputs.append(sorted(map(repr, con.sql(query).fetchall())))
    assert outputs[0] == outputs[1]


# --- the query itself ------------------------------------------------------------------------
def test_default_schema_reads_segment_columns_and_timestamps():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""CREATE TABLE tracks AS SELECT * FROM (VALUES
        ('u1', NULL, 'm1', 'A', 'track', TIMESTAMPTZ '2024-01-01 09:00:00+00'),
        ('u1', NULL, 'm2', 'B', 'track', TIMESTAMPTZ '2024-01-01 09:31:00+00'))
        AS t("userId", "anonymousId", "messageId", "event", "type", "timestamp")""")
    got = con.sql(sessionize.to_sql(dialect="duckdb", source="tracks", table="sessions"))
    assert [r[1] for r in got.fetchall()] == [1, 2]


def test_refusals_name_the_rule_and_the_dialect():
    with pytest.raises(OptionError, match=r"midnight='event'.*one bigquery query.*\nHint"):
        sessionize.to_sql(midnight="event", dialect="bigquery", source="t")
    with pytest.raises(OptionError, match=r"'dialect' must be one of duckdb, postgres"):
        sessionize.to_sql(dialect="oracle", source="t")
    with pytest.raises(OptionError, match=r"'table' must be one of events, sessions"):
        sessionize.to_sql(dialect="duckdb", source="t", table="visits")
    with pytest.raises(OptionError, match=r"no declared column 'sid'.*\nHint: declare it"):
        sessionize.to_sql(client_session="sid", dialect="duckdb", source="t",
                          schema={"userId": "text", "timestamp": "timestamptz"})


def test_no_dialect_gets_ignore_nulls_it_lacks_or_unaliased_subqueries():
    rules = sessionize.Rules(campaign=True, client_session="context.sessionId",
                             passive_events=["x"], gap_by="platform", gaps={"web": "30m"})
    sql = standalone_sql(rules, dialect="postgres", source="t",
                         schema={**standalone.default_schema(rules), "context_sessionId": "text"})
    assert "IGNORE NULLS" not in sql and "ARG_MAX" not in sql.upper()
    assert ") AS sz" in sql and "EXCLUDE" not in sql


def test_invalid_rows_are_left_out_and_listed_by_the_quarantine_query():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""CREATE TABLE t AS SELECT * FROM (VALUES
        ('u1', 'm1', '2024-01-01T09:00:00Z'), (NULL, 'm2', '2024-01-01T09:00:00Z'),
        ('u1', 'm3', 'yesterday')) AS t("userId", "messageId", "timestamp")""")
    schema = {"userId": "text", "messageId": "text", "timestamp": "text"}
    events = con.sql(sessionize.to_sql(dialect="duckdb", source="t", schema=schema)).fetchall()
    assert len(events) == 1
    quarantine = con.sql(sessionize.to_sql(dialect="duckdb", source="t", schema=schema,
                                           table="quarantine")).fetchall()
    assert sorted(r[-1] for r in quarantine) == ["invalid_timestamp", "missing_user"]


def test_postgres_reads_text_timestamps_as_duckdb_does(pg):
    texts = ["2024-01-01T09:00:00Z", "2024-01-01T09:00:00", "2024-01-01 09:00:00+01:00",
             "2024-01-01T09:00:00.123456789Z", "2024-01-01", "2024-02-30T09:00:00Z",
             "2024-13-01T00:00:00Z", "1704099600", "1704099600123", "infinity", "epoch",
             "2024-01-01T25:00:00Z", "  2024-06-01T12:00:00-0700 ", "2024-03-31T02:30:00+02"]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE src (\"userId\" VARCHAR, \"timestamp\" VARCHAR, input_order INT)")
    con.executemany("INSERT INTO src VALUES ('u', ?, ?)", [(t, i) for i, t in enumerate(texts)])
    schema = {"userId": "VARCHAR", "timestamp": "VARCHAR"}
    copy_from_duckdb(con, "src", pg, "src")
    want = on_duckdb(con, schema, sessionize.Rules())
    got = on_postgres(pg, schema, sessionize.Rules())
    assert got["events"] == want["events"]
    # outside the timestamp grammar (docs/guide.md): offsets are Z or +HH:MM
    quarantined = {"2024-02-30T09:00:00Z", "2024-13-01T00:00:00Z", "infinity", "epoch",
                   "2024-01-01T25:00:00Z", "  2024-06-01T12:00:00-0700 ",
                   "2024-03-31T02:30:00+02"}
    assert len(want["events"]) == len(texts) - len(quarantined)


def test_every_dialect_renders_and_parses_back():
    import sqlglot

    rules = sessionize.Rules(profile="saas", passive_events=["Heartbeat"], enrich=True)
    for dialect in standalone.DIALECTS:
        for table in TABLES:
            sql = standalone_sql(rules, dialect=dialect, source="segment.tracks", table=table)
            sqlglot.parse_one(sql, read=dialect)


# --- the command -----------------------------------------------------------------------------
def test_sql_command_prints_the_query_run_gives(tmp_path):
    import io

    from sessionize.cli.main import main

    rules = tmp_path / "rules.toml"
    rules.write_text('gap = "1d"\n')
    out, err = io.StringIO(), io.StringIO()
    code = main(["sql", "--dialect", "duckdb", "--source", "src", "--table", "sessions",
                 "--config", str(rules), "--order-by", "input_order",
                 *[f"--column={c}={t}" for c, t in duckdb_source(
                     sessionize.sample_path())[1].items()]], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    con, _ = duckdb_source(sessionize.sample_path())
    rel = con.sql(out.getvalue())
    want = run_tables(sessionize.sample_path(), gap="1d")["sessions"]
    assert rows(rel.columns, rel.fetchall()) == want and len(want) == 3


def test_sql_command_refusal_is_a_usage_error():
    import io

    from sessionize.cli.main import main

    err = io.StringIO()
    assert main(["sql", "--dialect", "trino", "--source", "t", "--identity", "graph"],
                stdout=io.StringIO(), stderr=err) == 2
    assert "identity='graph' rule cannot be written as one trino query" in err.getvalue()
