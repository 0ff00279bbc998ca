"""The standalone query (``sessionize.to_sql``) against hand-written window SQL, in the
same database, in the same run: DuckDB (10M events) and PostgreSQL (1M events, on a
throw-away cluster started as tests/postgres_cluster.py starts one).

Both sides read the same table and materialise their result (``CREATE TEMP TABLE ... AS``):
the events table (every event with its session, in time order, as ``sessionize run``
returns it) and the sessions table. The hand-written SQL is the idiom: ``LAG`` for the
previous time and a running ``SUM`` of the session starts, then ``GROUP BY``. The
standalone query also validates each row (a bad time or no user is left out), breaks ties
by input order and computes ``session_key`` and ``start_reason``, which the idiom does not.

The table carries ``input_order`` (the row's position in the Parquet file: a warehouse's
load sequence) and the query is told so (``order_by``); ``--no-order-column`` measures the
default instead, an MD5 of each row's content as the last tie-breaker.

    python bench/generate.py --events 10000000 --seed 42 --format parquet
    python bench/generate.py --events 1000000 --seed 42 --format parquet
    python bench/warehouse.py                      # both, the default sizes
    python bench/warehouse.py --duckdb-events 1000000 --skip-postgres --repeats 3

Tools run interleaved (bench/run.py's ``repeat_order``); medians and the ratio of medians
are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # postgres_cluster: the throw-away cluster

from run import repeat_order  # noqa: E402

import sessionize  # noqa: E402
from sessionize.sql.standalone import standalone_sql  # noqa: E402

DATA_DIR = HERE / "data"  # where bench/generate.py caches its files
COLUMNS = ("messageId", "type", "event", "userId", "anonymousId", "timestamp")

#: The idiom, in SQL both DuckDB and PostgreSQL run: resolve the user, LAG, a running SUM.
HAND_EVENTS = """
SELECT *, SUM(CASE WHEN new_session THEN 1 ELSE 0 END) OVER (
        PARTITION BY resolved_user ORDER BY "timestamp", "messageId"
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_id
FROM (
    SELECT *, "timestamp" - prev_timestamp AS time_since_last_event,
        prev_timestamp IS NULL OR "timestamp" - prev_timestamp > INTERVAL '30 minutes'
            AS new_session
    FROM (
        SELECT *, LAG("timestamp") OVER (
                PARTITION BY resolved_user ORDER BY "timestamp", "messageId") AS prev_timestamp
        FROM (SELECT *, COALESCE("userId", "anonymousId") AS resolved_user FROM tracks) AS r
    ) AS g
) AS f
"""
HAND_EVENTS_ORDERED = HAND_EVENTS + 'ORDER BY "timestamp", resolved_user, "messageId"\n'
#: first/last event name: DuckDB's ordered first/last, PostgreSQL's ordered array_agg.
_FIRST_LAST = {
    "duckdb": ('first(coalesce("event", "type") ORDER BY "timestamp", "messageId")',
               'last(coalesce("event", "type") ORDER BY "timestamp", "messageId")'),
    "postgres": ('(array_agg(coalesce("event", "type") ORDER BY "timestamp", "messageId"))[1]',
                 '(array_agg(coalesce("event", "type") ORDER BY "timestamp" DESC, '
                 '"messageId" DESC))[1]'),
}


def hand_sessions(dialect: str) -> str:
    first, last = _FIRST_LAST[dialect]
    return f"""
SELECT resolved_user, session_id, min("timestamp") AS session_start,
    max("timestamp") AS session_end,
    EXTRACT(EPOCH FROM max("timestamp") - min("timestamp")) AS duration_seconds,
    count(*) AS event_count, {first} AS first_event, {last} AS last_event
FROM ({HAND_EVENTS}) AS e
GROUP BY resolved_user, session_id
ORDER BY resolved_user, session_id
"""


def queries(dialect: str, order_column: bool) -> dict[str, str]:
    schema = {c: "VARCHAR" for c in COLUMNS} | {"timestamp": "TIMESTAMPTZ"}
    order_by = "input_order" if order_column else None
    return {
        "events: to_sql": standalone_sql(sessionize.Rules(), dialect=dialect, source="tracks",
                                         table="events", schema=schema, order_by=order_by),
        "events: hand-written": HAND_EVENTS_ORDERED,
        "sessions: to_sql": standalone_sql(sessionize.Rules(), dialect=dialect,
                                           source="tracks", table="sessions", schema=schema,
                                           order_by=order_by),
        "sessions: hand-written": hand_sessions(dialect),
    }


def parquet_of(events: int) -> Path:
    path = DATA_DIR / f"events-v1-n{events}-s42.parquet"
    if not path.exists():
        raise SystemExit(f"{path} is missing: python bench/generate.py --events {events} "
                         f"--seed 42 --format parquet --out {DATA_DIR}")
    return path


def measure(run_one, names: list[str], repeats: int, warmup: bool = True
            ) -> dict[str, list[float]]:
    """Each query ``repeats`` times, interleaved, after one warm-up run of each."""
    for name in names if warmup else ():
        run_one(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in repeat_order(names, r):
            start = time.perf_counter()
            run_one(name)
            times[name].append(time.perf_counter() - start)
    return times


def on_duckdb(events: int, repeats: int, order_column: bool, warmup: bool = True
              ) -> dict[str, list[float]]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    con.execute(f"CREATE TABLE tracks AS SELECT {columns}, "
                f"CAST(row_number() OVER () AS BIGINT) AS input_order "
                f"FROM read_parquet('{parquet_of(events)}')")
    sql = queries("duckdb", order_column)

    def run_one(name: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE out AS {sql[name]}")

    times = measure(run_one, list(sql), repeats, warmup)
    con.close()
    return times


def on_postgres(events: int, repeats: int, order_column: bool,
                explain: bool = False) -> dict[str, list[float]]:
    import duckdb
    import psycopg
    from postgres_cluster import copy_from_duckdb, dsn

    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    duck.execute(f"CREATE TABLE tracks AS SELECT {columns}, "
                 f"CAST(row_number() OVER () AS BIGINT) AS input_order "
                 f"FROM read_parquet('{parquet_of(events)}') ORDER BY input_order")
    sql = queries("postgres", order_column)
    with psycopg.connect(dsn(), autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS tracks")
        copy_from_duckdb(duck, "tracks", pg, "tracks")
        pg.execute("ANALYZE tracks")

        def run_one(name: str) -> None:
            pg.execute("DROP TABLE IF EXISTS out")
            pg.execute(f"CREATE TEMP TABLE out AS {sql[name]}")

        times = measure(run_one, list(sql), repeats)
        if explain:
            for name in ("events: to_sql", "events: hand-written"):
                plan = pg.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql[name]}").fetchall()
                print(f"\n-- EXPLAIN ANALYZE {name}", file=sys.stderr)
                print("\n".join(row[0] for row in plan), file=sys.stderr)
    return times


def table(title: str, times: dict[str, list[float]]) -> str:
    lines = [f"\n{title}\n", "| query | median s | runs (s) | ratio to hand-written |",
             "|---|---|---|---|"]
    for name, runs in times.items():
        table_name, tool = name.split(": ")
        ratio = ""
        if tool == "to_sql":
            hand = statistics.median(times[f"{table_name}: hand-written"])
            ratio = f"{statistics.median(runs) / hand:.2f}x"
        lines.append(f"| {name} | {statistics.median(runs):.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in runs)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duckdb-events", type=int, default=10_000_000)
    parser.add_argument("--postgres-events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data",
                        help="where bench/generate.py left events-v1-n<N>-s42.parquet")
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--no-order-column", action="store_true",
                        help="no input_order column: the MD5 of each row breaks last ties")
    parser.add_argument("--no-warmup", action="store_true",
                        help="DuckDB: no warm-up run before the timed repeats")
    parser.add_argument("--explain", action="store_true",
                        help="print PostgreSQL's EXPLAIN ANALYZE of both events queries")
    args = parser.parse_args(argv)
    global DATA_DIR
    DATA_DIR = args.data_dir
    order = not args.no_order_column
    note = "order_by='input_order'" if order else "no order column (MD5 of each row)"
    if not args.skip_duckdb:
        times = on_duckdb(args.duckdb_events, args.repeats, order, not args.no_warmup)
        print(table(f"DuckDB {duckdb_version()}, {args.duckdb_events:,} events, {note}, "
                    f"{args.repeats} interleaved repeats", times), flush=True)
    if not args.skip_postgres:
        times = on_postgres(args.postgres_events, args.repeats, order, args.explain)
        print(table(f"PostgreSQL 15, {args.postgres_events:,} events, {note}, "
                    f"{args.repeats} interleaved repeats", times), flush=True)
    return 0


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


if __name__ == "__main__":
    sys.exit(main())
