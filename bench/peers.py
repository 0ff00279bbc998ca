"""The tools sessionize is measured against, each written the way its users would write it.

A benchmark against strawmen proves nothing, so each peer is the plain idiom of its
library: the starting notebook's pandas code verbatim, polars window expressions, DuckDB
SQL windows. Each takes a file path and returns (events, sessions, users) fully
materialised in its native form, so every tool pays for reading, computing and building
all three tables, and nothing is left lazy.

Heavy libraries are imported inside the functions: the runner imports them before it
starts the clock (``MODULES``), and a process that runs one tool never loads the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

THRESHOLD_MINUTES = 30


def notebook_pandas(path):
    """The starting notebook, line for line, plus plain groupby for the two summaries."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        with open(path) as f:
            events = json.load(f) if path.suffix == ".json" else [json.loads(line) for line in f]
        df = pd.json_normalize(events)

    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df = df.sort_values("timestamp")
    df["resolved_user"] = df["userId"].fillna(df["anonymousId"])
    df["prev_timestamp"] = df.groupby("resolved_user")["timestamp"].shift(1)
    df["time_since_last_event"] = df["timestamp"] - df["prev_timestamp"]
    session_threshold = pd.Timedelta(minutes=THRESHOLD_MINUTES)
    df["new_session"] = df["time_since_last_event"].isna() | (
        df["time_since_last_event"] > session_threshold
    )
    df["session_id"] = df.groupby("resolved_user")["new_session"].cumsum()

    df["event_label"] = df["event"].fillna(df["type"])  # page/screen/identify have no name
    sessions = (
        df.groupby(["resolved_user", "session_id"])
        .agg(
            session_start=("timestamp", "min"),
            session_end=("timestamp", "max"),
            event_count=("timestamp", "size"),
            first_event=("event_label", "first"),
            last_event=("event_label", "last"),
        )
        .reset_index()
    )
    sessions["duration_seconds"] = (
        sessions["session_end"] - sessions["session_start"]
    ).dt.total_seconds()
    users = (
        sessions.groupby("resolved_user")
        .agg(
            session_count=("session_id", "size"),
            event_count=("event_count", "sum"),
            first_seen=("session_start", "min"),
            last_seen=("session_end", "max"),
        )
        .reset_index()
    )
    return df, sessions, users


