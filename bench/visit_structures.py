"""Event streams with a known visit structure, to check the threshold recommendation.

Each :class:`Structure` says how long the pauses inside a visit and between visits are
(log-normal: a median and a spread), how many users, which share of them are on
mobile (mobile visits are faster: pauses a third as long inside, a quarter as long
between), and two kinds of noise:

- ``ping``: foreground heartbeats every ``ping`` seconds (±5 %) inside a share of
  visits (a video player, a keep-alive): a spike among the within-visit gaps;
- ``heartbeat``: background heartbeats every ``heartbeat`` seconds (±10 %) while the
  app is idle (none closer than one period to a visit): each is a visit of its own.

:func:`generate` gives the events (Segment-shaped, ``context.library.name`` says web or
mobile) and, per row, the true visit. :func:`exact_range` is the range of thresholds
that recovers the true visits exactly (empty when within-visit and between-visit
gaps overlap); :func:`agreement` is the share of events assigned to their true visit.
Deterministic from (structure, seed).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa

START = 1_709_251_200.0  # 2024-03-01 UTC
LIBRARY = {"web": "analytics.js", "mobile": "analytics-ios"}


@dataclasses.dataclass(frozen=True)
class Structure:
    name: str
    within: float  # median pause inside a visit, seconds (web)
    between: float  # median pause between visits, seconds (web)
    sigma: float = 0.8  # spread of log(pause), natural log, both kinds
    users: int = 240
    visits_per_user: int = 8
    events_per_visit: float = 6.0
    mobile_share: float = 0.0
    ping: float | None = None  # foreground heartbeat period, seconds
    ping_share: float = 0.3  # share of visits that ping
    heartbeat: float | None = None  # background heartbeat period, seconds
    heartbeat_share: float = 0.3  # share of users whose app sends them

    def scaled(self, platform: str) -> tuple[float, float]:
        if platform == "mobile":
            return self.within / 3, self.between / 4
        return self.within, self.between


def generate(s: Structure, seed: int = 0) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """(events, true visit id per row, platform per row: 0 web, 1 mobile)."""
    rng = np.random.default_rng(seed)
    users, times, visits, platforms = [], [], [], []
    visit_id = 0
    for u in range(s.users):
        mobile = rng.random() < s.mobile_share
        within, between = s.scaled("mobile" if mobile else "web")
        t = START + rng.uniform(0, 3 * 86400)
        spans = []
        for v in range(s.visits_per_user):
            if v:
                t += float(np.exp(rng.normal(math.log(between), s.sigma)))
            n = max(1, int(rng.poisson(s.events_per_visit)))
            pauses = np.exp(rng.normal(math.log(within), s.sigma, n - 1))
            ts = t + np.concatenate(([0.0], np.cumsum(pauses)))
            if s.ping and rng.random() < s.ping_share and ts[-1] - ts[0] > s.ping:
                count = int((ts[-1] - ts[0]) // s.ping)
                pings = ts[0] + s.ping * np.arange(1, count + 1) * rng.uniform(0.95, 1.05)
                ts = np.sort(np.concatenate((ts, pings[pings < ts[-1]])))
            spans.append((ts[0], ts[-1]))
            times.append(ts)
            visits.append(np.full(len(ts), visit_id))
            users.append(np.full(len(ts), u))
            platforms.append(np.full(len(ts), int(mobile)))
            visit_id += 1
            t = float(ts[-1])
        if s.heartbeat and rng.random() < s.heartbeat_share:
            first, last = spans[0][0], spans[-1][1]
            beats = first + np.cumsum(s.heartbeat * rng.uniform(0.9, 1.1, int(
                (last - first) / s.heartbeat * 1.2) + 1))
            beats = beats[beats < last]
            lo = np.array([a for a, _ in spans]) - s.heartbeat
            hi = np.array([b for _, b in spans]) + s.heartbeat
            idle = ~((beats[:, None] >= lo[None, :]) & (beats[:, None] <= hi[None, :])).any(1)
            beats = beats[idle]
            times.append(beats)
            visits.append(visit_id + np.arange(len(beats)))
            users.append(np.full(len(beats), u))
            platforms.append(np.full(len(beats), int(mobile)))
            visit_id += len(beats)
    ts = np.concatenate(times)
    visit = np.concatenate(visits)
    user = np.concatenate(users)
    platform = np.concatenate(platforms)
    ms = np.round(ts * 1000).astype(np.int64)
    order = np.lexsort((ms, user))  # rows in (user, time) order: easy to check by eye
    ms, visit, user, platform = ms[order], visit[order], user[order], platform[order]
    names = np.array([LIBRARY["web"], LIBRARY["mobile"]])[platform]
    table = pa.table({
        "userId": pa.array([f"u{u}" for u in user]),
        "type": pa.array(["track"] * len(ms)),
        "event": pa.array(["Tapped"] * len(ms)),
        "messageId": pa.array([f"m{i}" for i in range(len(ms))]),
        "timestamp": pa.array(ms, pa.timestamp("ms", tz="UTC")),
        "context": pa.array([{"library": {"name": n}} for n in names]),
    })
    return table, visit, platform


def _user_gaps(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(first-of-user flag, gap in seconds) per row of :func:`generate`'s table."""
    ms = table.column("timestamp").cast(pa.int64()).to_numpy()
    users = table.column("userId").to_numpy(zero_copy_only=False)
    first = np.ones(len(ms), bool)
    first[1:] = users[1:] != users[:-1]
    gap = np.zeros(len(ms))
    gap[1:] = (ms[1:] - ms[:-1]) / 1000
    gap[first] = 0
    return first, gap


