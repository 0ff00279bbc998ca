"""The numbers behind the report, read from a finished run's engine tables.

Everything here is plain data (numbers, short lists); :mod:`.page` turns it into
HTML. User ids leave this module only when ``show_user_ids`` is set; otherwise users
are labelled ``user 1``, ``user 2``, ... in the order they are shown.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..analysis.thresholds import ThresholdAnalysis, _input_schema, input_row_sql
from ..columnar.gaps import sample_table
from ..result import Result
from .quality import quality, sample_modulus

__all__ = ["collect"]

PER_USER_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"),
                    (11, 20, "11-20"), (21, None, "21+"))
DURATION_BUCKETS = ((0, 0, "0s"), (0, 10, "<10s"), (10, 60, "10s-1m"), (60, 300, "1-5m"),
                    (300, 900, "5-15m"), (900, 1800, "15-30m"), (1800, 3600, "30-60m"),
                    (3600, 4 * 3600, "1-4h"), (4 * 3600, None, ">4h"))
EXAMPLE_USERS = 4
EXAMPLE_EVENTS = 40  # events per example user, at most


def collect(result: Result, analysis: ThresholdAnalysis, *, show_user_ids: bool) -> dict:
    """All report data; on the SQL plan it needs the analysis' ``sz_th_gaps`` table."""

    engine = result.engine
    con = engine.con
    stats = result.stats()
    data: dict[str, Any] = {"stats": stats, "source": result.source,
                            "gap_seconds": result.rules.gap_us / 1e6}
    data["headline"] = _headline(con)
    data["per_user"] = _per_user(con)
    data["durations"] = _durations(con)
    data["platforms"] = _platforms(analysis)
    data["top_events"] = con.execute(
        f"SELECT __sz_name, count(*) FROM {engine.event_names()} GROUP BY 1 "
        "ORDER BY 2 DESC, 1 LIMIT 12").fetchall()
    data["timelines"] = _timelines(engine, show_user_ids)
    data["quality"] = quality(con, events=stats["events"],
                              input_columns=list(_input_schema(result)),
                              row_column=input_row_sql(result),
                              sample=_sample(engine, analysis, stats["events"]))
    return data


def _sample(engine: Any, analysis: ThresholdAnalysis, events: int) -> str | None:
    """On the columnar plan, the quality checks' sample built from the gap arrays (the
    same users the SQL samples); None: they sample ``sz_th_gaps`` themselves."""

    if analysis._gaps is None:
        return None
    engine.con.register("sz_th_sample", sample_table(
        engine.con, engine.columnar, analysis._gaps, sample_modulus(events)))
    return "sz_th_sample"


def _headline(con: Any) -> dict:
    row = con.execute("""
        SELECT median(duration_seconds), median(event_count), avg((event_count = 1)::INT),
               min(session_start), max(session_end)
        FROM sz_sessions""").fetchall()[0]
    return {"median_duration": row[0], "median_events": row[1], "one_event_share": row[2],
            "first": row[3], "last": row[4]}


def _per_user(con: Any) -> list[tuple[str, int]]:
    cases = " ".join(
        f"WHEN session_count BETWEEN {lo} AND {hi} THEN '{label}'" if hi is not None
        else f"WHEN session_count >= {lo} THEN '{label}'" for lo, hi, label in PER_USER_BUCKETS)
    counts = dict(con.execute(
        f"SELECT CASE {cases} END, count(*) FROM sz_users GROUP BY 1").fetchall())
    return [(label, counts.get(label, 0)) for _, _, label in PER_USER_BUCKETS]


def _durations(con: Any) -> list[tuple[str, int]]:
    cases = []
    for lo, hi, label in DURATION_BUCKETS:
        if hi == 0:
            cases.append(f"WHEN duration_seconds = 0 THEN '{label}'")
        elif hi is None:
            cases.append(f"WHEN duration_seconds > {lo} THEN '{label}'")
        else:
            cases.append(f"WHEN duration_seconds <= {hi} THEN '{label}'")
    counts = dict(con.execute(
        f"SELECT CASE {' '.join(cases)} END, count(*) FROM sz_sessions GROUP BY 1").fetchall())
    return [(label, counts.get(label, 0)) for _, _, label in DURATION_BUCKETS]


def _platforms(analysis: ThresholdAnalysis) -> list[dict]:
    """Per platform at the threshold in use: from the exact curve, plus event counts."""
    events = analysis.events
    rows = []
    for name in ["all", *analysis.platforms]:
        at = [r for r in analysis.curve if r["platform"] == name
              and r["threshold_seconds"] == analysis.gap_seconds]
        point = at[0] if at else {}
        n_events = events.get(name, 0)
        sessions = point.get("sessions") or 0
        rows.append({
            "platform": name, "users": analysis.users.get(name, 0), "events": n_events,
            "sessions": sessions, "events_per_session": n_events / sessions if sessions else None,
            "median_duration": point.get("median_duration_seconds"),
            "one_event_share": point.get("one_event_share"),
            "recommendation": analysis.recommendations[name],
        })
    return rows


def _timelines(engine: Any, show_user_ids: bool) -> list[dict]:
    """A few users like the notebook's "View User Timelines": several sessions, few events."""
    con = engine.con
    picked = [u for (u,) in con.execute(f"""
        SELECT resolved_user FROM sz_users
        ORDER BY (session_count BETWEEN 2 AND 6 AND event_count <= {EXAMPLE_EVENTS}) DESC,
                 (session_count >= 2) DESC, hash(resolved_user), resolved_user
        LIMIT {EXAMPLE_USERS}""").fetchall()]
    if not picked:
        return []
    rows = con.execute(f"""
        SELECT __sz_user, __sz_ts_us, __sz_ts, __sz_name, __sz_session, __sz_reason
        FROM {engine.assign_of_users(picked, EXAMPLE_EVENTS)}
        WHERE __sz_user IN (SELECT unnest($1))
        AND __sz_seq <= {EXAMPLE_EVENTS}
        ORDER BY __sz_user, __sz_seq""", [picked]).fetchall()
    timelines = []
    for i, user in enumerate(picked, start=1):
        events = [r for r in rows if r[0] == user]
        sessions: dict[int, list] = {}
        for _, ts_us, _, _, session, reason in events:
            span = sessions.setdefault(session, [ts_us, ts_us, reason])
            span[1] = ts_us
        timelines.append({
            "label": user if show_user_ids else f"user {i}",
            "events": [r[1] for r in events],
            "sessions": [tuple(s) for s in sessions.values()],
            "rows": [(session, name, _time(ts), reason) for _, _, ts, name, session, reason
                     in events],
            "first_label": _time(events[0][2]), "last_label": _time(events[-1][2]),
        })
    return timelines


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
