"""The reference implementation: the rules in plain Python, small and obviously right.

Slow on purpose. Every engine is checked against it, by fixed cases and by
property-based tests (tests/test_properties.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field

from sessionize.rules import PLATFORM_LIBRARIES, PLATFORM_PATTERNS


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
    kind: str | None = None       # the event's type (identity="graph": "alias" links ids)
    previous_id: str | None = None  # an alias call's previousId
    path: str | None = None       # the page's path (rule: enrich)


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
    identity: str = "event"                              # event | stitch | first | graph
    identity_cap: int = 1                                # graph: most people merged
    user_change: bool = False                            # split where a device changes hands
    enrich: bool = False                                 # landing/exit page, views, bounces
    bounce_us: int = 10_000_000                          # enrich: a bounce lasts less
    first_last: tuple[str, ...] = ()                     # Event fields: first/last value


def platform(library: str | None) -> str | None:
    """web / mobile / server from Segment's context.library.name (None when missing or
    blank): the known names, then the patterns in order, else server."""
    if library is None or not library.strip():
        return None
    name = library.strip().lower()
    for group, names in PLATFORM_LIBRARIES.items():
        if name in names:
            return group
    for group, pattern in PLATFORM_PATTERNS:
        if re.search(pattern, name):
            return group
    return "server"


def local_date(ts_us: int, zone: str) -> dt.date:
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ts_us)
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).date()


def start_reason(prev: Event | None, event: Event, gap_us: int, options: Options,
                 last_campaign: str | None, last_client: str | None,
                 last_active: Event | None = None, changed_hands: bool = False) -> str | None:
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
    if options.user_change and changed_hands:
        return "user_change"
    return None


#: Unicode's White_Space characters and the BOM: an id made only of these is missing.
BLANK = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
         "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")


def _blank(value: str | None) -> str | None:
    return None if value is None or value.strip(BLANK) == "" else value


def resolve(event: Event) -> str | None:
    """userId if set, else anonymousId; empty or blank strings (only white space) count
    as missing."""
    return _blank(event.user_id) or _blank(event.anonymous_id)


def order_key(e: Event) -> tuple:
    """Events' order: time, messageId (missing last), input order."""
    return (e.ts_us, e.message_id is None, e.message_id or "", e.row)


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
        key = order_key(e)
        best = seen.get(anon)
        if best is None or (key > best[0] if policy == "stitch" else key < best[0]):
            seen[anon] = (key, user)
    return {anon: user for anon, (_, user) in seen.items()}