def exact_range(table: pa.Table, visit: np.ndarray, mask: np.ndarray | None = None
                ) -> tuple[float, float] | None:
    """[low, high): the thresholds whose sessions are exactly the true visits (of the
    rows in ``mask``), or None when no threshold does."""
    first, gap = _user_gaps(table)
    keep = ~first if mask is None else ~first & mask
    same = np.zeros(len(visit), bool)
    same[1:] = visit[1:] == visit[:-1]
    inside = gap[keep & same]
    boundary = gap[keep & ~same]
    low = float(inside.max()) if len(inside) else 0.0
    high = float(boundary.min()) if len(boundary) else math.inf
    return (low, high) if low < high else None


def sessions_at(table: pa.Table, thresholds: np.ndarray) -> np.ndarray:
    """Session number per row when row i's gap threshold is ``thresholds[i]`` (gaps
    strictly greater start a session), as sessionize assigns them."""
    first, gap = _user_gaps(table)
    return np.cumsum(first | (gap > thresholds))


def agreement(visit: np.ndarray, session: np.ndarray) -> float:
    """Share of events assigned to their true visit: an event counts when its session is
    the one holding most of its visit's events and its visit is the one holding most of
    its session's events (a one-to-one match of visits and sessions)."""
    pairs, counts = np.unique(np.stack((visit, session)), axis=1, return_counts=True)
    order = np.lexsort((-counts, pairs[0]))
    v_sorted = pairs[:, order]
    head = np.ones(v_sorted.shape[1], bool)
    head[1:] = v_sorted[0, 1:] != v_sorted[0, :-1]
    best_session = dict(zip(v_sorted[0, head], v_sorted[1, head]))
    order = np.lexsort((-counts, pairs[1]))
    s_sorted = pairs[:, order]
    head = np.ones(s_sorted.shape[1], bool)
    head[1:] = s_sorted[1, 1:] != s_sorted[1, :-1]
    best_visit = dict(zip(s_sorted[1, head], s_sorted[0, head]))
    ok = np.fromiter((best_session[v] == s and best_visit[s] == v
                      for v, s in zip(visit, session)), bool, len(visit))
    return float(ok.mean())


def grid() -> list[Structure]:
    """24 structures from cleanly separated to overlapping (the docs' table)."""
    m, h, d = 60, 3600, 86400
    out = [
        # separated: between-visit pauses hours to days
        Structure("sep-day", 20, d, 0.8),
        Structure("sep-6h", 20, 6 * h, 0.8),
        Structure("sep-2h", 20, 2 * h, 0.7),
        Structure("sep-issue", 30, 12 * h, 0.5),  # the issue's: 5 s..3 min vs 6 h..5 days
        Structure("sep-fast", 3, 1 * h, 0.8),
        Structure("sep-slow", 2 * m, 2 * d, 0.8),
        Structure("sep-mix", 20, d, 0.8, mobile_share=0.5),
        Structure("sep-mix-2h", 20, 2 * h, 0.7, mobile_share=0.5),
        Structure("sep-ping", 20, d, 0.8, ping=60),
        Structure("sep-beat", 20, d, 0.8, heartbeat=4 * h),
        Structure("sep-all-noise", 20, d, 0.8, mobile_share=0.5, ping=60, heartbeat=6 * h),
        Structure("sep-few-users", 20, 6 * h, 0.8, users=40),
        # closer: a decade or so apart, spreads growing
        Structure("near-1h", 30, h, 0.9),
        Structure("near-1h-wide", 30, h, 1.1),
        Structure("near-30m", 30, 30 * m, 1.0),
        Structure("near-30m-mix", 30, 30 * m, 1.0, mobile_share=0.5),
        Structure("near-20m-beat", 20, 20 * m, 1.0, heartbeat=2 * h),
        # overlapping
        Structure("over-10m", 30, 10 * m, 1.1),
        Structure("over-5m", 30, 5 * m, 1.2),
        Structure("over-5m-mix", 30, 5 * m, 1.2, mobile_share=0.5),
        Structure("over-3m", 30, 3 * m, 1.3),
        Structure("over-2m-ping", 30, 2 * m, 1.3, ping=60),
        Structure("over-90s", 30, 90, 1.4),
        Structure("over-same", 60, 60, 1.2),
    ]
    return out