def idiomatic_polars(path):
    """Eager polars: window expressions with ``.over`` and ``group_by`` summaries."""
    import polars as pl

    path = Path(path)
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
    elif path.suffix == ".json":
        df = pl.read_json(path)
    else:
        df = pl.read_ndjson(path)
    if df.schema["timestamp"] == pl.String:
        df = df.with_columns(pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC"))

    gap = pl.col("time_since_last_event")
    events = (
        df.sort("timestamp", "messageId")
        .with_columns(resolved_user=pl.coalesce("userId", "anonymousId"))
        .with_columns(prev_timestamp=pl.col("timestamp").shift(1).over("resolved_user"))
        .with_columns(time_since_last_event=pl.col("timestamp") - pl.col("prev_timestamp"))
        .with_columns(new_session=gap.is_null() | (gap > pl.duration(minutes=THRESHOLD_MINUTES)))
        .with_columns(session_id=pl.col("new_session").cum_sum().over("resolved_user"))
    )
    event_label = pl.coalesce("event", "type")
    sessions = (
        events.group_by("resolved_user", "session_id")
        .agg(
            session_start=pl.col("timestamp").min(),
            session_end=pl.col("timestamp").max(),
            event_count=pl.len(),
            first_event=event_label.first(),  # group_by keeps row order: events are sorted
            last_event=event_label.last(),
        )
        .with_columns(
            duration_seconds=(pl.col("session_end") - pl.col("session_start")).dt.total_seconds(
                fractional=True
            )
        )
    )
    users = sessions.group_by("resolved_user").agg(
        session_count=pl.len(),
        event_count=pl.col("event_count").sum(),
        first_seen=pl.col("session_start").min(),
        last_seen=pl.col("session_end").max(),
    )
    return events, sessions, users


DUCKDB_EVENTS = """
CREATE TEMP TABLE events AS
WITH resolved AS (
    SELECT *, coalesce(userId, anonymousId::VARCHAR) AS resolved_user FROM {source}
), gaps AS (
    SELECT *,
        lag("timestamp") OVER (PARTITION BY resolved_user ORDER BY "timestamp", messageId)
            AS prev_timestamp
    FROM resolved
), flagged AS (
    SELECT *,
        "timestamp" - prev_timestamp AS time_since_last_event,
        prev_timestamp IS NULL
            OR "timestamp" - prev_timestamp > INTERVAL {minutes} MINUTE AS new_session
    FROM gaps
)
SELECT *,
    count(*) FILTER (WHERE new_session) OVER (
        PARTITION BY resolved_user ORDER BY "timestamp", messageId
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS session_id
FROM flagged
"""

DUCKDB_SESSIONS = """
CREATE TEMP TABLE sessions AS
SELECT
    resolved_user,
    session_id,
    min("timestamp") AS session_start,
    max("timestamp") AS session_end,
    epoch(max("timestamp") - min("timestamp")) AS duration_seconds,
    count(*) AS event_count,
    first(coalesce(event, "type") ORDER BY "timestamp", messageId) AS first_event,
    last(coalesce(event, "type") ORDER BY "timestamp", messageId) AS last_event
FROM events
GROUP BY resolved_user, session_id
"""

DUCKDB_USERS = """
SELECT
    resolved_user,
    count(*) AS session_count,
    sum(event_count)::BIGINT AS event_count,
    min(session_start) AS first_seen,
    max(session_end) AS last_seen
FROM sessions
GROUP BY resolved_user
"""


def idiomatic_duckdb(path):
    """Plain DuckDB SQL: LAG and a running SUM over per-user windows, then GROUP BY."""
    import duckdb

    path = Path(path)
    quoted = "'" + str(path).replace("'", "''") + "'"
    if path.suffix == ".parquet":
        source = f"read_parquet({quoted})"
    elif path.suffix == ".json":
        source = f"read_json({quoted}, format = 'array')"
    else:
        source = f"read_json({quoted}, format = 'newline_delimited')"

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(DUCKDB_EVENTS.format(source=source, minutes=THRESHOLD_MINUTES))
    con.execute(DUCKDB_SESSIONS)
    events = con.table("events").to_arrow_table()
    sessions = con.table("sessions").to_arrow_table()
    users = con.sql(DUCKDB_USERS).to_arrow_table()
    con.close()
    return events, sessions, users


def sessionize_run(path, plan="auto", events_order="time"):
    """The library under test, through its public front door (plan "auto": the columnar
    plan for these rules)."""
    import sessionize

    result = sessionize.run(path, plan=plan, events_order=events_order)
    return result.events.to_arrow(), result.sessions.to_arrow(), result.users.to_arrow()


def sessionize_sql(path):
    """sessionize with its SQL plan forced (what runs under memory_limit or in a file)."""
    return sessionize_run(path, plan="sql")


def sessionize_unordered(path):
    """sessionize with ``events_order="none"``: the same tables, the events in the input's
    order instead of time order (like the DuckDB peer's, which no ORDER BY sorts)."""
    return sessionize_run(path, events_order="none")


def sessionize_out_of_core(path, events_order="time"):
    """Larger than memory: the SQL plan under ``memory_limit`` (env ``BENCH_MEMORY_LIMIT``,
    default 4GB), spilling to ``bench/data/spill``, every table written to Parquet files as
    the CLI does (``sessionize run --memory-limit ... --out``) rather than held in memory."""
    import tempfile

    import sessionize

    here = os.path.dirname(os.path.abspath(__file__))
    spill = os.path.join(here, "data", "spill")
    os.makedirs(spill, exist_ok=True)
    result = sessionize.run(path, memory_limit=os.environ.get("BENCH_MEMORY_LIMIT", "4GB"),
                            temp_directory=spill, events_order=events_order)
    with tempfile.TemporaryDirectory(dir=spill) as out:
        result.write(out)
    return result.events, result.sessions, result.users


def sessionize_out_of_core_unordered(path):
    """``sessionize_out_of_core`` with ``events_order="none"``: the events written without
    the global time sort (``--events-order none``)."""
    return sessionize_out_of_core(path, events_order="none")


PEERS = {
    "sessionize": sessionize_run,
    "sessionize_sql": sessionize_sql,
    "sessionize_unordered": sessionize_unordered,
    "sessionize_out_of_core": sessionize_out_of_core,
    "sessionize_out_of_core_unordered": sessionize_out_of_core_unordered,
    "notebook_pandas": notebook_pandas,
    "idiomatic_polars": idiomatic_polars,
    "idiomatic_duckdb": idiomatic_duckdb,
}

# Imported before the clock starts; their import time is reported separately. Every
# module a tool's run imports is listed, as pandas brings numpy for the notebook:
# sessionize imports its columnar kernel (numpy, pyarrow.compute) on first use.
_SESSIONIZE = ("sessionize", "sessionize.columnar.kernel")
MODULES = {
    "sessionize": _SESSIONIZE,
    "sessionize_sql": _SESSIONIZE,
    "sessionize_unordered": _SESSIONIZE,
    "sessionize_out_of_core": _SESSIONIZE,
    "sessionize_out_of_core_unordered": _SESSIONIZE,
    "notebook_pandas": ("pandas", "pyarrow"),  # pd.read_parquet reads through pyarrow
    "idiomatic_polars": ("polars",),
    "idiomatic_duckdb": ("duckdb", "pyarrow"),
}
