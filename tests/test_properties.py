"""Property-based tests: the DuckDB engine against the reference implementation.

Streams are generated to hit the edges: gaps of exactly the threshold and one
microsecond either side, timestamp ties, missing messageIds, null and blank ids,
many users, and shuffled rows.
"""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import Event, Options
from reference import sessionize as reference

import sessionize
from sessionize.columnar.kernel import unsupported_rule
from sessionize.rules import Rules

BASE_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
GAPS_US = [1, 1_000_000, 60_000_000, 1_800_000_000]
USERS = ["u1", "u2", "u3", "user|4", "ü5", "", " ", "  ", " u6", "\t", "\u3000", "\xa0u7"]


@st.composite
def streams(draw, *, unique_ids: bool = False, min_size: int = 0):
    gap = draw(st.sampled_from(GAPS_US))
    n = draw(st.integers(min_value=min_size, max_value=40))
    events = []
    for row in range(n):
        # offsets are multiples of the gap, nudged by -1/0/+1 us, or arbitrary
        offset = draw(st.one_of(
            st.builds(lambda k, d: k * gap + d, st.integers(0, 6), st.sampled_from([-1, 0, 1])),
            st.integers(0, 6 * gap),
        ))
        user = draw(st.sampled_from(USERS + [None, None]))
        anon = draw(st.sampled_from(["a1", "a2", "", None]))
        if unique_ids:
            message_id = f"m{row:03d}"
        else:
            message_id = draw(st.sampled_from([f"m{row:03d}", f"m{row % 3}", None]))
        name = draw(st.sampled_from(["Page Viewed", "Clicked", None]))
        events.append(Event(row, BASE_US + max(offset, 0), user, anon, message_id, name))
    return gap, events


def to_table(events: list[Event]) -> pa.Table:
    return pa.table({
        "row": pa.array([e.row for e in events], pa.int64()),
        "userId": pa.array([e.user_id for e in events], pa.string()),
        "anonymousId": pa.array([e.anonymous_id for e in events], pa.string()),
        "messageId": pa.array([e.message_id for e in events], pa.string()),
        "event": pa.array([e.name for e in events], pa.string()),
        "timestamp": pa.array([e.ts_us for e in events], pa.timestamp("us", tz="UTC")),
    })


def run_both_plans(table: pa.Table, **options) -> dict[str, pa.Table]:
    """The SQL plan's tables, after checking the columnar plan (when it runs the rules)
    gives identical ones: same schema, same rows in the same order."""
    outputs = {}
    for plan in ("sql", "columnar"):
        if plan == "columnar" and unsupported_rule(Rules.from_options(**{
                k: v for k, v in options.items() if k not in ("on_invalid",)})):
            break
        with sessionize.run(table, plan=plan, **options) as result:
            assert result.plan == plan
            outputs[plan] = {name: getattr(result, name).to_arrow()
                             for name in ("events", "sessions", "users", "quarantine")}
    if "columnar" in outputs:
        for name, want in outputs["sql"].items():
            got = outputs["columnar"][name]
            assert got.schema == want.schema, name
            assert got.to_pylist() == want.to_pylist(), name
    return outputs["sql"]


def engine_output(gap: int, table: pa.Table) -> dict[str, list[dict]]:
    tables = run_both_plans(table, gap=f"{gap}us", on_invalid="quarantine")
    out = {name: tables[name].to_pylist() for name in ("events", "sessions", "users")}
    return {**out, "quarantined": tables["quarantine"].num_rows}


def us(value) -> int | None:
    if value is None:
        return None
    if hasattr(value, "tzinfo"):
        return round(value.timestamp() * 1_000_000) if value.microsecond == 0 else (
            int(value.replace(microsecond=0).timestamp()) * 1_000_000 + value.microsecond)
    return value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds


