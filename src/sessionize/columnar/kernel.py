"""The columnar plan: the inactivity rule on Arrow arrays, from one sort by (user, time).

DuckDB still reads, parses and validates the input and resolves identities: the
compiled ``keys`` stage (the valid events' row, user, time, messageId and name, and,
with per-event gaps, each event's gap) arrives here as Arrow. This module then does
what the compiled ``assign`` stage's windows do, the way the problem's floor suggests
(``DESIGN.md`` section 4):

1. users are encoded once to integers *in their sort order* (so integer order is the
   SQL's string order);
2. for time-ordered events, where times and positions fit one 64-bit key (millisecond
   times over decades do): a sort of (time, position) values gives the time order (a
   half per core and a merge), and that order radix-sorted by user the (user, time)
   order; otherwise two stable argsorts of packed (user, time) and (time, user) keys, one
   per core; with no time order, one argsort by user, a range of users per core. Events
   at the same instant are ordered by user, then messageId (missing last), then input
   row, exactly as the SQL's ``ORDER BY``;
3. one vectorised scan of the (user, time) order gives every window: the previous
   event, the gap, the session starts and their reason, the per-user session number
   and the event's position;
4. the sessions and users tables are reductions over runs of that order; session keys
   are hashed by DuckDB (the SQL's own ``md5`` expression) for the starts only;
5. the events table is the input gathered into time order (or left in the input's
   order), built when first asked for; its input columns come with the keys when the
   engine asked for them (``inputs``), else DuckDB reads them again. Carried columns
   start their gather into time order on the other core as soon as that order is
   known, while the scan and the reductions run on this one.

It runs the rules whose boundaries are the gap alone: one gap, or a gap per event
(``gap_by``/``gaps``), with any identity policy. :func:`unsupported_rule` names the
first rule it does not run; those use the SQL plan. The tests run both plans against
the reference implementation and require identical tables.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.inputs import ROW
from ..sql.compiler import SEPARATOR, P

if TYPE_CHECKING:
    import duckdb

    from ..rules import Rules

__all__ = ["Columnar", "assign", "unsupported_rule"]

TS = pa.timestamp("us", tz="UTC")
#: From this many events on, user ids are hashed in two halves at once.
HALVES_FROM = 1_000_000


def workers(threads: int | None) -> int:
    """The threads the kernel may use: ``threads`` as the user gave it (``run(threads=)``),
    else one per core, as DuckDB's own default."""
    return max(1, int(threads)) if threads else max(1, os.cpu_count() or 1)


class _Inline(Executor):
    """An executor that runs each job at once on the calling thread (``threads=1``)."""

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


def _arrow(values: np.ndarray, type: pa.DataType | None = None,
           mask: np.ndarray | None = None) -> pa.Array:
    """A numpy array as Arrow (fixed-width types without a copy), ``mask`` marking nulls.

    ``pa.array`` would do the same, but its first call imports pandas to check the
    input's type: 0.2 s per process, a tenth of a 1M-event run.
    """
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        type = type or pa.bool_()
    else:
        data = pa.py_buffer(values)
        type = type or pa.from_numpy_dtype(values.dtype)
    validity, nulls = None, 0
    if mask is not None and mask.any():
        validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
        nulls = int(mask.sum())
    return pa.Array.from_buffers(type, len(values), [validity, data], null_count=nulls)


def _strings(values: list[str]) -> pa.Array:
    """A few Python strings as an Arrow string array (without ``pa.array``, see above)."""
    encoded = [v.encode() for v in values]
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-width Arrow array without nulls as numpy (a view; see :func:`_arrow` for
    why not ``to_numpy``, which imports pandas too). Booleans and nulls take a copy."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count or pa.types.is_boolean(values.type):
        return values.to_numpy(zero_copy_only=False)
    dtype = _numpy_dtype(values.type)
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                         offset=values.offset * dtype.itemsize)


def _numpy_dtype(type: pa.DataType) -> np.dtype:
    """The numpy type of a fixed-width Arrow type's values (temporal types: their integer
    counts). Not ``to_pandas_dtype``, which imports pandas on pyarrow before 18 or so."""
    width = type.bit_width // 8
    if pa.types.is_floating(type):
        return np.dtype(f"f{width}")
    if pa.types.is_unsigned_integer(type):
        return np.dtype(f"u{width}")
    if pa.types.is_integer(type) or pa.types.is_temporal(type):
        return np.dtype(f"i{width}")
    return np.dtype(type.to_pandas_dtype())


_REASONS = _strings(["first_event", "inactivity"])


def _validity(array: pa.Array) -> np.ndarray:
    """Which values of ``array`` are present, as numpy booleans (from its bitmap:
    ``to_numpy`` of a boolean array imports pandas)."""
    bitmap = array.buffers()[0]
    if bitmap is None:
        return np.full(len(array), array.null_count == 0)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), count=array.offset + len(array),
                         bitorder="little")
    return bits[array.offset:].view(bool)


def unsupported_rule(rules: Rules) -> str | None:
    """The first rule the columnar plan does not run (``None``: it runs them all)."""
    checks = (
        ("midnight", rules.midnight is not None),
        ("campaign", bool(rules.campaign)),
        ("start_events", bool(rules.start_events)),
        ("end_events", bool(rules.end_events)),
        ("client_session", bool(rules.client_session)),
        ("passive_events", bool(rules.passive_events)),
        ("max_duration", bool(rules.max_duration_us)),
        ("enrich", bool(rules.enrich)),
        ("first_last", bool(rules.first_last)),
        ("user_change", bool(getattr(rules, "user_change", False))),
    )
    return next((name for name, used in checks if used), None)


