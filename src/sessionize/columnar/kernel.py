"""The columnar plan: the inactivity rule on Arrow arrays, from one sort by (user, time).

DuckDB reads, parses and validates the input and resolves identities: the compiled
``keys`` stage (the valid events' row, user, time, messageId and name, and, with
per-event gaps, each event's gap) arrives here as Arrow. This module then does what the
compiled ``assign`` stage's windows do:

1. **encode users once**: integer codes in the order of the users' names (byte-wise, as
   SQL compares strings), so that code order is the SQL's string order;
2. **one (user, time) order**: one sort of the times gives the time order, and events at
   the same instant are then put in (user, messageId, input row) order among themselves,
   exactly as the SQL's ``ORDER BY``; that order sorted stably by user (a radix sort of
   the codes) is the (user, time) order, with no tie of its own left;
3. **one scan** of the (user, time) order gives every window: the user's first event,
   the gap, the session starts and their reason, the session index;
4. **reductions** over runs of that order give the sessions and users tables (session
   keys are hashed by DuckDB, with the SQL's own ``md5`` expression, for the starts only);
5. **gathers**: the events table is the input's columns and the scan's arrays gathered
   into time order (or left in the input's order), built when first asked for
   (:mod:`.gather`).

It runs the gap (one, or one per event: ``gap_by``/``gaps``), midnight (in a fixed zone
or each event's own), campaign change, start and end events, client session ids, passive
events, ``max_duration`` and ``user_change``, with any identity policy, each as the
compiled ``assign`` stage defines it (:func:`_starts`); the session enrichment is
:mod:`.enrich`'s. :func:`unsupported_rule` would name a rule it did not run (none today),
which then uses the SQL plan. The tests run both plans against the reference
implementation and require identical tables.

``threads`` (``run(threads=)``) bounds the threads the kernel works on; one means the
calling thread alone, ``None`` one per core.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.inputs import ROW
from ..rules import START_REASONS
from ..sql.compiler import SEPARATOR, P
from .gather import TS, arrow, bools, dictionary_codes, numpy, rows, strings, take, to_numpy

if TYPE_CHECKING:
    import duckdb

    from ..rules import Rules

__all__ = ["Columnar", "Stream", "assign", "unsupported_rule"]

#: The start reasons by code (their precedence); -1 is no start.
_REASONS = strings(list(START_REASONS))
_CODE = {name: np.int8(i) for i, name in enumerate(START_REASONS)}


def unsupported_rule(rules: Rules) -> str | None:
    """The first rule the columnar plan does not run (``None``: it runs them all). It runs
    every rule of :class:`~sessionize.rules.Rules`; a new rule is named here until it
    does (docs/architecture.md, "How to add a rule option")."""
    unsupported: tuple[tuple[str, bool], ...] = ()
    return next((name for name, used in unsupported if used), None)


# -- threads ------------------------------------------------------------------------------
def workers(threads: int | None) -> int:
    """The threads the kernel may use: ``threads`` as the user gave it (``run(threads=)``),
    else one per core, as DuckDB's own default."""
    return max(1, int(threads)) if threads else max(1, os.cpu_count() or 1)


class _Inline(Executor):
    """An executor that runs each job at once, on the calling thread."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def executor(threads: int) -> Executor:
    """A pool of ``threads`` threads, or the calling thread alone for one."""
    if threads < 2:
        return _Inline()
    return ThreadPoolExecutor(threads, thread_name_prefix="sessionize-kernel")


# -- 1. users -------------------------------------------------------------------------------
def _encode_users(user: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes whose order is the users' names' (byte-wise) order, and the names
    by code: a dictionary encoding, then a sort of the dictionary (the distinct users,
    not the events)."""
    encoded = pc.dictionary_encode(user).combine_chunks()
    names = encoded.dictionary
    by_name = to_numpy(pc.sort_indices(names))
    rank = np.empty(len(names), np.int64)
    rank[by_name] = np.arange(len(names))
    return rank[to_numpy(encoded.indices)], names.take(arrow(by_name))


