"""Data-quality checks for the report: what in the input could bend the sessions.

Quarantined rows, duplicate messageIds, events that arrived out of time order,
device clock skew (where Segment's ``sentAt`` / ``receivedAt`` exist), exact
timestamp ties and very long sessions. Checks that need a per-user window or a
distinct count run on a deterministic sample of users when the input is large
(``SAMPLE_EVENTS``), so the report stays cheap next to the run; the report says
when a figure is estimated from a sample.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SAMPLE_EVENTS", "quality", "sample_modulus"]

SAMPLE_EVENTS = 2_000_000
LONG_SESSION_SECONDS = 4 * 3600


def sample_modulus(events: int) -> int:
    """The quality sample keeps the users with ``hash(user) % modulus = 0``."""
    return max(1, math.ceil(events / SAMPLE_EVENTS))


def quality(con: Any, *, events: int, input_columns: list[str], row_column: str,
            sample: str | None = None) -> dict:
    """Every data-quality figure, as plain data (the page renders it). ``sample`` names
    a table of the sampled users' gap rows already drawn, with each row's previous
    event's ``prev_row``; by default they are drawn from ``sz_th_gaps``."""
    modulus = sample_modulus(events)
    given = sample is not None
    if sample is None:
        sample = "sz_th_gaps" if modulus == 1 else (
            f"(SELECT * FROM sz_th_gaps WHERE hash(u) % {modulus} = 0)")
    out: dict[str, Any] = {"sampled": modulus > 1, "sample_modulus": modulus}
    out["quarantine"] = con.execute(
        "SELECT quarantine_reason, count(*) FROM sz_quarantine GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    (out["sample_events"], out["duplicate_ids"], out["duplicate_rows"],
     examples) = con.execute(f"""
        WITH dups AS MATERIALIZED (
            SELECT msg, count(*) AS c FROM {sample} WHERE msg IS NOT NULL
            GROUP BY msg HAVING count(*) > 1)
        SELECT (SELECT count(*) FROM {sample}), (SELECT count(*) FROM dups),
               (SELECT coalesce(sum(c - 1), 0) FROM dups),
               (SELECT list(msg ORDER BY c DESC, msg) FROM (
                    SELECT msg, c FROM dups ORDER BY c DESC, msg LIMIT 3))""").fetchall()[0]
    out["duplicate_examples"] = list(examples or [])
    # Out of order: a user's event that comes earlier in the input than the event just
    # before it in time (late delivery, batched mobile uploads, merged files).
    pairs = sample if given else (
        f"(SELECT row, lag(row) OVER (PARTITION BY u ORDER BY seq) AS prev_row FROM {sample})")
    out["out_of_order"], out["pairs"] = con.execute(
        f"SELECT count(*) FILTER (row < prev_row), count(prev_row) FROM {pairs}").fetchall()[0]
    out["ties"] = con.execute(
        f"SELECT count(*) FILTER (gap = 0), count(gap) FROM {sample}").fetchall()[0]
    out["skew"] = _clock_skew(con, input_columns, row_column, modulus)
    long = con.execute(f"""
        SELECT count(*) FILTER (duration_seconds > {LONG_SESSION_SECONDS}),
               count(*) FILTER (duration_seconds > 86400), count(*),
               max(duration_seconds)
        FROM sz_sessions""").fetchall()[0]
    out["long_sessions"] = {"over_4h": long[0], "over_1d": long[1], "sessions": long[2],
                            "longest_seconds": long[3]}
    return out


def _clock_skew(con: Any, columns: list[str], row_column: str, modulus: int) -> dict | None:
    """receivedAt - sentAt (device clock error plus network time) and delivery delay."""
    if "sentAt" not in columns or "receivedAt" not in columns:
        return None
    ts = "timestamp" if "timestamp" in columns else None

    def parsed(name: str) -> str:
        return f"TRY_CAST(CAST(\"{name}\" AS VARCHAR) AS TIMESTAMPTZ)"

    where = "" if modulus == 1 else f"WHERE {row_column} % {modulus} = 0"
    delay = (f"epoch_us({parsed('receivedAt')}) - epoch_us({parsed(ts)})" if ts else "NULL")
    row = con.execute(f"""
        SELECT count(skew), median(skew) / 1e6,
               count(*) FILTER (abs(skew) > 60e6), count(*) FILTER (skew < -1e6),
               count(*) FILTER (abs(skew) > 3600e6), count(*) FILTER (delay > 3600e6),
               count(delay)
        FROM (SELECT epoch_us({parsed('receivedAt')}) - epoch_us({parsed('sentAt')}) AS skew,
                     {delay} AS delay FROM sz_input {where})""").fetchall()[0]
    return {"events": row[0], "median_seconds": row[1], "over_1m": row[2], "negative": row[3],
            "over_1h": row[4], "late_over_1h": row[5], "with_delay": row[6]}
