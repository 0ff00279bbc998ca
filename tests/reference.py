"""The reference implementation: the rules in plain Python, small and obviously right.

Slow on purpose. Every engine is checked against it, by fixed cases and by
property-based tests (tests/test_properties.py).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class Event:
    row: int                      # input order, 0-based
    ts_us: int                    # UTC microseconds since the epoch
    user_id: str | None = None
    anonymous_id: str | None = None
    message_id: str | None = None
    name: str | None = None       # event name, else type


def _blank(value: str | None) -> str | None:
    return None if value is None or value.strip(" ") == "" else value


def resolve(event: Event) -> str | None:
    """userId if set, else anonymousId; empty or all-space strings count as missing."""
    return _blank(event.user_id) or _blank(event.anonymous_id)


def session_key(user: str, start_us: int) -> str:
    return hashlib.md5(f"{user}|{start_us}".encode()).hexdigest()[:20]


def sessionize(events: list[Event], gap_us: int) -> dict[str, list[dict]]:
    """Return ``events`` (one dict per valid event, keyed by input row), ``sessions``, ``users``."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        user = resolve(event)
        if user is not None:
            by_user[user].append(event)
    out_events, sessions = [], []
    for user, stream in by_user.items():
        # ties: timestamp, then messageId (missing last), then input order
        stream.sort(key=lambda e: (e.ts_us, e.message_id is None, e.message_id or "", e.row))
        prev = None
        session_id = 0
        current: dict | None = None
        for event in stream:
            if prev is None:
                reason = "first_event"
            elif event.ts_us - prev.ts_us > gap_us:
                reason = "inactivity"
            else:
                reason = None
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