# -- 2. the orders -----------------------------------------------------------------------------
def _time_order(ts: np.ndarray, codes: np.ndarray, msg: pa.Array | pa.ChunkedArray,
                row: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Key positions in (time, user, messageId, row) order, and the times in it: one sort
    of the times (numpy's vectorised sort; its ties in no particular order), then the
    events at the same instant ordered among themselves (:func:`_order_ties`)."""
    order = np.argsort(ts)
    t = ts[order]
    return _order_ties(order, t[1:] == t[:-1], codes, msg, row), t


def _order_ties(order: np.ndarray, equal: np.ndarray, codes: np.ndarray | None,
                msg: pa.Array | pa.ChunkedArray, row: np.ndarray | None) -> np.ndarray:
    """``order`` with every run of positions tied on time (``equal[i]``: position i + 1
    ties with position i) ordered by user code (``codes``; ``None``: not by user), then
    messageId (missing last), then input row (``row`` per key position; ``None``: key
    positions are in input-row order). Runs
    are contiguous, so sorting the tied positions by (run, user, messageId, row) keeps
    every run in its slots; ``order`` is reordered in place and returned."""
    slots = np.flatnonzero(equal)
    if not len(slots):
        return order
    tied = np.zeros(len(order), bool)
    tied[slots] = True
    tied[slots + 1] = True
    slots = np.flatnonzero(tied)
    # a run starts at a tied position that does not tie with the one before it
    starts_run = np.ones(len(slots), bool)
    inside = slots > 0
    starts_run[inside] = ~equal[slots[inside] - 1]
    members = order[slots]
    columns = {
        "run": arrow(np.cumsum(starts_run)),
        **({} if codes is None else {"user": arrow(codes[members])}),
        "msg": take(msg, members),
        "row": arrow(members if row is None else row[members]),
    }
    by = pc.sort_indices(pa.table(columns),
                         sort_keys=[(name, "ascending", "at_end") for name in columns])
    order[slots] = members[to_numpy(by)]
    return order


def _by_code(codes: np.ndarray, users: int) -> np.ndarray:
    """A stable sort of ``codes`` (0 <= code < ``users``): a least-significant-digit radix
    sort, one stable argsort per 16-bit digit (numpy sorts 8- and 16-bit integers stably
    by counting, in linear time), so a few passes over the codes, not a comparison sort."""
    order = None
    for shift in range(0, max(users - 1, 1).bit_length(), 16):
        digit = (codes if order is None else codes[order]) >> shift
        digit = digit.astype(np.uint8 if (users - 1) >> shift < 256 else np.uint16)
        step = np.argsort(digit, kind="stable")
        order = step if order is None else order[step]
    return order


def _inverse(order: np.ndarray) -> np.ndarray:
    """The inverse of the permutation ``order``."""
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    return inverse


# -- the assignment ----------------------------------------------------------------------------
@dataclasses.dataclass
class Stream:
    """How to read the input's columns the events table shows, when the keys do not carry
    them: ``read`` returns the columns named, then the input's row numbers (``ROW``),
    every input row in the input's order, and may be called from any thread, so the
    columns are read and gathered one at a time, side by side."""

    sources: list[str]                     # the input's columns, by name
    read: Callable[[list[str]], pa.Table]
    # input column -> the keys' column holding its very values (the messageId as
    # ``__sz_msg``): gathered from there, not read again
    in_keys: dict[str, str] = dataclasses.field(default_factory=dict)


def assign(keys: pa.Table, *, gap_us: int, per_event_gap: bool,
           con: duckdb.DuckDBPyConnection, time_order: bool = True,
           inputs: dict[str, str] | None = None, stream: Stream | None = None,
           threads: int | None = None, rules: Rules | None = None) -> Columnar:
    """Assign sessions to the events of ``keys`` (the compiled ``keys`` stage as Arrow).

    ``time_order``: the events table will be in time order (else in the input's order).
    ``inputs``: input name -> its column in ``keys``, when the keys carry the input's
    columns for the events table; ``stream``: how to read them otherwise (else they are
    read again from ``sz_input`` on ``con``). ``threads``: see :func:`workers`. ``rules``:
    the rules beyond the gap (:func:`_starts`; ``None``: the gap alone)."""
    threads = workers(threads)
    reads = _read_early(stream, threads) if time_order else {}
    try:
        return _assign(keys, gap_us, per_event_gap, con, time_order, inputs, stream, threads,
                       reads, rules)
    except BaseException:
        _cancel(reads)  # the input is not read after the run has failed
        raise


def _read_early(stream: Stream | None, threads: int) -> dict[str, Future]:
    """Start reading the input's columns the events table shows, one after another on a
    thread of its own, while the calling thread encodes the users and sorts (numpy's
    sorts use one core; the reads would otherwise wait for them)."""
    if stream is None or threads < 2:
        return {}
    reader = ThreadPoolExecutor(1, thread_name_prefix="sessionize-kernel")
    reads = {c: reader.submit(stream.read, [c]) for c in stream.sources
             if c not in stream.in_keys}
    reader.shutdown(wait=False)
    return reads


def _cancel(reads: dict[str, Future]) -> None:
    """Cancel the reads not started and wait for the one running."""
    for job in reads.values():
        job.cancel()
    for job in reads.values():
        if not job.cancelled():
            job.exception()


def _assign(keys: pa.Table, gap_us: int, per_event_gap: bool,
            con: duckdb.DuckDBPyConnection, time_order: bool, inputs: dict[str, str] | None,
            stream: Stream | None, threads: int, reads: dict[str, Future],
            rules: Rules | None = None) -> Columnar:
    """:func:`assign`, with the input's reads started."""
    n = keys.num_rows
    # the input row breaks the last ties; where the keys are in row order (DuckDB keeps a
    # projection's order), their positions do that and the rows are never converted
    rows_in_order = _increasing(keys.column(f"{P}row"))
    row = None if rows_in_order else numpy(keys.column(f"{P}row"))
    codes, names = _encode_users(keys.column(f"{P}user"))
    ts = numpy(keys.column(f"{P}ts_us"))
    msg = keys.column(f"{P}msg")  # as returned: only tied events' are read
    by_time, t = _time_order(ts, codes, msg, row)
    at = _by_code(codes[by_time], len(names))  # time-order positions in (user, time) order
    by_user = by_time[at]
    t = t[at]
    users = np.bincount(codes, minlength=len(names))
    u = np.repeat(np.arange(len(names)), users)  # the users' codes in (user, time) order

    # 3. one scan of the (user, time) order gives every window
    first = np.ones(n, bool)
    np.not_equal(u[1:], u[:-1], out=first[1:])
    gaps = numpy(keys.column(f"{P}gap_us"))[by_user] if per_event_gap else None
    reason = _starts(keys, rules, con, by_user, t, first, gap_us, gaps,
                     _Orders(ts, codes, by_time, row))
    new = reason >= 0
    session = np.cumsum(new, dtype=np.int64) - 1
    user_first = np.flatnonzero(first)

    # 4. sessions and users: reductions over runs of the (user, time) order
    starts = np.flatnonzero(new)
    ends = _run_ends(starts, n)
    user_last = _run_ends(user_first, n)
    # a session's number: its index less its user's first session's, plus one
    session_id = session[starts] - session[user_first][u[starts]] + 1
    # the names of the sessions' first and last events, gathered together
    first_last = take(keys.column(f"{P}name"), np.concatenate([by_user[starts],
                                                                 by_user[ends]]))
    session_users = names.take(arrow(u[starts]))
    session_keys = _session_keys(con, session_users, t[starts])
    sessions = pa.table({
        "resolved_user": session_users,
        "session_id": arrow(session_id),
        "session_key": session_keys,
        "session_start": arrow(t[starts], TS),
        "session_end": arrow(t[ends], TS),
        "duration_seconds": arrow((t[ends] - t[starts]).astype(np.float64) / 1_000_000),
        "event_count": arrow(ends - starts + 1),
        "start_reason": _REASONS.take(arrow(reason[starts])),
        "first_event": first_last.slice(0, len(starts)),
        "last_event": first_last.slice(len(starts)),
    })
    users_table = pa.table({
        "resolved_user": names,
        "session_count": arrow(session[user_last] - session[user_first] + 1),
        "event_count": arrow(users),
        "first_seen": arrow(t[user_first], TS),
        "last_seen": arrow(t[user_last], TS),
    })
    return Columnar(keys, by_user, by_time if time_order else None, at if time_order else None,
                    codes, names, t, first, reason, session, session_keys, rows_in_order, msg,
                    sessions, users_table, threads, inputs, stream, reads)


@dataclasses.dataclass(frozen=True)
class _Orders:
    """What the rules that look past the user's own order read (``user_change``: a
    device's order), per key position: the time (us), the user's code, the input row
    (``None``: key positions are in input-row order), and the (time, user, messageId, row)
    order."""

    ts: np.ndarray
    codes: np.ndarray
    by_time: np.ndarray
    row: np.ndarray | None


def _starts(keys: pa.Table, rules: Rules | None, con: duckdb.DuckDBPyConnection,
            by_user: np.ndarray, t: np.ndarray, first: np.ndarray, gap_us: int,
            gaps: np.ndarray | None, orders: _Orders | None = None) -> np.ndarray:
    """Per (user, time) position: the code of the reason its event starts a session
    (:data:`START_REASONS`' index, -1 for none), as the compiled ``assign`` stage's
    ``CASE`` gives it: the first reason that holds, in the order of precedence.

    Each rule is a comparison of an event with the one before it in its user's order
    (``first`` marks a user's first event, which has none) or with the last one before it
    that has a property (the last active event, the last campaign): the index of that
    event is a running maximum of the indices that have the property."""
    n = len(t)
    pos = np.arange(n)
    # the event the gap is measured from: the previous one, or with passive events, for
    # an active event, its user's last active event before it (when it has one)
    since = pos - 1
    user_start = np.maximum.accumulate(np.where(first, pos, 0)) if n else pos
    if rules is not None and rules.passive_events:
        active = ~_in_order(_bools(keys.column(f"{P}passive")), by_user)
        last_active = _last_before(active)
        since = np.where(active & (last_active >= user_start), last_active, since)
    threshold = gap_us if gaps is None else gaps[since]  # the gap in force at that event
    starts = {
        "inactivity": t - t[since] > threshold,  # position 0 wraps, but it is a first
    }
    if rules is not None:
        starts.update(_rule_starts(keys, rules, con, by_user, t, user_start, orders))
    reason = np.full(n, -1, np.int8)
    for name in reversed(START_REASONS):  # the first reason that holds wins
        if name in starts:
            reason[starts[name]] = _CODE[name]
    reason[first] = _CODE["first_event"]
    if rules is not None and rules.max_duration_us:
        _cut(reason, t, rules.max_duration_us)
    return reason


def _rule_starts(keys: pa.Table, rules: Rules, con: duckdb.DuckDBPyConnection,
                 by_user: np.ndarray, t: np.ndarray, user_start: np.ndarray,
                 orders: _Orders | None = None) -> dict[str, np.ndarray]:
    """Per reason beyond the gap: where it holds (a user's first event aside).
    ``user_start``: per position, its user's first position; ``orders``: see
    :class:`_Orders` (needed by ``user_change``)."""
    n = len(t)
    starts: dict[str, np.ndarray] = {}
    previous = np.zeros(n, bool)  # shifted by one: the event before holds
    if rules.midnight is not None:
        starts["midnight"] = _midnights(keys, rules.midnight, con, by_user, t)
    if rules.campaign:
        starts["campaign_change"] = _changed(keys.column(f"{P}campaign"), by_user, user_start)
    if rules.start_events or rules.end_events:
        name = keys.column(f"{P}name")
        hit = np.zeros(n, bool)
        if rules.start_events:
            hit |= _in_order(_bools(pc.is_in(name, strings(list(rules.start_events)))),
                             by_user)
        if rules.end_events:
            ended = _in_order(_bools(pc.is_in(name, strings(list(rules.end_events)))),
                              by_user)
            previous[1:] = ended[:-1]
            hit |= previous
        starts["start_event"] = hit
    if rules.client_session and rules.client_session_mode == "split":  # "compare": carried only
        starts["client_session"] = _changed(keys.column(f"{P}client_session"), by_user,
                                            user_start)
    if rules.user_change:
        starts["user_change"] = _in_order(_changed_hands(keys, orders), by_user)
    return starts


def _changed_hands(keys: pa.Table, orders: _Orders) -> np.ndarray:
    """Per key position: the event's device (``__sz_device``, its anonymousId) is present
    and the device's previous event went to another resolved user: the SQL's ``LAG(user)
    OVER (PARTITION BY device ORDER BY ts_us, msg, row) <> user``. The device order is the
    time order sorted stably by device, with each run of one device's events at one
    instant put back in (messageId, row) order (the time order had them by user first)."""
    encoded = pc.dictionary_encode(keys.column(f"{P}device")).combine_chunks()
    device = dictionary_codes(encoded.indices)[orders.by_time]
    order = orders.by_time[device >= 0]  # key positions with a device, in time order
    device = device[device >= 0]
    at = _by_code(device, len(encoded.dictionary))
    order, device = order[at], device[at]
    ts = orders.ts[order]
    same = device[1:] == device[:-1]
    order = _order_ties(order, same & (ts[1:] == ts[:-1]), None, keys.column(f"{P}msg"),
                        orders.row)
    user = orders.codes[order]
    changed = np.zeros(len(orders.ts), bool)
    changed[order[1:][same & (user[1:] != user[:-1])]] = True
    return changed


def _changed(values: pa.ChunkedArray, by_user: np.ndarray, user_start: np.ndarray) -> np.ndarray:
    """Where a value (per key position) differs from its user's last present value before
    it, both present (the campaign, the client session id): the SQL's ``value <>
    LAST_VALUE(value IGNORE NULLS)`` over the rows before. Values are compared by their
    dictionary codes, equal exactly when the strings are."""
    encoded = pc.dictionary_encode(values).combine_chunks()
    code = _in_order(dictionary_codes(encoded.indices), by_user)
    last = _last_before(code >= 0)
    return (code >= 0) & (last >= user_start) & (code != code[last])


def _midnights(keys: pa.Table, zone: str, con: duckdb.DuckDBPyConnection,
               by_user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Where the local date (in ``zone``, or with ``"event"`` in each event's own zone)
    differs from the previous event's, by DuckDB's own ``timezone`` (the SQL plan's zone
    rules, DST included), over every event in (user, time) order.

    Each event's local date is computed once; the previous event's date in this event's
    zone is then the previous event's own, except where the zone changes from one event
    to the next (``"event"``), where it is computed again, for those events only."""
    zones = take(keys.column(f"{P}zone"), by_user) if zone == "event" else None
    z = "z" if zones is not None else "'" + zone.replace("'", "''") + "'"
    dates = _local_dates(con, t, zones, z)
    changed = np.zeros(len(t), bool)
    np.not_equal(dates[1:], dates[:-1], out=changed[1:])
    if zones is not None:
        encoded = pc.dictionary_encode(zones)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        code = dictionary_codes(encoded.indices)
        moved = np.flatnonzero(code[1:] != code[:-1]) + 1
        if len(moved):
            before = _local_dates(con, t[moved - 1], take(zones, moved), z)
            changed[moved] = before != dates[moved]
    return changed


def _local_dates(con: duckdb.DuckDBPyConnection, t: np.ndarray,
                 zones: pa.Array | pa.ChunkedArray | None, z: str) -> np.ndarray:
    """The local dates (days since 1970) of the instants ``t`` in zone ``z`` (a literal,
    or ``"z"``: each one's own, ``zones``), by DuckDB's ``timezone``."""
    columns = {"t": arrow(t, TS), **({"z": zones} if zones is not None else {})}
    con.register("sz_midnights", pa.table(columns))
    try:
        # a projection keeps the rows' order (DuckDB preserves insertion order)
        dates = con.sql(f"SELECT CAST(timezone({z}, t) AS DATE) AS d "
                        "FROM sz_midnights").to_arrow_table().column("d")
    finally:
        con.unregister("sz_midnights")
    return to_numpy(dates).astype(np.int64)


def _cut(reason: np.ndarray, t: np.ndarray, max_us: int) -> None:
    """Cut the sessions longer than ``max_us`` into windows of ``max_us`` from their first
    event (a window includes its end): the first event of each later window starts a
    session (``max_duration``). ``reason`` is changed in place."""
    starts = np.flatnonzero(reason >= 0)
    if not len(starts):
        return
    base = np.repeat(t[starts], np.diff(np.append(starts, len(t))))
    piece = np.where(t == base, 0, (t - base - 1) // max_us)
    cut = np.zeros(len(t), bool)
    np.not_equal(piece[1:], piece[:-1], out=cut[1:])
    reason[cut & (reason < 0)] = _CODE["max_duration"]


def _last_before(has: np.ndarray) -> np.ndarray:
    """Per position: the last position before it where ``has`` holds (-1: none)."""
    last = np.full(len(has), -1, np.int64)
    if len(has) > 1:
        last[1:] = np.maximum.accumulate(np.where(has, np.arange(len(has)), -1))[:-1]
    return last


def _bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column as numpy, nulls as false."""
    return bools(values)


def _in_order(values: np.ndarray, by_user: np.ndarray) -> np.ndarray:
    """Per-key-position ``values`` in (user, time) order."""
    return values[by_user]


def _session_keys(con: duckdb.DuckDBPyConnection, users: pa.Array, starts: np.ndarray) -> pa.Array:
    """The SQL's session key, md5(user | start) cut to 20 hex digits, by DuckDB."""
    con.register("sz_session_starts", pa.table({"u": users, "t": arrow(starts)}))
    try:
        # a projection keeps the rows' order (DuckDB preserves insertion order)
        keys = con.sql(f"SELECT substr(md5(u || '{SEPARATOR}' || CAST(t AS VARCHAR)), 1, 20) "
                       "AS k FROM sz_session_starts").to_arrow_table().column("k")
    finally:
        con.unregister("sz_session_starts")
    return keys.combine_chunks()


def _run_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """The last position of each run, given where the runs start (none when ``n == 0``)."""
    return np.append(starts[1:], n) - 1 if n else starts


def _increasing(column: pa.ChunkedArray) -> bool:
    """Whether an integer column without nulls is strictly increasing."""
    values = numpy(column)
    return bool((values[1:] > values[:-1]).all())


def _is_range(values: np.ndarray) -> bool:
    """Whether ``values`` (distinct integers) are 0, 1, ..., n - 1 in that order."""
    return not len(values) or (values[0] == 0 and values[-1] == len(values) - 1
                               and bool((values[1:] > values[:-1]).all()))


def _input_positions(rows: pa.ChunkedArray, key_rows: pa.ChunkedArray) -> np.ndarray:
    """Per key position: where its input row (``key_rows``) is in ``rows`` (the input's
    row numbers as a query returned them, each row once)."""
    rows, key_rows = numpy(rows), numpy(key_rows)
    if _is_range(rows):  # the usual case: in input order
        return key_rows
    sorter = np.argsort(rows, kind="stable")
    return sorter[np.searchsorted(rows, key_rows, sorter=sorter)]


@dataclasses.dataclass
class Columnar:
    """The columnar plan's outcome: ``sessions`` and ``users`` as Arrow, and the
    (user, time)-ordered arrays the events (:meth:`events`) and the ``assign`` stage's
    table (:meth:`assign_table`) are built from when first asked for."""

    keys: pa.Table              # the compiled keys stage, as DuckDB returned it
    by_user: np.ndarray         # key positions in (user, time, messageId, row) order
    time_order: np.ndarray | None  # key positions in (time, user, messageId, row) order
    time_at: np.ndarray | None  # per (user, time) position: its position in the time order
    codes: np.ndarray           # per key position: the user's code (its rank by name)
    names: pa.Array             # user names by code
    # in (user, time) order:
    ts: np.ndarray              # the event's time (us)
    first: np.ndarray           # the user's first event (no previous)
    reason: np.ndarray          # the start reason: its index in START_REASONS, -1 none
    session: np.ndarray         # global session index (0-based)
    session_keys: pa.Array      # per global session index
    rows_in_order: bool         # whether key positions are in input-row order (the usual)
    msg: pa.Array | pa.ChunkedArray  # per key position: the messageId (as returned)
    sessions: pa.Table
    users: pa.Table
    threads: int                # at most this many threads work at once (:func:`workers`)
    # input name -> its column in ``keys``, when the keys carry the input's columns
    inputs: dict[str, str] | None = None
    stream: Stream | None = None  # else how to read them (None: again from ``sz_input``)
    # input column -> its read through ``stream``, started while the run sorted
    reads: dict[str, Future] = dataclasses.field(default_factory=dict)

    @property
    def row(self) -> pa.ChunkedArray:
        """Per key position: the input row."""
        return self.keys.column(f"{P}row")

    @functools.cached_property
    def session_id(self) -> np.ndarray:
        """In (user, time) order: the user's session number (1-based)."""
        user_first = np.flatnonzero(self.first)
        events_of_user = np.diff(np.append(user_first, len(self.first)))
        return self.session - np.repeat(self.session[user_first], events_of_user) + 1

    @functools.cached_property
    def seq(self) -> np.ndarray:
        """In (user, time) order: the event's position in its user's order (1-based)."""
        user_first = np.flatnonzero(self.first)
        events_of_user = np.diff(np.append(user_first, len(self.first)))
        return np.arange(len(self.first)) - np.repeat(user_first, events_of_user) + 1

    @property
    def by_time(self) -> np.ndarray:
        """Key positions in (time, user, messageId, row) order (sorted now if the run did
        not need them)."""
        if self.time_order is None:
            row = None if self.rows_in_order else numpy(self.row)
            self.time_order = _time_order(numpy(self.keys.column(f"{P}ts_us")), self.codes,
                                          self.msg, row)[0]
        return self.time_order

    def by_input(self) -> np.ndarray | None:
        """Key positions in input order; ``None`` when the keys already are (the usual
        case: DuckDB keeps a projection's order)."""
        return None if self.rows_in_order else np.argsort(numpy(self.row), kind="stable")

    def input_positions(self, rows: pa.ChunkedArray) -> np.ndarray:
        """Per key position: where its input row is in ``rows`` (the input's row numbers
        as a query returned them, each row once)."""
        return _input_positions(rows, self.row)

    def positions_of_users(self, codes: list[int], limit: int) -> np.ndarray:
        """(user, time) positions of the first ``limit`` events of the users ``codes``
        (code c is the c-th user of that order), user by user."""
        starts = np.flatnonzero(self.first)
        ends = np.append(starts[1:], len(self.first))
        spans = [np.arange(starts[c], min(ends[c], starts[c] + limit)) for c in codes]
        return np.concatenate(spans) if spans else np.zeros(0, np.int64)

    def events(self, con: duckdb.DuckDBPyConnection, columns: list[tuple[str, str | None]],
               order: str = "time") -> pa.Table:
        """The events table: the input's columns (``columns``: (output name, input name or
        ``None`` for the parsed time)), then the assignment's columns; rows in time order
        (``order="time"``) or in the input's order (``"none"``: no gather at all when no
        row was quarantined). Each column is its own job, on :attr:`threads` threads."""
        where = self.by_time if order == "time" else self.by_input()
        needed = [source for _, source in columns if source is not None]
        with executor(self.threads) as pool:
            computed = pool.submit(self._in_order, where, pool)
            jobs = self._input_jobs(con, needed, where, pool)
            if where is None:  # key order: the keys' own user column is resolved_user
                user = pool.submit(self.keys.column, f"{P}user")
            else:
                user = pool.submit(take, self.names, self.codes[where])
            arrays = computed.result()
            taken = {source: job.result() for source, job in jobs.items()}  # by input name
        return pa.table({
            **{name: taken[source] if source is not None else arrays["timestamp"]
               for name, source in columns},
            "resolved_user": user.result(),
            **{name: arrays[name] for name in ("prev_timestamp", "time_since_last_event",
                                               "new_session", "session_id")},
            "session_key": arrays["session_key"].result(),
            "start_reason": arrays["start_reason"],
        })

    def close(self) -> None:
        """Cancel the input reads not started; let the one running end (it reads on a
        cursor of the run's connection, which must outlive it)."""
        _cancel(self.reads)
        self.reads = {}

    def _input_jobs(self, con: duckdb.DuckDBPyConnection, needed: list[str],
                    where: np.ndarray | None, pool: Executor) -> dict[str, Future]:
        """Per input column ``needed``: the job that gives it at key positions ``where``
        (all, in key order, when ``None``): carried by the keys, read and gathered one
        column at a time through :attr:`stream`, or read again from ``sz_input``."""
        if self.inputs is not None:
            return {c: pool.submit(_at, self.keys.column(self.inputs[c]), where)
                    for c in needed}
        if self.stream is not None:
            reads, self.reads = self.reads, {}
            positions: list[np.ndarray | None] = []  # the same for every read: once

            def read_at(source: str) -> pa.Array | pa.ChunkedArray:
                job = reads.get(source)
                data = self.stream.read([source]) if job is None else job.result()
                if not positions:
                    positions.append(self._positions(data, where))
                return _at(data.column(source), positions[0])

            in_keys = self.stream.in_keys
            return {c: pool.submit(_at, self.keys.column(in_keys[c]), where) if c in in_keys
                    else pool.submit(read_at, c) for c in needed}
        if not needed:
            return {}
        quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in needed)
        data = con.sql(f'SELECT {quoted}, "{ROW}" FROM sz_input').to_arrow_table()
        at = self._positions(data, where)
        return {c: pool.submit(_at, data.column(c), at) for c in needed}

    def _positions(self, data: pa.Table, where: np.ndarray | None) -> np.ndarray | None:
        """Where the events' rows (key positions ``where``) are in ``data`` (input columns
        with the input's row numbers, ``ROW``); ``None``: every row, in the order read."""
        at = self.input_positions(data.column(ROW))
        if where is not None:
            at = at[where]
        return None if len(at) == data.num_rows and _is_range(at) else at

    def _in_order(self, where: np.ndarray | None, pool: Executor) -> dict[str, Any]:
        """The assignment's columns of the events table at key positions ``where`` (all,
        in key order, when ``None``); the session keys' gather is a job of ``pool``."""
        if where is not None and where is self.time_order and self.time_at is not None:
            at = _inverse(self.time_at)  # time-order positions -> (user, time) positions
        else:
            at = _inverse(self.by_user)  # key positions -> (user, time) positions
            if where is not None:
                at = at[where]
        session = self.session[at]
        session_key = pool.submit(take, self.session_keys, session)
        ts = self.ts[at]
        reason = self.reason[at]
        first = reason == 0
        # the previous event's time: the one before in the (user, time) order (position
        # 0 wraps to the last, but it is a user's first event, whose previous is missing)
        prev = self.ts[at - 1]
        return {
            "timestamp": (self.keys.column(f"{P}ts") if where is None else arrow(ts, TS)),
            "prev_timestamp": arrow(prev, TS, mask=first),
            "time_since_last_event": arrow(ts - prev, pa.duration("us"), mask=first),
            "new_session": arrow(reason >= 0),
            "session_id": arrow(self.session_id[at]),
            "session_key": session_key,
            "start_reason": _REASONS.take(arrow(reason, mask=reason < 0)),
        }

    def assign_table(self, at: np.ndarray | None = None) -> pa.Table:
        """The compiled ``assign`` stage's table (its columns, in the keys' row order), or
        only its rows at (user, time) positions ``at``, in that order."""
        keys = self.keys
        if self.inputs:  # the input's columns are the events', not the stage's
            keys = keys.drop_columns(list(self.inputs.values()))
        if at is None:
            at = _inverse(self.by_user)
        else:
            keys = rows(keys, self.by_user[at])
        prev, first = self.ts[np.maximum(at - 1, 0)], self.first[at]
        reason = self.reason[at]
        main = [f"{P}{x}" for x in ("row", "user", "ts", "ts_us", "msg", "name")]
        return pa.table({
            **{c: keys.column(c) for c in main},
            f"{P}seq": arrow(self.seq[at]),
            f"{P}prev_ts": arrow(prev, TS, mask=first),
            f"{P}reason": _REASONS.take(arrow(reason, mask=reason < 0)),
            f"{P}session": arrow(self.session_id[at]),
            # dictionary-encoded: no gather of every key (DuckDB reads it as VARCHAR)
            f"{P}key": pa.DictionaryArray.from_arrays(arrow(self.session[at]),
                                                      self.session_keys),
            **{c: keys.column(c) for c in keys.column_names if c not in main},
        })


def _at(values: pa.ChunkedArray, where: np.ndarray | None) -> pa.Array | pa.ChunkedArray:
    """``values`` at positions ``where`` (``None``: as they are)."""
    return values if where is None else take(values, where)