def examples(n: int):
    """``n`` examples under the "ci" profile (1,000 max_examples), in proportion under
    the others ("dev", the default: a twentieth), at least 10."""
    return settings(max_examples=max(10, n * settings().max_examples // 1000))


@examples(1000)
@given(streams())
def test_engine_matches_reference(case):
    gap, events = case
    got = engine_output(gap, to_table(events))
    want = reference(events, gap)
    assert got["quarantined"] == len(events) - len(want["events"])
    got_events = sorted(
        ({"row": e["row"], "resolved_user": e["resolved_user"],
          "prev_us": us(e["prev_timestamp"]), "gap_us": us(e["time_since_last_event"]),
          "new_session": e["new_session"], "session_id": e["session_id"],
          "session_key": e["session_key"], "start_reason": e["start_reason"]}
         for e in got["events"]), key=lambda e: e["row"])
    assert got_events == sorted(want["events"], key=lambda e: e["row"])
    got_sessions = [
        {"resolved_user": s["resolved_user"], "session_id": s["session_id"],
         "session_key": s["session_key"], "start_us": us(s["session_start"]),
         "end_us": us(s["session_end"]), "event_count": s["event_count"],
         "start_reason": s["start_reason"], "first_event": s["first_event"],
         "last_event": s["last_event"], "duration_seconds": s["duration_seconds"]}
        for s in got["sessions"]]
    assert got_sessions == want["sessions"]
    got_users = [
        {"resolved_user": u["resolved_user"], "session_count": u["session_count"],
         "event_count": u["event_count"], "first_seen_us": us(u["first_seen"]),
         "last_seen_us": us(u["last_seen"])}
        for u in got["users"]]
    assert got_users == want["users"]


@examples(300)
@given(streams(unique_ids=True, min_size=1), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(case, rnd: random.Random):
    gap, events = case
    shuffled = events[:]
    rnd.shuffle(shuffled)
    first = engine_output(gap, to_table(events))
    second = engine_output(gap, to_table(shuffled))
    assert first["sessions"] == second["sessions"]
    assert first["users"] == second["users"]
    by_row = lambda rows: sorted(rows, key=lambda e: e["row"])  # noqa: E731
    assert by_row(first["events"]) == by_row(second["events"])


@examples(300)
@given(streams(unique_ids=True, min_size=1))
def test_session_count_is_one_plus_gaps_over_threshold(case):
    gap, events = case
    got = engine_output(gap, to_table(events))
    by_user: dict[str, list[int]] = {}
    for e in got["events"]:
        by_user.setdefault(e["resolved_user"], []).append(us(e["timestamp"]))
    for user in by_user:
        times = sorted(by_user[user])
        expected = 1 + sum(1 for a, b in zip(times, times[1:]) if b - a > gap)
        count = next(u["session_count"] for u in got["users"] if u["resolved_user"] == user)
        assert count == expected


def test_session_key_is_stable_when_other_users_are_added():
    events = [Event(0, BASE_US, "u1", None, "m0", "a"), Event(1, BASE_US + 10, "u1", None, "m1")]
    other = [Event(2, BASE_US - 5, "u2", None, "m2"), Event(3, BASE_US + 3, None, "x", "m3")]
    alone = engine_output(1_800_000_000, to_table(events))["sessions"]
    mixed = engine_output(1_800_000_000, to_table(events + other))["sessions"]
    key = lambda rows: {s["session_key"] for s in rows if s["resolved_user"] == "u1"}  # noqa: E731
    assert key(alone) == key(mixed)
    assert len({s["session_key"] for s in mixed}) == len(mixed)


# ------------------------------------------------------------------ the rules beyond the notebook
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"]
BASES_US = [  # midnights and DST changes close by
    1_711_835_400_000_000,  # 2024-03-30T21:50:00Z, Berlin springs forward that night
    1_729_985_400_000_000,  # 2024-10-26T23:30:00Z, Berlin falls back that night
]


#: The input column of each Event field that ``first_last`` is drawn over.
FIRST_LAST_COLUMNS = {"campaign": "utm", "client_session": "csid", "gap_key": "plat"}


@st.composite
def rule_streams(draw):
    """Events and rules: every rule, each drawn on or off (the columnar plan runs them
    all, so every example is compared under both plans)."""
    gap = draw(st.sampled_from([60_000_000, 1_800_000_000]))
    base = draw(st.sampled_from(BASES_US))
    options = Options(
        gaps=draw(st.sampled_from([{}, {"web": gap * 2, "mobile": gap // 6}])),
        midnight=draw(st.sampled_from([None, "event", "Europe/Berlin", "America/New_York"])),
        start_events=draw(st.sampled_from([(), ("Open",)])),
        end_events=draw(st.sampled_from([(), ("Close",)])),
        campaign=draw(st.booleans()),
        client_session=draw(st.booleans()),
        passive=draw(st.sampled_from([(), ("Page",), ("Page", "Close")])),
        max_duration=draw(st.sampled_from([None, gap // 2, gap, 3 * gap])),
        identity=draw(st.sampled_from(["event", "stitch", "first", "graph"])),
        user_change=draw(st.booleans()),
        enrich=draw(st.booleans()),
        bounce_us=gap,
        first_last=draw(st.sampled_from([(), ("campaign",), ("client_session", "gap_key")])),
    )
    events = []
    for row in range(draw(st.integers(1, 30))):
        offset = draw(st.one_of(
            st.builds(lambda k, d: k * gap + d, st.integers(0, 6), st.sampled_from([-1, 0, 1])),
            st.integers(0, 6 * gap)))
        # with enrich, the event's type: its name when it has none (the SQL's coalesce)
        kind = draw(st.sampled_from(["page", "Screen", "track", None])) if options.enrich \
            else None
        name = draw(st.sampled_from(["Open", "Close", "Page", None]))
        events.append(Event(
            row, base + max(offset, 0), draw(st.sampled_from(["u1", "u2", None])),
            draw(st.sampled_from(["a1", "a2", "a3", None])),
            draw(st.sampled_from([f"m{row:03d}", None])),
            name if name is not None else kind, kind=kind,
            path=draw(st.sampled_from(["/a", "/b", None])) if options.enrich else None,
            gap_key=draw(st.sampled_from(["web", "mobile", "tv", None])),
            zone=draw(st.sampled_from(ZONES + [None])),
            campaign=draw(st.sampled_from(["google", "newsletter", None])),
            client_session=draw(st.sampled_from(["s1", "s2", None])),
        ))
    return gap, options, events


def rule_options(gap: int, options: Options) -> dict:
    kwargs: dict = {"gap": f"{gap}us", "on_invalid": "quarantine"}
    if options.gaps:
        kwargs.update(gap_by="plat", gaps={k: f"{v}us" for k, v in options.gaps.items()})
    if options.midnight:
        kwargs.update(midnight=options.midnight, timezone_column="tz")
    if options.campaign:
        kwargs["campaign"] = "utm"
    if options.client_session:
        kwargs["client_session"] = "csid"
    kwargs["passive_events"] = list(options.passive)
    kwargs["identity"] = options.identity
    kwargs["user_change"] = options.user_change
    if options.max_duration:
        kwargs["max_duration"] = f"{options.max_duration}us"
    kwargs["start_events"] = list(options.start_events)
    kwargs["end_events"] = list(options.end_events)
    if options.enrich:
        kwargs.update(enrich=True, bounce=f"{options.bounce_us}us")
    kwargs["first_last"] = [FIRST_LAST_COLUMNS[f] for f in options.first_last]
    return kwargs


def enrichment_columns(options: Options) -> dict[str, str]:
    """The sessions table's enrichment columns -> the reference's names for them."""
    names = ["landing_page", "exit_page", "page_views", "screens", "is_bounce"] \
        if options.enrich else []
    out = {name: name for name in names}
    for field in options.first_last:
        for end in ("first", "last"):
            out[f"{end}_{FIRST_LAST_COLUMNS[field]}"] = f"{end}_{field}"
    return out


def rule_table(events, options: Options) -> pa.Table:
    """The events with the columns the drawn rules read (rule_options names them)."""
    table = to_table(events)
    if options.enrich:
        table = table.append_column("type", pa.array([e.kind for e in events], pa.string()))
        table = table.append_column("properties", pa.array(
            [{"path": e.path} for e in events], pa.struct([("path", pa.string())])))
    return table.append_column(
        "plat", pa.array([e.gap_key for e in events], pa.string())).append_column(
        "tz", pa.array([e.zone for e in events], pa.string())).append_column(
        "utm", pa.array([e.campaign for e in events], pa.string())).append_column(
        "csid", pa.array([e.client_session for e in events], pa.string()))


def check_rules(case) -> None:
    gap, options, events = case
    table = rule_table(events, options)
    kwargs = rule_options(gap, options)
    # the columnar plan runs every rule drawn: both plans are compared
    assert unsupported_rule(Rules.from_options(**{
        k: v for k, v in kwargs.items() if k != "on_invalid"})) is None
    tables = run_both_plans(table, **kwargs)
    got = sorted((e["row"], e["session_id"], e["start_reason"])
                 for e in tables["events"].to_pylist())
    enriched = enrichment_columns(options)
    sessions = [(s["resolved_user"], s["session_id"], s["start_reason"], s["event_count"],
                 {mine: s[column] for column, mine in enriched.items()})
                for s in tables["sessions"].to_pylist()]
    want = reference(events, gap, options)
    assert got == sorted((e["row"], e["session_id"], e["start_reason"]) for e in want["events"])
    assert sessions == [(s["resolved_user"], s["session_id"], s["start_reason"],
                         s["event_count"], {mine: s[mine] for mine in enriched.values()})
                        for s in want["sessions"]]


@examples(400)
@given(rule_streams())
def test_columnar_rules_match_sql_and_reference(case):
    """Every rule (per-event gaps, midnight, campaign, start/end and passive events,
    client session ids, max_duration, user_change, enrichment and first_last, identities):
    every example under both plans, and against the reference."""
    check_rules(case)
