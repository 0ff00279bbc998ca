"""The reference implementation: the rules in plain Python, small and obviously right.

Slow on purpose. Every engine is checked against it, by fixed cases and by
property-based tests (tests/test_properties.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Event:
    row: int                      # input order, 0-based
    ts_us: int                    # UTC microseconds since the epoch
    user_id: str | None = None
    anonymous_id: str | None = None
    message_id: str | None = None
    name: str | None = None       # event name, else type
    gap_key: str | None = None    # the value that selects this event's gap (rule: gaps)
    zone: str | None = None       # the event's own time zone (rule: midnight="event")
    campaign: str | None = None   # rule: campaign change
    client_session: str | None = None  # rule: client session id


@dataclass
class Options:
    """The rules beyond the notebook's; defaults change nothing."""

    gaps: dict[str, int] = field(default_factory=dict)   # gap_key -> threshold (us)
    midnight: str | None = None                          # zone name, or "event"
    start_events: tuple[str, ...] = ()
    end_events: tuple[str, ...] = ()
    campaign: bool = False
    client_session: bool = False
    passive: tuple[str, ...] = ()                        # names that do not extend a session
    max_duration: int | None = None                      # us; longer sessions are cut
    identity: str = "event"                              # event | stitch | first


def platform(library: str | None) -> str | None:
    """web / mobile / server from Segment's context.library.name (None when unknown)."""
    if library is None:
        return None
    name = library.lower()
    if name in ("analytics.js", "analytics-next") or name.startswith("analytics.js"):
        return "web"
    if any(k in name for k in ("ios", "android", "react-native", "flutter", "swift",
                               "kotlin")):
        return "mobile"
    return "server"


def local_date(ts_us: int, zone: str) -> dt.date:
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ts_us)
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).date()


def start_reason(prev: Event | None, event: Event, gap_us: int, options: Options,
                 last_campaign: str | None, last_client: str | None,
                 last_active: Event | None = None) -> str | None:
    """Why ``event`` starts a session (None: it does not), in order of precedence.

    The gap is measured from the previous event, except that an active event measures
    it from the last active event when passive events are configured and one exists.
    """
    if prev is None:
        return "first_event"
    since = prev
    if options.passive and event.name not in options.passive and last_active is not None:
        since = last_active
    threshold = options.gaps.get(since.gap_key, gap_us) if since.gap_key is not None else gap_us
    if event.ts_us - since.ts_us > threshold:
        return "inactivity"
    if options.midnight is not None:
        zone = (event.zone or "UTC") if options.midnight == "event" else options.midnight
        if local_date(prev.ts_us, zone) != local_date(event.ts_us, zone):
            return "midnight"
    if options.campaign and event.campaign is not None and last_campaign is not None \
            and event.campaign != last_campaign:
        return "campaign_change"
    if event.name in options.start_events or prev.name in options.end_events:
        return "start_event"
    if options.client_session and event.client_session is not None \
            and last_client is not None and event.client_session != last_client:
        return "client_session"
    return None


def _blank(value: str | None) -> str | None:
    return None if value is None or value.strip(" ") == "" else value


def resolve(event: Event) -> str | None:
    """userId if set, else anonymousId; empty or all-space strings count as missing."""
    return _blank(event.user_id) or _blank(event.anonymous_id)


def identity_map(events: list[Event], policy: str) -> dict[str, str]:
    """anonymousId -> userId: the latest (stitch) or first (first) identification.

    Identifications are ordered like events: time, messageId (missing last), input order.
    """
    if policy == "event":
        return {}
    seen: dict[str, tuple] = {}
    for e in events:
        user, anon = _blank(e.user_id), _blank(e.anonymous_id)
        if user is None or anon is None:
            continue
        key = (e.ts_us, e.message_id is None, e.message_id or "", e.row)
        best = seen.get(anon)
        if best is None or (key > best[0] if policy == "stitch" else key < best[0]):
            seen[anon] = (key, user)
    return {anon: user for anon, (_, user) in seen.items()}


def session_key(user: str, start_us: int) -> str:
    return hashlib.md5(f"{user}|{start_us}".encode()).hexdigest()[:20]


def sessionize(events: list[Event], gap_us: int,
               options: Options | None = None) -> dict[str, list[dict]]:
    """Return ``events`` (one dict per valid event, keyed by input row), ``sessions``, ``users``."""
    options = options or Options()
    stitched = identity_map(events, options.identity)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        user = _blank(event.user_id) or stitched.get(_blank(event.anonymous_id) or "") \
            or _blank(event.anonymous_id)
        if user is not None:
            by_user[user].append(event)
    out_events, sessions = [], []
    for user, stream in by_user.items():
        # ties: timestamp, then messageId (missing last), then input order
        stream.sort(key=lambda e: (e.ts_us, e.message_id is None, e.message_id or "", e.row))
        prev = None
        session_id = 0
        current: dict | None = None
        last_campaign = last_client = None  # the last non-missing value before this event
        last_active = None
        base_start = piece = None
        for event in stream:
            reason = start_reason(prev, event, gap_us, options, last_campaign, last_client,
                                  last_active)
            if options.max_duration:
                # windows of max_duration from the start the other rules gave (end included)
                if reason is not None:
                    base_start = event.ts_us
                elapsed = event.ts_us - base_start
                new_piece = 0 if elapsed == 0 else (elapsed - 1) // options.max_duration
                if reason is None and new_piece != piece:
                    reason = "max_duration"
                piece = new_piece
            if event.name not in options.passive:
                last_active = event
            last_campaign = event.campaign if event.campaign is not None else last_campaign
            last_client = (event.client_session if event.client_session is not None
                           else last_client)
            if reason is not None:
                session_id += 1
                current = {
                    "resolved_user": user, "session_id": session_id,
                    "session_key": session_key(user, event.ts_us),
                    "start_us": event.ts_us, "end_us": event.ts_us, "event_count": 0,
                    "start_reason": reason, "first_event": event.name, "last_event": None,
                }
                sessions.append(current)
            current["end_us"] = event.ts_us
            current["event_count"] += 1
            current["last_event"] = event.name
            out_events.append({
                "row": event.row, "resolved_user": user,
                "prev_us": None if prev is None else prev.ts_us,
                "gap_us": None if prev is None else event.ts_us - prev.ts_us,
                "new_session": reason is not None, "session_id": session_id,
                "session_key": current["session_key"], "start_reason": reason,
            })
            prev = event
    for s in sessions:
        s["duration_seconds"] = (s["end_us"] - s["start_us"]) / 1_000_000
    users = []
    for user in sorted(by_user):
        own = [s for s in sessions if s["resolved_user"] == user]
        users.append({
            "resolved_user": user, "session_count": len(own),
            "event_count": sum(s["event_count"] for s in own),
            "first_seen_us": min(s["start_us"] for s in own),
            "last_seen_us": max(s["end_us"] for s in own),
        })
    sessions.sort(key=lambda s: (s["resolved_user"], s["session_id"]))
    return {"events": out_events, "sessions": sessions, "users": users}