class UnionFind:
    """Disjoint sets of identifiers (path halving; roots are arbitrary members)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def groups(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for x in list(self.parent):
            out[self.find(x)].add(x)
        return out


def graph_identities(events: list[Event], cap: int) -> dict[str, tuple[str, str]]:
    """identity="graph": identifier -> (resolved user, rule), as docs/identity.md says.

    Alias links (previousId -> userId) join people; a device (anonymousId) whose links
    reach more than ``cap`` people is not used to merge; a component that still holds
    more than ``cap`` people drops its devices reaching two or more; each component
    resolves to its userId seen first (ties: the smaller id); a capped device without a
    user in its component resolves to its latest identification.
    """
    first_seen: dict[str, int] = {}
    devices: dict[str, set[str]] = defaultdict(set)
    latest: dict[str, tuple[tuple, str]] = {}
    aliases: set[tuple[str, str]] = set()
    for e in events:
        uid, aid, prev = _blank(e.user_id), _blank(e.anonymous_id), _blank(e.previous_id)
        if uid is None and aid is None:
            continue  # invalid: no user
        if uid is not None:
            first_seen[uid] = min(first_seen.get(uid, e.ts_us), e.ts_us)
        if uid is not None and aid is not None:
            if aid != uid:
                devices[aid].add(uid)
            if aid not in latest or order_key(e) > latest[aid][0]:
                latest[aid] = (order_key(e), uid)
        if (e.kind or "").lower() == "alias" and uid is not None and prev is not None \
                and prev != uid:
            aliases.add((prev, uid))
    people = UnionFind()
    for a, b in aliases:
        people.union(a, b)
    aliased = {x for pair in aliases for x in pair}

    def reach(aid: str) -> set[str]:
        own = {people.find(aid)} if aid in first_seen or aid in aliased else set()
        return {people.find(u) for u in devices[aid]} | own

    capped = {aid: "shared_device" for aid in devices if len(reach(aid)) > cap}
    while True:
        links = UnionFind()
        for a, b in aliases:
            links.union(a, b)
        for aid, uids in devices.items():
            for uid in uids if aid not in capped else ():
                links.union(aid, uid)
        components = links.groups()
        over = [c for c in components.values()
                if len({people.find(x) for x in c if x in first_seen}) > cap]
        if not over:
            break
        for component in over:
            for aid in component:
                if aid in devices and aid not in capped and len(reach(aid)) >= 2:
                    capped[aid] = "component_cap"
    for aid in capped:
        if aid not in links.parent:
            components[aid] = {aid}
    root = {x: r for r, members in components.items() for x in members}
    rep = {r: min((first_seen[x], x) for x in members if x in first_seen)[1]
           for r, members in components.items() if any(x in first_seen for x in members)}
    out = {}
    for x, r in root.items():
        if r in rep:
            out[x] = (rep[r], "component")
        else:
            user = latest[x][1]
            out[x] = (rep.get(root.get(user, ""), user), capped[x])
    return out


def resolved_users(events: list[Event], options: Options) -> dict[int, str]:
    """Input row -> resolved user, for every valid event, under the identity policy."""
    out = {}
    if options.identity == "graph":
        table = graph_identities(events, options.identity_cap)
        for e in events:
            key = resolve(e)
            if key is not None:
                out[e.row] = table[key][0] if key in table else key
        return out
    stitched = identity_map(events, options.identity)
    for e in events:
        user = _blank(e.user_id) or stitched.get(_blank(e.anonymous_id) or "") \
            or _blank(e.anonymous_id)
        if user is not None:
            out[e.row] = user
    return out


def changed_hands(events: list[Event], users: dict[int, str]) -> set[int]:
    """Rows whose device's previous event (in events' order) went to another user."""
    by_device: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        device = _blank(e.anonymous_id)
        if device is not None and e.row in users:
            by_device[device].append(e)
    out = set()
    for stream in by_device.values():
        stream.sort(key=order_key)
        out.update(b.row for a, b in zip(stream, stream[1:]) if users[a.row] != users[b.row])
    return out


def enrichment(events: list[Event], duration_us: int, options: Options) -> dict:
    """A session's enrichment: the first and last present values (page path, the
    ``first_last`` fields), the page and screen views, whether it bounced (at most one
    view, shorter than ``bounce_us``)."""
    out: dict = {}

    def present(name: str) -> list:
        return [getattr(e, name) for e in events if getattr(e, name) is not None]

    if options.enrich:
        paths = present("path")
        kinds = [e.kind.lower() for e in events if e.kind is not None]
        out.update(landing_page=paths[0] if paths else None,
                   exit_page=paths[-1] if paths else None,
                   page_views=kinds.count("page"), screens=kinds.count("screen"),
                   is_bounce=kinds.count("page") + kinds.count("screen") <= 1
                   and duration_us < options.bounce_us)
    for name in options.first_last:
        values = present(name)
        out[f"first_{name}"] = values[0] if values else None
        out[f"last_{name}"] = values[-1] if values else None
    return out


def session_key(user: str, start_us: int) -> str:
    return hashlib.md5(f"{user}|{start_us}".encode()).hexdigest()[:20]


def sessionize(events: list[Event], gap_us: int,
               options: Options | None = None) -> dict[str, list[dict]]:
    """Return ``events`` (one dict per valid event, keyed by input row), ``sessions``, ``users``."""
    options = options or Options()
    users = resolved_users(events, options)
    switched = changed_hands(events, users) if options.user_change else set()
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.row in users:
            by_user[users[event.row]].append(event)
    out_events, sessions = [], []
    for user, stream in by_user.items():
        # ties: timestamp, then messageId (missing last), then input order
        stream.sort(key=order_key)
        prev = None
        session_id = 0
        current: dict | None = None
        last_campaign = last_client = None  # the last non-missing value before this event
        last_active = None
        base_start = piece = None
        for event in stream:
            reason = start_reason(prev, event, gap_us, options, last_campaign, last_client,
                                  last_active, event.row in switched)
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
                    "events": [],
                }
                sessions.append(current)
            current["end_us"] = event.ts_us
            current["event_count"] += 1
            current["last_event"] = event.name
            current["events"].append(event)
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
        s.update(enrichment(s.pop("events"), s["end_us"] - s["start_us"], options))
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
