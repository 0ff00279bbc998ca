"""``sessionize dbt DIR``: the package runs with a real ``dbt build`` (dbt-core 1.11 with
dbt-duckdb and dbt-postgres) against a DuckDB file and the test PostgreSQL cluster, and
its tables equal ``sessionize run`` on the same events.

dbt is found through ``SESSIONIZE_DBT`` (the ``dbt`` executable), else ``PATH``; without
it the tests skip, unless ``CI`` is set. A few inputs by default; every fixture case under
``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import duckdb
import psycopg
import pytest
from postgres_cluster import copy_from_duckdb, postgres_dsn, postgres_server  # noqa: F401
from test_cases import CASES
from test_warehouse import TABLES, duckdb_source, rows, run_tables

import sessionize
from sessionize.cli.main import main

DBT = os.environ.get("SESSIONIZE_DBT") or shutil.which("dbt")
CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
pytestmark = pytest.mark.skipif(DBT is None and not os.environ.get("CI"),
                                reason="dbt is not installed (pip install 'dbt-core~=1.11.0' "
                                       "dbt-duckdb dbt-postgres; or set SESSIONIZE_DBT)")
PICKED = {"rule_platform_gaps", "rule_campaign_change", "identity_stitch_pre_login",
          "rule_max_duration_and_midnight", "enrich_sessions"}
SOME = [p for p in CASES if CI or p.stem in PICKED]


def write_package(directory, schema, options, dialect) -> None:
    flags = [f"--column={c}={t}" for c, t in schema.items()]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, dict):
            flags += [flag, *(f"{k}={v}" for k, v in value.items())]
        elif isinstance(value, list):
            for item in value:
                flags += [{"start_events": "--start-event", "end_events": "--end-event",
                           "passive_events": "--passive-event",
                           "first_last": "--first-last"}.get(key, flag), item]
        else:
            flags += [flag, str(value)]
    err = io.StringIO()
    code = main(["dbt", str(directory), "--dialect", dialect, "--source", "raw.tracks",
                 "--order-by", "input_order", *flags], stdout=io.StringIO(), stderr=err)
    assert code == 0, err.getvalue()


def build(directory, profile: dict) -> None:
    (directory / "profiles.yml").write_text(json.dumps({"sessionize": {
        "target": "test", "outputs": {"test": profile}}}))
    done = subprocess.run([DBT, "build", "--project-dir", str(directory), "--profiles-dir",
                           str(directory), "--no-use-colors"], capture_output=True, text=True,
                          env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def inputs(path, tmp_path):
    case = json.loads(path.read_text())
    source = tmp_path / "events.json"
    source.write_text(json.dumps(case["events"]))
    return str(source), case.get("options", {})


#: Cases where two sessions of one user start at the same instant (a start event at the
#: time of the event before it): their session_key is the same, because the key hashes
#: the user and the first event's time only. dbt's unique test finds it; the key needs
#: the first event's tie order too (a change of every key: left for its own issue).
SAME_INSTANT_STARTS = {"rule_start_and_end_events"}


def _marked(paths):
    return [pytest.param(p, id=p.stem, marks=pytest.mark.xfail(
        strict=True, reason="session_key repeats when two sessions start at one instant"))
        if p.stem in SAME_INSTANT_STARTS else pytest.param(p, id=p.stem) for p in paths]


@pytest.mark.parametrize("path", _marked(SOME))
def test_dbt_build_on_duckdb_equals_run(path, tmp_path):
    source, options = inputs(path, tmp_path)
    if options.get("identity") == "graph":
        pytest.skip("identity='graph' is refused for standalone SQL (test_warehouse.py)")
    con, schema = duckdb_source(source)
    database = tmp_path / "warehouse.duckdb"
    con.execute(f"ATTACH '{database}' AS wh")
    con.execute("CREATE SCHEMA wh.raw")
    con.execute("CREATE TABLE wh.raw.tracks AS SELECT * FROM src ORDER BY input_order")
    con.close()
    project = tmp_path / "project"
    write_package(project, schema, options, "duckdb")
    build(project, {"type": "duckdb", "path": str(database), "schema": "analytics",
                    "threads": 1, "settings": {"TimeZone": "UTC"}})
    want = run_tables(source, **options)
    built = duckdb.connect(str(database), read_only=True)
    built.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        rel = built.sql(f"SELECT * FROM analytics.sessionize_{table}")
        got = rows(rel.columns, rel.fetchall())
        key = (lambda r: (r["resolved_user"], r.get("session_id") or 0)) \
            if table != "events" else None
        assert (sorted(got, key=key) if key else got) == \
            (sorted(want[table], key=key) if key else want[table]), table


def test_dbt_build_on_postgres_equals_run(tmp_path, postgres_dsn):  # noqa: F811
    con, schema = duckdb_source(sessionize.sample_path())
    with psycopg.connect(postgres_dsn) as pg:
        pg.execute("CREATE SCHEMA raw")
        copy_from_duckdb(con, "src", pg, "raw.tracks")
    project = tmp_path / "project"
    options = {"gap": "1d", "enrich": True}
    write_package(project, schema, options, "postgres")
    info = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    build(project, {"type": "postgres", "host": info["host"], "port": int(info["port"]),
                    "user": info["user"], "password": "", "dbname": info["dbname"],
                    "schema": "analytics", "threads": 1})
    want = run_tables(sessionize.sample_path(), **options)
    with psycopg.connect(postgres_dsn) as pg:
        for table in TABLES:
            cur = pg.execute(f"SELECT * FROM analytics.sessionize_{table} "
                             f"{'' if table == 'events' else 'ORDER BY 1, 2'}")
            got = rows([d.name for d in cur.description], cur.fetchall())
            assert got == want[table], table


def test_schema_tests_fail_on_a_broken_model(tmp_path):
    """The package's schema tests can fail: a duplicated session breaks `unique`."""
    con, schema = duckdb_source(sessionize.sample_path())
    database = tmp_path / "warehouse.duckdb"
    con.execute(f"ATTACH '{database}' AS wh")
    con.execute("CREATE SCHEMA wh.raw")
    con.execute("CREATE TABLE wh.raw.tracks AS SELECT * FROM src")
    con.close()
    project = tmp_path / "project"
    write_package(project, schema, {}, "duckdb")
    model = project / "models" / "sessionize_sessions.sql"
    model.write_text("SELECT 'u' AS resolved_user, 1 AS session_id, 'k' AS session_key, "
                     "'first_event' AS start_reason, 1 AS event_count, "
                     "TIMESTAMPTZ '2024-01-01' AS session_start, "
                     "TIMESTAMPTZ '2024-01-01' AS session_end "
                     "UNION ALL SELECT 'u', 2, 'k', 'first_event', 1, TIMESTAMPTZ '2024-01-01', "
                     "TIMESTAMPTZ '2024-01-01'\n")
    with pytest.raises(AssertionError, match="unique_sessionize_sessions_session_key"):
        build(project, {"type": "duckdb", "path": str(database), "schema": "analytics",
                        "threads": 1})