# -- sorting ---------------------------------------------------------------------------------
def _argsort_pair(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Stable order by (major, minor), both non-negative int64."""
    return _sort_pair(major, minor)[0]


def _sort_pair(major: np.ndarray,
               minor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable order by (major, minor), both non-negative int64, and both in that order:
    one sort of a packed key when the two fit in 64 bits (the sorted key then gives both
    with one gather, not two), else numpy's lexsort."""
    major_bits = int(major.max()).bit_length() if len(major) else 0
    minor_bits = int(minor.max()).bit_length() if len(minor) else 0
    if major_bits + minor_bits <= 64:
        key = major.astype(np.uint64)
        key <<= np.uint64(minor_bits)
        key |= minor.astype(np.uint64)
        order = np.argsort(key, kind="stable")
        key = key[order]
        low = key & np.uint64((1 << minor_bits) - 1)
        key >>= np.uint64(minor_bits)
        return order, key.view(np.int64), low.view(np.int64)
    order = np.lexsort((minor, major))
    return order, major[order], minor[order]


def _by_user(codes: np.ndarray, ts: np.ndarray, since: np.ndarray,
             msg: pa.Array | pa.ChunkedArray, row: np.ndarray | None,
             parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (user, time, messageId, row) order, and the users and times in it (see
    :func:`_order_ties`), sorted in ``parts`` ranges of users at once (one per idle
    core). Every event of a lower range sorts before every event of a higher one, no
    tie crosses a range, and within a range events keep their relative order, so the
    ranges' orders glued together are the whole order."""
    n = len(codes)
    base = ts[0] - since[0] if n else 0  # since = ts - base

    def sort(at: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if at is None:
            order, u, t = _sort_pair(codes, since)
        else:
            order, u, t = _sort_pair(codes[at], since[at])
            order = at[order]
        return _order_ties(order, u, t + base, msg, row)

    if parts < 2 or n < HALVES_FROM:
        return sort(None)
    per_user = np.cumsum(np.bincount(codes))
    cuts = np.searchsorted(per_user, [n * i / parts for i in range(1, parts)]) + 1
    bounds = [0, *sorted(set(cuts.tolist())), int(codes.max()) + 1]
    ranges = [np.flatnonzero((codes >= lo) & (codes < hi)) for lo, hi in zip(bounds, bounds[1:])]

    with ThreadPoolExecutor(len(ranges), thread_name_prefix="sessionize-kernel") as pool:
        done = list(pool.map(sort, ranges))
    order, u, t = (np.concatenate(part) for part in zip(*done))
    return order, u, t


def _order_ties(order: np.ndarray, u: np.ndarray, t: np.ndarray,
                msg: pa.Array | pa.ChunkedArray,
                row: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within runs of ``order`` with equal (user, time) (``u`` and ``t``: the users and
    times in that order), order by messageId (missing last), then input row, as the
    compiled SQL does.

    Returns the order and the users and times in it (reordering within a run of equal
    (user, time) leaves those two as they are)."""
    equal = (u[1:] == u[:-1]) & (t[1:] == t[:-1])
    return _order_runs(order, equal, msg, row), u, t


def _order_runs(order: np.ndarray, equal: np.ndarray, msg: pa.Array | pa.ChunkedArray,
                row: np.ndarray | None, codes: np.ndarray | None = None) -> np.ndarray:
    """``order`` with every run of positions tied on its sort key (``equal[i]``: position
    i + 1 ties with position i) ordered by the user's code (``codes``, per key position,
    when the sort key did not hold the user), then messageId (missing last), then input
    row (``row`` per key position; ``None``: the key positions are in input-row order).
    Runs are contiguous, so sorting the tied positions by (run, ..., row) keeps every run
    in its slots. ``order`` is reordered in place (no 10M copy) and returned."""
    slots = np.flatnonzero(equal)
    if not len(slots):
        return order
    # the tied positions: both ends of every equal pair
    tied = np.zeros(len(order), bool)
    tied[slots] = True
    tied[slots + 1] = True
    slots = np.flatnonzero(tied)
    # a run starts at a tied position not equal to the one before it
    starts_run = np.ones(len(slots), bool)
    inside = slots > 0
    starts_run[inside] = ~equal[slots[inside] - 1]
    run = np.cumsum(starts_run)
    members = order[slots]
    columns = {"run": _arrow(run)}
    if codes is not None:
        columns["user"] = _arrow(codes[members])
    columns["msg"] = _take_few(msg, members)
    columns["row"] = _arrow(members if row is None else row[members])
    by = pc.sort_indices(pa.table(columns),
                         sort_keys=[(name, "ascending", "at_end") for name in columns])
    order[slots] = members[_to_numpy(by)]
    return order


#: Units a time column may be a whole multiple of (seconds, milliseconds), which the
#: packed sort divides out so that more of its 64 bits are left for the position.
_TIME_UNITS = (1_000_000, 1_000)


def _sort_in_halves(key: np.ndarray, threads: int) -> None:
    """Sort ``key`` (uint64) in place: each half on its own core (numpy's sort of 64-bit
    keys is vectorised, about twice as fast as its argsort), then one merge of the two
    runs (the stable sort finds them)."""
    if len(key) < HALVES_FROM or threads < 2:
        key.sort()
        return
    half = len(key) // 2
    with ThreadPoolExecutor(2, thread_name_prefix="sessionize-kernel") as pool:
        list(pool.map(np.ndarray.sort, (key[:half], key[half:])))
    key.sort(kind="stable")


#: Positions are or-ed into a packed key this many at a time (a small array reused,
#: not a 10M-position one made fresh).
POSITION_BLOCK = 1 << 20


def _sort_positions(major: np.ndarray, bits: int, reuse: bool = False,
                    threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The order of ``major`` (non-negative int64) with ties in position order, as
    (positions, ``major`` in that order): a sort of values, not an argsort, of
    ``major << bits | position`` (``bits`` must hold every position, and the key 64 bits).
    ``reuse``: the key is built in ``major``'s own memory, which the caller gives up
    (no 10M copy)."""
    key = major.view(np.uint64) if reuse else major.astype(np.uint64)
    key <<= np.uint64(bits)
    for part, positions in _position_blocks(len(key)):
        key[part] |= positions.view(np.uint64)
    _sort_in_halves(key, threads)
    positions = (key & np.uint64((1 << bits) - 1)).view(np.int64)
    key >>= np.uint64(bits)
    return positions, key.view(np.int64)


def _time_then_user(codes: np.ndarray, ts: np.ndarray, msg: pa.Array | pa.ChunkedArray,
                    row: np.ndarray | None, threads: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, TimeView] | None:
    """Both orders from two sorts, when the times and the positions fit one 64-bit key
    (``None`` when they do not):

    1. a sort of (time, position) values on both cores, then ties on the time put in
       (user, messageId, row) order: the time order, (time, user, messageId, row);
    2. that order sorted by user, ties kept in it (a radix sort of the users' codes,
       :func:`_by_code`): (user, time, messageId, row), the user order, with no tie of
       its own left to fix.

    Returns the time order, the user order, the users and times in the user order, and
    what the sorts leave of the time order (:class:`TimeView`), which the events table's
    columns would otherwise gather again. Times are divided by the largest of
    :data:`_TIME_UNITS` that divides them all first (millisecond times in microseconds:
    ten bits fewer)."""
    n = len(ts)
    if n < 2:
        return None
    base = int(ts.min())
    since = ts - base
    unit = _unit(since)
    if unit > 1:
        since //= unit
    bits = (n - 1).bit_length()
    users = int(codes.max()) + 1
    if int(since.max()).bit_length() + bits > 64 or (users - 1).bit_length() + bits > 64:
        return None
    by_time, t = _sort_positions(since, bits, reuse=True, threads=threads)
    by_time = _order_runs(by_time, t[1:] == t[:-1], msg, row, codes)
    codes_by_time = codes[by_time]
    at, u = _by_code(codes_by_time, users)
    by_user = by_time[at]
    if unit > 1:
        t *= unit
    t += base  # the times in time order (ties reordered among themselves: the same times)
    return by_time, by_user, u, t[at], TimeView(codes_by_time, t, at)


#: Digits of the radix sort by user code: numpy's stable argsort of 8- and 16-bit integers
#: is a radix sort (one or two linear passes), not a comparison sort.
_DIGIT_BITS = 16


def _by_code(codes: np.ndarray, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``codes`` (users' codes, 0 <= code < ``users``) in code order, ties in
    position order, and the codes in that order: a least-significant-digit radix sort,
    one stable argsort per 16-bit digit (8-bit for a last digit that fits), on one core
    (10M events of 438K users: about 0.35 s, against 0.45 s on both cores for a sort of
    packed (code, position) values). The codes in order are each code repeated as often
    as it occurs, written in one pass rather than gathered."""
    order = None
    for shift in range(0, max(users - 1, 1).bit_length(), _DIGIT_BITS):
        digit = (codes if order is None else codes[order]) >> shift
        left = (users - 1) >> shift
        digit = digit.astype(np.uint8 if left < 256 else np.uint16)  # keeps the low bits
        step = np.argsort(digit, kind="stable")
        order = step if order is None else order[step]
    counts = np.bincount(codes, minlength=users)
    return order, np.repeat(np.arange(users, dtype=np.int64), counts)


def _unit(since: np.ndarray) -> int:
    """The largest of :data:`_TIME_UNITS` that divides every value of ``since`` (1 when
    none does), judged on a sample first: a unit the sample rules out costs no pass over
    every value (10M: 0.1 s each)."""
    sample = since[::max(len(since) // 4096, 1)]
    return next((u for u in _TIME_UNITS if not (sample % u).any() and not (since % u).any()),
                1)


def _position_blocks(n: int) -> Iterator[tuple[slice, np.ndarray]]:
    """The positions 0..n-1, :data:`POSITION_BLOCK` at a time: (the block's slice, its
    positions as int64), all in one small array reused, not a fresh one of every
    position."""
    block = np.arange(min(n, POSITION_BLOCK), dtype=np.int64)
    for start in range(0, n, POSITION_BLOCK):
        end = min(start + POSITION_BLOCK, n)
        yield slice(start, end), block[:end - start]
        block += POSITION_BLOCK


def _inverse(order: np.ndarray) -> np.ndarray:
    """The inverse of the permutation ``order``, scattered a block of positions at a time
    (:func:`_position_blocks`)."""
    inverse = np.empty(len(order), np.int64)
    for part, positions in _position_blocks(len(order)):
        inverse[order[part]] = positions
    return inverse


@dataclasses.dataclass
class TimeView:
    """What the time-then-user sorts leave of the time order: per time-order position,
    the user's code and the time; and ``at``, per (user, time) position, its position in
    the time order. The events table's columns in time order start from these rather
    than gather them again (three random gathers of 10M values, about 0.35 s)."""

    codes: np.ndarray
    ts: np.ndarray
    at: np.ndarray

    def user_positions(self) -> np.ndarray:
        """Per time-order position: its (user, time) position (``at`` inverted)."""
        return _inverse(self.at)


def _encode_users(user: pa.ChunkedArray, halves: bool = True,
                  threads: int = 2) -> tuple[np.ndarray, pa.Array]:
    """Integer codes whose order is the strings' (byte-wise) order, and the sorted names.

    Large inputs are hashed in two halves at once (one per core), then the halves'
    dictionaries (a few hundred thousand names, not millions of rows) are merged; with
    ``halves=False`` (the other core has work of its own) in one pass, which is less work
    in all (10M events: 1.35 s on one core, against 0.84 s on two and 0.45 s to merge)."""
    split = halves and len(user) >= HALVES_FROM and threads > 1
    parts = _halves(user) if split else [user]
    with executor(len(parts)) as pool:
        encoded = list(pool.map(lambda part: pc.dictionary_encode(part).combine_chunks(),
                                parts))
    if len(encoded) == 1:
        names, local = encoded[0].dictionary, [np.arange(len(encoded[0].dictionary))]
    else:  # one dictionary for both halves: where each half's names are in it
        both = pc.dictionary_encode(pa.concat_arrays([e.dictionary for e in encoded]))
        names, at = both.dictionary, _to_numpy(both.indices)
        first = len(encoded[0].dictionary)
        local = [at[:first], at[first:]]
    by_name = _to_numpy(pc.sort_indices(names))
    rank = np.empty(len(names), np.int64)
    rank[by_name] = np.arange(len(names))
    codes = np.empty(len(user), np.int64)  # each half's codes gathered straight into it
    done = 0
    for m, e in zip(local, encoded):
        np.take(rank[m], _to_numpy(e.indices), out=codes[done:done + len(e)],
                mode="clip")  # "raise" would write a whole copy first
        done += len(e)
    return codes, names.take(_arrow(by_name))


def _halves(column: pa.ChunkedArray) -> list[pa.ChunkedArray]:
    """The column cut into two runs of whole chunks of about equal length (or one)."""
    lengths = np.cumsum([len(c) for c in column.chunks])
    cut = int(np.searchsorted(lengths, len(column) / 2)) + 1
    if cut >= column.num_chunks:
        return [column]
    return [pa.chunked_array(column.chunks[:cut], column.type),
            pa.chunked_array(column.chunks[cut:], column.type)]


def _combined(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """One array instead of many chunks where the offsets allow (strings over 2 GiB do
    not fit one ``string`` array): a gather from one array is several times faster."""
    try:
        return column.combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        return column


Gather = Callable[[np.ndarray], "pa.Array | pa.ChunkedArray"]


def _take(values: pa.Array | pa.ChunkedArray, indices: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``values`` at ``indices`` (int64 numpy)."""
    return _gatherer(values, len(indices))(indices)


def _gatherer(values: pa.Array | pa.ChunkedArray, size: int, *, copy_now: bool = True) -> Gather:
    """The gather of ``values`` at ``size`` indices, as a function of the indices, with
    the part that does not depend on them done now: the column's fixed-width rows
    (:func:`_fixed_width_gatherer`), its dictionary (:func:`_dictionary_gatherer`), its
    fields' (:func:`_struct_gatherer`), or its chunks joined for Arrow's take. A run
    prepares the input's columns this way while it still sorts (:func:`_prepare_early`),
    with ``copy_now=False``: a fixed-width column's rows are then copied when it is
    gathered, not held beside the column meanwhile (at 10M events, 0.8 GB more at the
    peak, which cost more than the copies saved)."""
    gather = _fixed_width_gatherer(values, size, copy_now=copy_now)
    if gather is None:
        gather = _dictionary_gatherer(values, size)
    if gather is None:
        gather = _struct_gatherer(values, size, copy_now=copy_now)
    if gather is not None:
        return gather
    if isinstance(values, pa.ChunkedArray):
        values = _combined(values)
    return lambda indices: values.take(_arrow(indices))


def _take_few(values: pa.Array | pa.ChunkedArray, indices: np.ndarray) -> pa.Array:
    """``values`` at a few ``indices`` (int64 numpy), taken chunk by chunk: a take from a
    many-chunked column first joins its chunks (10M UUIDs: 0.2 s), when only the chunks'
    own values are needed (500K tied messageIds: 0.05 s)."""
    if not isinstance(values, pa.ChunkedArray):
        return values.take(_arrow(indices))
    if values.num_chunks == 1:
        return values.chunk(0).take(_arrow(indices))
    starts = np.cumsum([0, *(len(c) for c in values.chunks)])
    # the indices grouped by chunk: a radix sort of small chunk numbers, not a sort of
    # the indices themselves
    chunk_of = np.searchsorted(starts, indices, side="right") - 1
    if values.num_chunks <= np.iinfo(np.int16).max:
        chunk_of = chunk_of.astype(np.int16)
    by_index = np.argsort(chunk_of, kind="stable")
    ordered = indices[by_index]
    cuts = np.concatenate([[0], np.cumsum(np.bincount(chunk_of, minlength=values.num_chunks))])
    parts = [chunk.take(_arrow(ordered[lo:hi] - start))
             for chunk, start, lo, hi in zip(values.chunks, starts, cuts, cuts[1:]) if hi > lo]
    taken = pa.concat_arrays(parts) if parts else pa.array([], values.type)
    back = np.empty(len(indices), np.int64)
    back[by_index] = np.arange(len(indices))
    return taken.take(_arrow(back))


#: Strings up to this many bytes, all of one length, are gathered as fixed-width rows.
FIXED_WIDTH_MAX = 64


def _fixed_width_gatherer(values: pa.Array | pa.ChunkedArray, size: int, *,
                          copy_now: bool = True) -> Gather | None:
    """The gather (at ``size`` indices) of a string column whose values all have one
    length (UUIDs, hashed ids: most id columns), as numpy rows of that width: one
    ``np.take`` of fixed-size rows instead of Arrow's per-value copy (10M UUIDs: 0.3 s,
    not 1.6 s; 10M twelve-character userIds, a fifth missing: 0.15 s, not 0.75 s).

    Missing values may be empty (as Arrow writes them) or of that width; a missing
    value's slot in the result holds some row's bytes (Arrow leaves a null slot's
    bytes undefined) and the validity bitmap marks it. ``None`` when the column is not
    like that. Its rows (one array of the column's values, joined from its chunks) are
    made now, or with ``copy_now=False`` when it gathers."""
    if values.type not in (pa.string(), pa.binary(), pa.large_string(), pa.large_binary()):
        return None
    chunks = [c for c in (values.chunks if isinstance(values, pa.ChunkedArray) else [values])
              if len(c)]
    if not chunks or values.null_count == len(values):
        return None
    wide = values.type in (pa.large_string(), pa.large_binary())
    offset_type = np.int64 if wide else np.int32
    seen = []  # per chunk: its offsets, lengths and validity (None: no nulls)
    width = None
    for chunk in chunks:
        offsets = np.frombuffer(chunk.buffers()[1], offset_type, len(chunk) + 1,
                                chunk.offset * np.dtype(offset_type).itemsize)
        lengths = np.diff(offsets)
        is_valid = _validity(chunk) if chunk.null_count else None
        present = lengths if is_valid is None else lengths[is_valid]
        if len(present):
            width = int(present[0]) if width is None else width
            if not 0 < width <= FIXED_WIDTH_MAX or (present != width).any():
                return None
        seen.append((chunk, offsets, lengths, is_valid))
    if not wide and size * width >= 2**31:
        return None
    for _, _, lengths, is_valid in seen:
        if is_valid is not None and ((lengths != 0) & (lengths != width)).any():
            return None  # a missing value of another length
    if not copy_now:
        return lambda indices: _take_rows(values.type, *_fixed_width_rows(values, seen, width),
                                          width, offset_type, indices)
    return functools.partial(_take_rows, values.type, *_fixed_width_rows(values, seen, width),
                             width, offset_type)


def _fixed_width_rows(values: pa.Array | pa.ChunkedArray, seen: list[tuple], width: int
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of :func:`_fixed_width_gatherer` and the values' validity (``None``: all
    present), from its chunks (``seen``: each with its offsets, lengths and validity)."""
    # one row of that width per value, missing ones included (zeros where empty); one
    # chunk with no missing value already is that, in place
    filled = len(seen) == 1 and seen[0][3] is None
    rows = None if filled else np.empty((len(values), width), np.uint8)
    valid = np.ones(len(values), bool) if values.null_count else None
    done = 0
    for chunk, offsets, lengths, is_valid in seen:
        data = chunk.buffers()[2]
        data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        data = data[offsets[0]:offsets[-1]].reshape(-1, width)
        if filled:
            rows = data
            break
        here = rows[done:done + len(chunk)]
        if len(data) == len(chunk):  # every value, missing ones too, has that width
            here[:] = data
        elif not len(data):
            here[:] = 0
        else:  # an empty missing value repeats the row before it (or the first)
            before = np.cumsum(lengths != 0)
            before -= 1
            np.maximum(before, 0, out=before)
            np.take(data, before, axis=0, out=here, mode="clip")
        if is_valid is not None:
            valid[done:done + len(chunk)] = is_valid
        done += len(chunk)
    return rows, valid


def _take_rows(string_type: pa.DataType, rows: np.ndarray, valid: np.ndarray | None,
               width: int, offset_type: Any, indices: np.ndarray) -> pa.Array:
    """The strings of ``string_type`` at ``indices`` of ``rows`` (one value of ``width`` bytes
    per row, ``valid`` marking those present, ``None``: all)."""
    validity, nulls = None, 0
    if valid is not None:
        taken_valid = valid[indices]
        nulls = len(indices) - int(np.count_nonzero(taken_valid))
        validity = pa.py_buffer(np.packbits(taken_valid, bitorder="little")) if nulls else None
    out = np.take(rows, indices, axis=0)
    offsets = np.arange(0, (len(indices) + 1) * width, width, dtype=offset_type)
    return pa.Array.from_buffers(string_type, len(indices),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(out)],
                                 null_count=nulls)


#: A string column is gathered through a dictionary when DISTINCT_PROBE of its values (in
#: eight runs across it) have at most FEW_DISTINCT distinct ones, and the gather has at
#: least DICTIONARY_FROM values.
FEW_DISTINCT = 1024
DISTINCT_PROBE = 65_536
DICTIONARY_FROM = 100_000


def _dictionary_gatherer(values: pa.Array | pa.ChunkedArray, size: int) -> Gather | None:
    """The gather (at ``size`` indices) of a string column with few distinct values
    (types, event names), as small integers: the column is dictionary-encoded (one
    pass, in order), the codes are gathered, and the strings are read back from a
    dictionary that stays in cache, where Arrow's per-value gather reads strings all over
    the column (10M event names: 0.45 s, not 0.9-1.1 s). ``None`` when the column is not
    like that, judged by a sample. The encoding is made now."""
    if (values.type not in (pa.string(), pa.large_string()) or size < DICTIONARY_FROM
            or not len(values)):
        return None
    step = max(len(values) // 8, 1)  # eight runs across the column (it may be sorted)
    probe = [values.slice(start, DISTINCT_PROBE // 8) for start in range(0, len(values), step)]
    distinct = pc.count_distinct(pa.chunked_array(
        [c for part in probe for c in (part.chunks if isinstance(part, pa.ChunkedArray)
                                       else [part])], values.type), mode="all")
    if distinct.as_py() > FEW_DISTINCT:
        return None
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return lambda indices: encoded.dictionary.take(encoded.indices.take(_arrow(indices)))


def _struct_gatherer(values: pa.Array | pa.ChunkedArray, size: int, *,
                     copy_now: bool = True) -> Gather | None:
    """The gather (at ``size`` indices) of a struct column (Segment's ``context``) field by
    field, each with its own :func:`_gatherer` (a library name: its dictionary), and the
    struct's own nulls gathered as a mask. ``None`` for other columns and small gathers,
    which Arrow's take does as fast."""
    if not pa.types.is_struct(values.type) or size < DICTIONARY_FROM:
        return None
    if isinstance(values, pa.ChunkedArray):
        values = _combined(values)
        if isinstance(values, pa.ChunkedArray):  # too large for one array
            return None
    fields = [_gatherer(values.field(i), size, copy_now=copy_now)
              for i in range(values.type.num_fields)]
    is_null = _to_numpy(values.is_null()) if values.null_count else None
    struct_type = values.type

    def gather(indices: np.ndarray) -> pa.Array:
        taken = [field(indices) for field in fields]
        return pa.StructArray.from_arrays(
            [f.combine_chunks() if isinstance(f, pa.ChunkedArray) else f for f in taken],
            fields=list(struct_type), mask=None if is_null is None else _arrow(is_null[indices]))
    return gather


def _rows(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The rows of ``table`` at ``positions``. A few rows are sliced out one by one:
    ``take`` on a many-chunked table first joins each column's chunks."""
    if len(positions) > 4096:
        return table.take(_arrow(positions))
    if not len(positions):
        return table.slice(0, 0)
    return pa.concat_tables([table.slice(int(p), 1) for p in positions]).combine_chunks()


def _increasing(column: pa.ChunkedArray) -> bool:
    """Whether an integer column without nulls is strictly increasing (chunk by chunk, no
    copy of it)."""
    last = None
    for chunk in column.chunks:
        values = _to_numpy(chunk.cast(pa.int64()))
        if not len(values):
            continue
        if (last is not None and values[0] <= last) or not bool((values[1:] > values[:-1]).all()):
            return False
        last = values[-1]
    return True


def _input_positions(rows: pa.ChunkedArray, key_rows: pa.ChunkedArray) -> np.ndarray:
    """Per key position: where its input row (``key_rows``) is in ``rows`` (the input's
    row numbers as a query returned them, each row once)."""
    rows = _numpy(rows)
    key_rows = _numpy(key_rows)
    if np.array_equal(rows, np.arange(len(rows))):  # the usual case: in input order
        return key_rows
    sorter = np.argsort(rows, kind="stable")
    return sorter[np.searchsorted(rows, key_rows, sorter=sorter)]


def _run_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """The last position of each run, given where the runs start (none when ``n == 0``)."""
    return np.append(starts[1:], n) - 1 if n else starts


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """An integer or timestamp column as int64 numpy."""
    return _to_numpy(column.combine_chunks().cast(pa.int64()))


# -- the assignment ----------------------------------------------------------------------------
@dataclasses.dataclass
class Stream:
    """The input's columns a time-ordered events table shows, read from the input one at
    a time while the run sorts, each prepared for its gather and let go at once, then
    gathered into time order (:func:`_stream_early`), instead of carried by the keys
    (which hold every column until the last is gathered: the input's batches are freed
    whole)."""

    sources: list[str]                     # the input's columns, by name
    # the input's columns named, then its row numbers (``ROW``), every input row in the
    # input's order; safe to call from any thread
    read: Callable[[list[str]], pa.Table]
    # input column -> the keys' column holding its very values (the messageId as
    # ``__sz_msg``): gathered from there, not read again
    in_keys: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Columnar:
    """The columnar plan's outcome: ``sessions`` and ``users`` as Arrow, and the
    (user, time)-ordered arrays the events (:meth:`events`) and the ``assign`` stage's
    table (:meth:`assign_table`) are built from when first asked for."""

    keys: pa.Table              # the compiled keys stage, as DuckDB returned it
    by_user: np.ndarray         # key positions in (user, time, messageId, row) order
    time_order: Future | None   # of key positions in (time, user, messageId, row) order
    codes: np.ndarray           # per key position: the user's code (its rank by name)
    names: pa.Array             # user names by code
    # in (user, time) order:
    ts: np.ndarray              # the event's time (us)
    first: np.ndarray           # the user's first event (no previous)
    reason: np.ndarray          # -1 none, 0 first_event, 1 inactivity
    session: np.ndarray         # global session index (0-based)
    session_keys: pa.Array      # per global session index
    row: pa.ChunkedArray        # per key position: the input row (the keys' column)
    rows_in_order: bool         # whether key positions are in input-row order (the usual)
    msg: pa.Array | pa.ChunkedArray  # per key position: the messageId (as returned)
    sessions: pa.Table
    users: pa.Table
    threads: int                # at most this many threads work at once (see :func:`assign`)
    # input name -> its column in ``keys``, when the keys query carried the input's
    # columns (None: :meth:`events` reads them from the input)
    inputs: dict[str, str] | None = None
    # column of ``keys`` -> its gather into time order, started while the run finished
    # (see :func:`_gather_early`)
    early: dict[str, Future] | None = None
    # column of ``keys`` -> its gather's order-free part, made while the run sorted
    # (see :func:`_prepare_early`)
    prepared: dict[str, Future] | None = None
    # what the time-then-user sorts left of the time order, until the events use it
    time_view: TimeView | None = None
    # input column -> (its gather into time order, started when the time order was
    # known, and the job itself, to run elsewhere if it has not started; see
    # :func:`_stream_early`)
    streamed: dict[str, tuple[Future, Callable[[], Any]]] | None = None
    # the input's columns being read for those gathers (see :func:`_stream_early`)
    reads: _StreamReads | None = None

    @functools.cached_property
    def session_id(self) -> np.ndarray:
        """In (user, time) order: the user's session number (1-based). Only the
        ``assign`` stage's table needs it for every event, so it is made when asked."""
        user_first = np.flatnonzero(self.first)
        events_of_user = np.diff(np.append(user_first, len(self.first)))
        return self.session - np.repeat(self.session[user_first], events_of_user) + 1

    @functools.cached_property
    def seq(self) -> np.ndarray:
        """In (user, time) order: the event's position in its user's order (1-based)."""
        user_first = np.flatnonzero(self.first)
        events_of_user = np.diff(np.append(user_first, len(self.first)))
        return np.arange(len(self.first)) - np.repeat(user_first, events_of_user) + 1

    def _user_positions(self) -> np.ndarray:
        """Per key position: its position in the (user, time) order (by_user inverted)."""
        return _inverse(self.by_user)

    def _previous(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(previous event's time, no-previous mask) at (user, time) positions ``at``."""
        return self.ts[np.maximum(at - 1, 0)], self.first[at]

    @property
    def by_time(self) -> np.ndarray:
        """Key positions in (time, user, messageId, row) order (sorted in the background
        when the run asked for time-ordered events, else now)."""
        if self.time_order is None:
            self.time_order = _done(_time_order(self.codes, _numpy(self.keys.column(f"{P}ts_us")),
                                                self.msg,
                                                None if self.rows_in_order else _numpy(self.row)))
        return self.time_order.result()

    def by_input(self) -> np.ndarray | None:
        """Key positions in input order; ``None`` when the keys already are (the usual
        case: DuckDB keeps a projection's order)."""
        return None if self.rows_in_order else np.argsort(_numpy(self.row), kind="stable")

    def input_positions(self, rows: pa.ChunkedArray) -> np.ndarray:
        """Per key position: where its input row is in ``rows`` (the input's row numbers
        as a query returned them, each row once)."""
        return _input_positions(rows, self.keys.column(f"{P}row"))

    def positions_of_users(self, codes: list[int], limit: int) -> np.ndarray:
        """(user, time) positions of the first ``limit`` events of the users ``codes``
        (code c is the c-th user of that order), user by user."""
        starts = np.flatnonzero(self.first)
        ends = np.append(starts[1:], len(self.first))
        spans = [np.arange(starts[c], min(ends[c], starts[c] + limit)) for c in codes]
        return np.concatenate(spans) if spans else np.zeros(0, np.int64)

    def events(self, con: duckdb.DuckDBPyConnection, columns: list[tuple[str, str]],
               order: str = "time") -> pa.Table:
        """The events table: the input's columns (``columns``: (output name, input name or
        ``None`` for the parsed time)), then the assignment's columns; rows in time order
        (``order="time"``) or in the input's order (``"none"``: no gather at all when no
        row was quarantined).

        The gathers and the assignment's own columns are independent jobs, run on every
        core at once; input columns whose gather the run started early
        (:func:`_gather_early`) are taken from there."""
        where = self.by_time if order == "time" else self.by_input()
        needed = [source for _, source in columns if source is not None]
        with executor(self.threads) as pool:
            view = self.time_view if order == "time" else None
            self.time_view = None
            computed = pool.submit(self._in_order, where, pool.submit, view)
            jobs: dict[str, Future] = {}
            early, self.early = self.early or {}, None
            prepared, self.prepared = self.prepared or {}, None

            def gather(key: str, values: Any, at: np.ndarray) -> Future:
                """The early gather ``key`` if it started (or ended), else a new one, from
                its prepared part if that started."""
                job = early.get(key)
                if job is not None and not job.cancel():
                    return job
                ready = prepared.get(key)
                if ready is not None and not ready.cancel():
                    return pool.submit(lambda: ready.result()(at))
                return pool.submit(_take, values, at)

            if where is None:  # key order: the keys' own user column is resolved_user
                jobs["resolved_user"] = _done(self.keys.column(f"{P}user"))
            else:
                codes = view.codes if view is not None else self.codes[where]
                jobs["resolved_user"] = gather(f"{P}user", self.names, codes)
            streamed, self.streamed = self.streamed or {}, None
            if needed and order == "time" and all(c in streamed for c in needed):
                for name, source in columns:
                    if source is not None:
                        job, work = streamed.pop(source)
                        # not started yet (the background thread is still busy): run
                        # it on the pool now rather than wait behind the other gathers
                        jobs[name] = pool.submit(work) if job.cancel() else job
            elif needed:
                read, take_index = self._input_columns(con, needed, where)
                carried = self.inputs or {}
                for name, source in columns:
                    if source is None:
                        continue
                    jobs[name] = (_done(read[source]) if take_index is None  # as read
                                  else gather(carried.get(source, ""), read[source], take_index))
            arrays, jobs["session_key"] = computed.result()
            taken = {name: job.result() for name, job in jobs.items()}
        ordered: dict[str, Any] = {}
        for name, source in columns:
            ordered[name] = taken[name] if source is not None else arrays.pop("timestamp")
        return pa.table({**ordered, "resolved_user": taken["resolved_user"],
                         **{name: arrays[name] for name in ("prev_timestamp",
                            "time_since_last_event", "new_session", "session_id")},
                         "session_key": taken["session_key"],
                         "start_reason": arrays["start_reason"]})

    def close(self) -> None:
        """Cancel the early gathers not yet started (a run whose events were not read)."""
        for job in [*(self.early or {}).values(), *(self.prepared or {}).values()]:
            job.cancel()
        streamed = [job for job, _ in (self.streamed or {}).values()]
        for job in streamed:
            job.cancel()
        for job in streamed:  # one may be reading the input: let it end before it closes
            if not job.cancelled():
                job.exception()
        if self.reads is not None:
            self.reads.cancel()
        self.early = self.prepared = self.streamed = self.reads = None
        self.time_view = None

    def _input_columns(self, con: duckdb.DuckDBPyConnection, needed: list[str],
                       where: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray | None]:
        """The input's columns ``needed`` and where the events' rows are in them (``None``:
        every row, in the order read): carried by the keys (in key order), else read
        from the input again."""
        if self.inputs is not None:
            return {c: self.keys.column(self.inputs[c]) for c in needed}, where
        quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in needed)
        data = con.sql(f'SELECT {quoted}, "{ROW}" FROM sz_input').to_arrow_table()
        take_index = self.input_positions(data.column(ROW))
        if where is not None:
            take_index = take_index[where]
        if len(take_index) == data.num_rows and bool(
                (take_index == np.arange(len(take_index))).all()):
            take_index = None
        return {c: data.column(c) for c in needed}, take_index

    def _in_order(self, where: np.ndarray | None, submit: Callable[..., Future],
                  view: TimeView | None = None) -> tuple[dict[str, pa.Array], Future]:
        """The assignment's columns of the events table at key positions ``where`` (all,
        in key order, when ``None``), and the job (started with ``submit`` as soon as
        the events' sessions are known) that gathers their session keys.

        Three random gathers from the (user, time) order, not one per column: the previous
        event's time, the session index and the start reason (one byte, from an array that
        mostly stays in cache); the session number is then the index less the user's
        first (a gather from a table of users, which stays in cache), subtracted in place.
        (Packing the index and the reason into one integer for one gather took longer:
        10M events, 0.22 s against 0.17 s.) In time order (``where`` is :attr:`by_time`)
        the sorts' ``view`` gives the users, the times and the (user, time) positions."""
        if view is not None:
            at, codes = view.user_positions(), view.codes
        else:
            at = self._user_positions()  # key positions -> (user, time) positions
            codes = self.codes
            if where is not None:
                at = at[where]
                codes = codes[where]
        session = self.session[at]
        session_key = submit(_take, self.session_keys, session)
        if where is None:  # key order: the keys' own times, read in order
            ts = _numpy(self.keys.column(f"{P}ts_us"))
            timestamp = self.keys.column(f"{P}ts")
        else:
            ts = view.ts if view is not None else self.ts[at]
            timestamp = _arrow(ts, TS)
        reason = self.reason[at]
        first = reason == 0
        # the previous event's time: the one before in the (user, time) order (``at``,
        # which is this call's own, is shifted in place; position 0, which wraps to the
        # last, is a user's first event, whose previous time is missing)
        at -= 1
        prev = self.ts[at]
        # the session number, in ``at``'s memory (no longer needed): the session index
        # less the user's first less one (users by code)
        user_first = np.flatnonzero(self.first)  # by code: the user's first position
        session_id = np.take(self.session[user_first] - 1, codes, out=at, mode="clip")
        np.subtract(session, session_id, out=session_id)
        return {
            "timestamp": timestamp,
            "prev_timestamp": _arrow(prev, TS, mask=first),
            "time_since_last_event": _arrow(ts - prev, pa.duration("us"), mask=first),
            "new_session": _arrow(reason >= 0),
            "session_id": _arrow(session_id),
            "start_reason": _REASONS.take(_arrow(reason, mask=reason < 0)),
        }, session_key

    def assign_table(self, at: np.ndarray | None = None) -> pa.Table:
        """The compiled ``assign`` stage's table (its columns, in the keys' row order), or
        only its rows at (user, time) positions ``at``, in that order."""
        keys = self.keys
        if self.inputs:  # the input's columns are the events', not the stage's
            keys = keys.drop_columns(list(self.inputs.values()))
        if at is None:
            at = self._user_positions()
        else:
            keys = _rows(keys, self.by_user[at])
        prev, first = self._previous(at)
        reason = self.reason[at]
        main = {f"{P}{x}" for x in ("row", "user", "ts", "ts_us", "msg", "name")}
        return pa.table({
            **{f"{P}{x}": keys.column(f"{P}{x}") for x in ("row", "user", "ts", "ts_us", "msg",
                                                           "name")},
            f"{P}seq": _arrow(self.seq[at]),
            f"{P}prev_ts": _arrow(prev, TS, mask=first),
            f"{P}reason": _REASONS.take(_arrow(reason, mask=reason < 0)),
            f"{P}session": _arrow(self.session_id[at]),
            # dictionary-encoded: no 10M-string gather (DuckDB reads it as VARCHAR)
            f"{P}key": pa.DictionaryArray.from_arrays(_arrow(self.session[at]),
                                                      self.session_keys),
            **{c: keys.column(c) for c in keys.column_names if c not in main},
        })


def assign(keys: pa.Table, *, gap_us: int, per_event_gap: bool,
           con: duckdb.DuckDBPyConnection, time_order: bool = True,
           inputs: dict[str, str] | None = None, stream: Stream | None = None,
           threads: int | None = None) -> Columnar:
    """Assign sessions to the events of ``keys`` (the compiled ``keys`` stage as Arrow).
    ``time_order``: sort the events' time order too (for time-ordered events).
    ``inputs``: input name -> its column in ``keys``, when the keys carry the input's
    columns for the events table. ``stream``: the input's columns to read and gather
    into time order (with ``time_order``, instead of ``inputs``): read at once, gathered
    as soon as the time order is known. ``threads``: at most this many threads work at
    once (``None``: one per core); with one, everything runs on the calling thread."""
    threads = workers(threads)
    # the input rows break the last ties; where the keys are in row order (DuckDB keeps a
    # projection's order), their positions do that, and the rows are never converted
    rows_in_order = _increasing(keys.column(f"{P}row"))
    background = prepared = name_job = reads = None
    if time_order and (inputs or stream) and threads > 1:
        background, prepared = _prepare_early(keys, inputs or {})
        name_job = prepared.pop(f"{P}name")
        if stream is not None:
            reads = _stream_early(background, stream, keys, rows_in_order)
    try:
        return _assign(keys, gap_us, per_event_gap, con, time_order, inputs, rows_in_order,
                       background, prepared, name_job, reads, threads)
    except BaseException:
        if reads is not None:  # the input is not read after the run has failed
            reads.cancel()
        raise


def _assign(keys: pa.Table, gap_us: int, per_event_gap: bool, con: duckdb.DuckDBPyConnection,
            time_order: bool, inputs: dict[str, str] | None, rows_in_order: bool,
            background: ThreadPoolExecutor | None, prepared: dict[str, Future] | None,
            name_job: Future | None, reads: _StreamReads | None, threads: int) -> Columnar:
    """:func:`assign`, once the background thread has its jobs."""
    n = keys.num_rows
    # the background thread reading or preparing the input's columns keeps the other core
    codes, names = _encode_users(keys.column(f"{P}user"), halves=background is None,
                                 threads=threads)
    ts = _numpy(keys.column(f"{P}ts_us"))
    row = None if rows_in_order else _numpy(keys.column(f"{P}row"))
    msg = keys.column(f"{P}msg")  # as returned: only tied events' are read
    # The time order is only needed for the events table. Where the packed keys fit, the
    # user order is the time order sorted by user; else the time order is sorted on the
    # other core while this one sorts by user and runs the scan.
    by_time = None
    both = _time_then_user(codes, ts, msg, row, threads) if time_order else None
    early = view = streamed = None
    if both is not None:
        time_positions, by_user, u, t, view = both
        by_time = _done(time_positions)
        if reads is not None:
            streamed = reads.gathers(time_positions)
        if background is not None:
            early = _gather_early(background, prepared, time_positions, names, view.codes)
    else:
        if time_order and threads == 1:
            by_time = _done(_time_order(codes, ts, msg, row))
        elif time_order:
            sorter = ThreadPoolExecutor(1, thread_name_prefix="sessionize-kernel")
            by_time = sorter.submit(_time_order, codes, ts, msg, row)
            sorter.shutdown(wait=False)
            if reads is not None:  # gathered when that sort ends
                streamed = reads.gathers(by_time)
        # with no time order to sort, both cores sort by user
        since = ts - (ts.min() if n else 0)
        by_user, u, t = _by_user(codes, ts, since, msg, row, 1 if time_order else threads)

    # one scan of the (user, time) order gives every window
    first = np.ones(n, bool)
    np.not_equal(u[1:], u[:-1], out=first[1:])
    gap = np.zeros(n, np.int64)
    np.subtract(t[1:], t[:-1], out=gap[1:])
    if per_event_gap:  # the gap in force is the previous event's
        threshold = np.zeros(n, np.int64)
        threshold[1:] = _numpy(keys.column(f"{P}gap_us"))[by_user][:-1]
    else:
        threshold = gap_us
    new = first | (gap > threshold)
    session = np.cumsum(new, dtype=np.int64)
    session -= 1
    user_first = np.flatnonzero(first)
    reason = new.view(np.int8) * np.int8(2) - np.int8(1)  # 1 at a start, -1 elsewhere
    reason[user_first] = 0

    # sessions and users: runs of the (user, time) order
    starts = np.flatnonzero(new)
    ends = _run_ends(starts, n)
    # a session's number: its index less its user's first session's (users by code)
    session_id = np.arange(len(starts)) - session[user_first][u[starts]] + 1
    user_last = _run_ends(user_first, n)
    # the names of the sessions' first and last events, by a gather prepared on the
    # background thread while this one sorted (event names: through their dictionary)
    name_gather = (name_job.result() if name_job is not None
                   else _gatherer(keys.column(f"{P}name"), 2 * n))
    first_last = name_gather(np.concatenate([by_user[starts], by_user[ends]]))
    if isinstance(first_last, pa.ChunkedArray):
        first_last = first_last.combine_chunks()
    session_users = names.take(_arrow(u[starts]))
    session_keys = _session_keys(con, session_users, t[starts])
    sessions = pa.table({
        "resolved_user": session_users,
        "session_id": _arrow(session_id),
        "session_key": session_keys,
        "session_start": _arrow(t[starts], TS),
        "session_end": _arrow(t[ends], TS),
        "duration_seconds": _arrow((t[ends] - t[starts]).astype(np.float64) / 1_000_000),
        "event_count": _arrow((ends - starts + 1).astype(np.int64)),
        "start_reason": _REASONS.take(_arrow(reason[starts])),
        "first_event": first_last.slice(0, len(starts)),
        "last_event": first_last.slice(len(starts)),
    })
    users = pa.table({
        "resolved_user": names,
        "session_count": _arrow((session[user_last] - session[user_first] + 1)
                                  .astype(np.int64)),
        "event_count": _arrow((user_last - user_first + 1).astype(np.int64)),
        "first_seen": _arrow(t[user_first], TS),
        "last_seen": _arrow(t[user_last], TS),
    })
    if background is not None:
        background.shutdown(wait=False)
    return Columnar(keys, by_user, by_time, codes, names, t, first, reason, session,
                    session_keys, keys.column(f"{P}row"), rows_in_order, msg, sessions,
                    users, threads, inputs,
                    early, prepared, view, streamed, reads)


def _prepare_early(keys: pa.Table,
                   inputs: dict[str, str]) -> tuple[ThreadPoolExecutor, dict[str, Future]]:
    """Start the order-free part of gathering the carried input columns (by their name in
    ``keys``) into time order (:func:`_gatherer` with ``copy_now=False``: checking which
    columns have one width, dictionary-encoding those with few distinct values), and of
    the events' names, on a thread of its own, as soon as the keys arrive: the users'
    encoding and the sorts leave a core idle for about a second (their single-threaded
    steps), and these no longer wait for the time order. Returns the
    thread (for :func:`_gather_early`) and the jobs, the events' names' first."""
    background = ThreadPoolExecutor(1, thread_name_prefix="sessionize-kernel")
    prepare = functools.partial(_gatherer, copy_now=False)
    # first the events' names, for the sessions' first and last events (``assign`` takes
    # this job out before the others are gathered): up to two per event
    jobs = {f"{P}name": background.submit(prepare, keys.column(f"{P}name"), 2 * keys.num_rows)}
    return background, {**jobs, **{name: background.submit(prepare, keys.column(name),
                                                            keys.num_rows)
                                   for name in inputs.values()}}


def _gather_early(background: ThreadPoolExecutor, prepared: dict[str, Future],
                  by_time: np.ndarray, names: pa.Array,
                  codes_by_time: np.ndarray) -> dict[str, Future]:
    """Gather the carried input columns (``prepared`` by :func:`_prepare_early`), then the
    users' names (as ``__sz_user``, from the users' codes in time order), into time order
    on the ``background`` thread, one after another, as soon as the time order is known:
    the rest of the run (the scan, the sessions and users) uses one core, and a
    time-ordered run's events table is nearly always read (10M events, four pairs of
    fresh processes: median 9.3 s against 10.3 s without them; single pairs varied from
    no gain to 2.3 s). :meth:`Columnar.events` takes the columns gathered or being
    gathered and gathers the others itself; :meth:`Columnar.close` cancels those not
    started."""
    def take(name: str) -> pa.Array | pa.ChunkedArray:
        return prepared[name].result()(by_time)

    jobs = {name: background.submit(take, name) for name in prepared}
    jobs[f"{P}user"] = background.submit(_take, names, codes_by_time)
    return jobs


@dataclasses.dataclass
class _StreamReads:
    """The input's columns being read on the background thread (:func:`_stream_early`),
    each as the job that reads it and prepares its gather; :meth:`gathers` then gathers
    them into time order there."""

    stream: Stream
    keys: pa.Table
    background: ThreadPoolExecutor              # the thread reading them
    rows_in_order: bool                         # whether the keys are in input-row order
    jobs: dict[str, Future] = dataclasses.field(default_factory=dict)  # column -> Gather
    # where each key position's row is in what ``stream.read`` returns (``None``: at that
    # very position); two threads may both work it out: the same, once each
    base: list[np.ndarray | None] = dataclasses.field(default_factory=list)

    def read(self, source: str) -> Gather:
        """Read the input column ``source`` and prepare its gather at every key; the
        column itself is let go."""
        table = self.stream.read([source])
        if not self.base:
            rows, n = table.column(ROW), self.keys.num_rows
            same = (self.rows_in_order and len(rows) == n
                    and np.array_equal(_numpy(rows), np.arange(n)))
            self.base.append(None if same else _input_positions(rows,
                                                                self.keys.column(f"{P}row")))
        gather = _gatherer(table.column(source), self.keys.num_rows)
        del table  # what the gather needs is copied: the input's column is freed now
        return gather

    def gathers(self, time_order: np.ndarray | Future
                ) -> dict[str, tuple[Future, Callable[[], Any]]]:
        """Gather each column into time order (key positions ``time_order``, or the job
        sorting them) on the background thread as soon as it is read: per column, the
        job and its work (which :meth:`Columnar.events` runs on its pool when the job
        has not started)."""
        index: list[np.ndarray] = []  # where the time order's rows are in what was read

        def read_and_gather(source: str) -> pa.Array | pa.ChunkedArray:
            by_time = time_order.result() if isinstance(time_order, Future) else time_order
            if source in self.stream.in_keys:
                return _take(self.keys.column(self.stream.in_keys[source]), by_time)
            job = self.jobs[source]
            # not started yet (the background thread is busy): read it here
            gather = self.read(source) if job.cancel() else job.result()
            if not index:
                index.append(by_time if self.base[0] is None else self.base[0][by_time])
            return gather(index[0])

        jobs = {}
        for source in self.stream.sources:
            work = functools.partial(read_and_gather, source)
            jobs[source] = (self.background.submit(work), work)
        return jobs

    def cancel(self) -> None:
        """Cancel the reads not started and let the one running end (it reads the input
        on a cursor of the run's connection, which must outlive it)."""
        for job in self.jobs.values():
            job.cancel()
        for job in self.jobs.values():
            if not job.cancelled():
                job.exception()


def _stream_early(background: ThreadPoolExecutor, stream: Stream, keys: pa.Table,
                  rows_in_order: bool) -> _StreamReads:
    """Start reading the input's columns ``stream.sources`` one at a time on the
    ``background`` thread, each prepared for its gather (:func:`_gatherer`) and let go at
    once, as soon as the keys arrive; :meth:`_StreamReads.gathers` gathers them into time
    order there once it is known.

    Each column is freed once prepared, so the run holds the input one column at a time,
    not whole beside its gathered copy (memory a process touches for the first time is
    what costs most on a virtual machine, see BENCHMARKS.md); and the input is read while
    the users' encoding and the sorts leave a core idle (their single-threaded steps,
    about 3 s at 10M events), not after them. 10M events from Parquet, fresh processes
    in turn with reading after the sorts: a median of 9.1 s against 10.2 s, a peak of
    4.7-4.8 GB against 4.9-5.3 GB."""
    reads = _StreamReads(stream, keys, background, rows_in_order)
    reads.jobs = {source: background.submit(reads.read, source)
                  for source in stream.sources if source not in stream.in_keys}
    return reads


def _time_order(codes: np.ndarray, ts: np.ndarray, msg: pa.Array | pa.ChunkedArray,
                row: np.ndarray | None) -> np.ndarray:
    """Key positions in (time, user, messageId, row) order."""
    base = ts.min() if len(ts) else 0
    order, t, u = _sort_pair(ts - base, codes)
    return _order_ties(order, u, t + base, msg, row)[0]


def _done(value: Any) -> Future:
    """A future that already holds ``value``."""
    future: Future = Future()
    future.set_result(value)
    return future


def _session_keys(con: duckdb.DuckDBPyConnection, users: pa.Array, starts: np.ndarray) -> pa.Array:
    """The SQL's session key, md5(user | start) cut to 20 hex digits, by DuckDB."""
    con.register("sz_session_starts", pa.table({"u": users, "t": _arrow(starts)}))
    try:
        # a projection keeps the rows' order (DuckDB preserves insertion order)
        keys = con.sql(f"SELECT substr(md5(u || '{SEPARATOR}' || CAST(t AS VARCHAR)), 1, 20) "
                       "AS k FROM sz_session_starts").to_arrow_table().column("k")
    finally:
        con.unregister("sz_session_starts")
    return keys.combine_chunks()
