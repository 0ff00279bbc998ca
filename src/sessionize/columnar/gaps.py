"""The threshold analysis on the columnar plan's arrays: no SQL windows, no joins.

The columnar plan (:mod:`.kernel`) already holds every event in (user, time) order
with its time and whether it is the user's first, so each gap is one subtraction.
This module computes from those arrays exactly what :mod:`.thresholds` computes in
SQL from ``sz_assign`` (the tests compare the two on generated data):

``histogram``  log-gap counts per platform: one ``bincount``;
``curve``      the events that start a session at the smallest threshold are the
               candidates (every first event, and every gap above it); at each
               threshold the starts are the candidates whose gap exceeds it, and a
               session ends just before the next start (the next user's first event
               is a start at every threshold), so its end time is the time of the
               event before that start: selections over the candidates, no full
               run per threshold; the median is a partition, not a sort; the
               thresholds run in parallel;
``sample``     the per-event rows of the users the data-quality checks sample, with
               each row's previous row (for the out-of-order check).

The platform of each event is the only thing read from the input again: DuckDB maps
each row's platform text to a small integer (the distinct texts are a handful).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .gather import arrow, strings, to_numpy
from .kernel import executor

if TYPE_CHECKING:
    import duckdb

    from .kernel import Columnar

__all__ = ["GapArrays", "gap_arrays", "histogram", "curve", "threshold_groups",
           "events_per_platform", "sample_table", "GROUP_SPAN"]

#: More distinct platform texts than this are mapped with a join instead of a CASE.
CASE_LIMIT = 64


@dataclasses.dataclass
class GapArrays:
    """Per event, in (user, time) order: time, first-of-user, gap (0 at a first event)
    and platform index into ``platforms`` (names sorted; ``["all"]`` without a split)."""

    ts: np.ndarray
    first: np.ndarray
    gap: np.ndarray
    platform: np.ndarray
    platforms: list[str]
    threads: int = 1  # the run's threads (``Columnar.threads``): thresholds run in parallel


def gap_arrays(con: duckdb.DuckDBPyConnection, columnar: Columnar, platform_expr: str | None,
               platform_of: Any, row: str) -> GapArrays:
    """The gaps of a columnar run; ``platform_expr`` is :func:`.thresholds.platform_sql`'s
    expression over ``sz_input`` (None: one platform, ``"all"``), ``platform_of`` maps
    its text to a platform name in SQL, ``row`` is the input's row column."""
    ts, first = columnar.ts, columnar.first
    gap = np.zeros(len(ts), np.int64)
    np.subtract(ts[1:], ts[:-1], out=gap[1:])
    gap[first] = 0
    if platform_expr is None:
        return GapArrays(ts, first, gap, np.zeros(len(ts), np.int16), ["all"], columnar.threads)
    mapping = con.execute(
        f"SELECT raw, {platform_of('raw')} FROM (SELECT DISTINCT {platform_expr} AS raw "
        "FROM sz_input) ORDER BY raw").fetchall()
    platforms = sorted({name for _, name in mapping})
    index = {name: i for i, name in enumerate(platforms)}
    if len(mapping) <= CASE_LIMIT:
        cases = " ".join(f"WHEN {_literal(raw)} THEN {index[name]}" for raw, name in mapping)
        query = (f"SELECT {row} AS r, CAST(CASE {platform_expr} {cases} END AS SMALLINT) AS p "
                 "FROM sz_input")
    else:
        con.register("sz_gap_platforms", pa.table({
            "raw": strings([raw for raw, _ in mapping]),
            "p": arrow(np.array([index[name] for _, name in mapping], np.int16))}))
        query = (f"SELECT i.r, m.p FROM (SELECT {row} AS r, {platform_expr} AS raw FROM "
                 "sz_input) i JOIN sz_gap_platforms m USING (raw)")
    try:
        table = con.sql(query).to_arrow_table()
    finally:
        if len(mapping) > CASE_LIMIT:
            con.unregister("sz_gap_platforms")
    by_row = to_numpy(table.column("p"))
    at = columnar.input_positions(table.column("r"))
    return GapArrays(ts, first, gap, by_row[at][columnar.by_user], platforms, columnar.threads)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def histogram(g: GapArrays, *, by_platform: bool, bins_per_decade: int, low_bin: int,
              high_bin: int, zero_bin: int) -> list[tuple[str, int, int]]:
    """(platform, bin, gaps) rows, ordered by platform then bin, as the SQL groups them."""
    has_gap = ~g.first
    gaps = g.gap[has_gap]
    positive = gaps > 0
    # the SQL's floor(log10(gap / 1e6) * bins), clamped; zero gaps (ties) have their own bin
    logs = np.log10(gaps[positive] / 1e6)
    logs *= bins_per_decade
    np.floor(logs, out=logs)
    np.clip(logs, low_bin, high_bin, out=logs)
    offset = np.zeros(len(gaps), np.int64)  # bin - zero_bin
    offset[positive] = logs.astype(np.int64) - zero_bin
    width = high_bin - zero_bin + 1
    groups = {"all": np.bincount(offset, minlength=width)}
    if by_platform:
        per = np.bincount(g.platform[has_gap].astype(np.int64) * width + offset,
                          minlength=width * len(g.platforms)).reshape(len(g.platforms), width)
        groups.update((name, per[i]) for i, name in enumerate(g.platforms))
    rows = []
    for name in sorted(groups):
        counts = groups[name]
        rows += [(name, int(b) + zero_bin, int(counts[b])) for b in np.flatnonzero(counts)]
    return rows


#: A group of thresholds spans less than this factor (see :func:`threshold_groups`).
GROUP_SPAN = 60


def threshold_groups(micros: list[int]) -> list[list[int]]:
    """Indices of the (sorted) thresholds in groups spanning less than ``GROUP_SPAN``.

    Each group reads only the events that start a session at its smallest threshold:
    with thresholds from 1 s to 30 days, the thresholds of seconds (which nearly every
    event passes) do not make the thresholds of hours read every event. Both plans
    group alike.

    >>> threshold_groups([1_000_000, 30_000_000, 60_000_000, 3_600_000_000])
    [[0, 1], [2], [3]]
    """
    groups: list[list[int]] = []
    for i, m in enumerate(micros):
        if groups and m < GROUP_SPAN * micros[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def curve(g: GapArrays, micros: list[int], *, by_platform: bool
          ) -> tuple[dict[str, list[tuple[int, float | None, int]]], dict[str, int]]:
    """Per platform (and ``"all"``): per threshold (sessions, median duration in
    microseconds or None, one-event sessions); and the users per platform (the platform
    of their first event). Platforms appear when one of their events starts a session
    at the smallest threshold, as in the SQL; the thresholds run in
    :func:`threshold_groups`, as in the SQL."""
    out: dict[str, list[tuple[int, float | None, int]]] = {}
    for group in threshold_groups(micros):
        part = _curve_group(g, [micros[i] for i in group], by_platform=by_platform)
        for name in part:
            out.setdefault(name, [])
        for name in out:
            out[name] += part.get(name, [(0, None, 0)] * len(group))
    out = {name: [(0, None, 0)] * (len(micros) - len(points)) + points
           for name, points in out.items()}
    firsts = g.platform[g.first]
    users = {"all": int(g.first.sum())}
    if by_platform:
        counts = np.bincount(firsts.astype(np.int64), minlength=len(g.platforms))
        users.update((g.platforms[i], int(counts[i])) for i in range(len(g.platforms))
                     if g.platforms[i] in out)
    return out, users


def _curve_group(g: GapArrays, micros: list[int], *, by_platform: bool
                 ) -> dict[str, list[tuple[int, float | None, int]]]:
    """:func:`curve` for one group of thresholds: the starts at its smallest one."""
    n = len(g.ts)
    k_count = len(micros)
    starts = np.flatnonzero(g.first | (g.gap > micros[0]))
    # how many of the group's thresholds each start's gap exceeds (a first event: all);
    # small integers, so the selection at each threshold reads a byte per start
    level = np.searchsorted(np.asarray(micros, np.int64), g.gap[starts], side="left").astype(
        np.int8 if k_count < 127 else np.int64)
    level[g.first[starts]] = k_count
    platform = g.platform[starts]
    names = ["all"]
    if by_platform:
        present = np.unique(platform)
        names += [g.platforms[i] for i in present]

    # per start: its time and the time of the event just before it (which ends the
    # previous session whenever this start is chosen): selections, not random reads
    start_ts = g.ts[starts]
    before = g.ts[np.maximum(starts - 1, 0)]
    last_ts = g.ts[-1] if n else 0

    def at_threshold(k: int) -> dict[str, tuple[int, float | None, int]]:
        if k == 1:  # the group's smallest threshold: every start is chosen, no selection
            sel, chosen_before, chosen_ts, on = starts, before, start_ts, platform
        else:
            chosen = level >= k
            sel, chosen_before, chosen_ts = starts[chosen], before[chosen], start_ts[chosen]
            on = platform[chosen] if by_platform else None
        end_ts = np.empty(len(sel), np.int64)
        end_ts[:-1] = chosen_before[1:]
        end_ts[-1:] = last_ts
        duration = end_ts - chosen_ts
        one = np.empty(len(sel), bool)
        np.equal(sel[1:] - 1, sel[:-1], out=one[:-1])
        one[-1:] = sel[-1:] == n - 1
        # at small thresholds most sessions last 0 s: the medians sort only the others
        positive = duration > 0
        rest = duration[positive]
        measures = {"all": (len(sel), _median_with_zeros(rest, len(sel) - len(rest)),
                            int(one.sum()))}
        if by_platform:
            counts = np.bincount(on, minlength=len(g.platforms))
            ones = np.bincount(on[one], minlength=len(g.platforms))
            on_rest = on[positive]
            rest_counts = np.bincount(on_rest, minlength=len(g.platforms))
            rest = rest[np.argsort(on_rest, kind="stable")]  # grouped by platform
            bounds = np.concatenate(([0], np.cumsum(rest_counts)))
            for i in present:
                measures[g.platforms[i]] = (
                    int(counts[i]), _median_with_zeros(
                        rest[bounds[i]:bounds[i + 1]], int(counts[i] - rest_counts[i])),
                    int(ones[i]))
        return measures

    out: dict[str, list[tuple[int, float | None, int]]] = {name: [] for name in names}
    # numpy releases the GIL: thresholds in parallel
    with executor(g.threads) as pool:
        for measures in pool.map(at_threshold, range(1, k_count + 1)):
            for name, value in measures.items():
                out[name].append(value)
    return out


def _median_with_zeros(positive: np.ndarray, zeros: int) -> float | None:
    """``np.median`` of ``positive`` together with ``zeros`` zeros, exactly (the same
    float), partitioning only the positive values."""
    n = len(positive) + zeros
    if not n:
        return None
    middle = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    ranks = [r - zeros for r in middle if r >= zeros]
    if ranks:
        part = np.partition(positive, ranks)
        values = [0] * (len(middle) - len(ranks)) + [part[r] for r in ranks]
    else:
        values = [0] * len(middle)
    return float(np.median(np.array(values, np.int64)))


def events_per_platform(g: GapArrays) -> dict[str, int]:
    """How many events each platform has (every platform with an event)."""
    counts = np.bincount(g.platform.astype(np.int64), minlength=len(g.platforms))
    return {name: int(counts[i]) for i, name in enumerate(g.platforms) if counts[i]}


def sample_table(con: duckdb.DuckDBPyConnection, columnar: Columnar, g: GapArrays,
                 modulus: int) -> pa.Table:
    """The per-event rows (``u, seq, ts, gap, row, prev_row, msg``) of the users whose
    ``hash(u) % modulus = 0``: the users the SQL's data-quality sample keeps."""
    names = columnar.names
    if modulus == 1:
        keep_user = np.ones(len(names), bool)
    else:
        con.register("sz_sample_names", pa.table({"u": names}))
        try:
            keep_user = to_numpy(con.sql(
                f"SELECT CAST(hash(u) % {modulus} = 0 AS TINYINT) AS k FROM sz_sample_names"
            ).to_arrow_table().column("k")).astype(bool)
        finally:
            con.unregister("sz_sample_names")
    # users are contiguous in (user, time) order, and code c is the c-th user there
    starts = np.flatnonzero(g.first)
    ends = np.append(starts[1:], len(g.first))
    kept = np.flatnonzero(keep_user)
    at = _spans(starts[kept], ends[kept])  # (user, time) positions of the sampled users
    key_at = columnar.by_user[at]
    rows = to_numpy(columnar.row)[key_at]
    previous = np.zeros(len(rows), np.int64)
    previous[1:] = rows[:-1]
    key_at = arrow(key_at)
    return pa.table({
        "u": pa.DictionaryArray.from_arrays(arrow(np.repeat(kept, ends[kept] - starts[kept])),
                                            names),
        "seq": arrow(columnar.seq[at]),
        "ts": arrow(g.ts[at]),
        "gap": arrow(g.gap[at], mask=g.first[at]),
        "row": arrow(rows),
        "prev_row": arrow(previous, mask=g.first[at]),
        "msg": columnar.msg.take(key_at),
    })


def _spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions start..end-1 of every span, concatenated (vectorised ``arange``s)."""
    lengths = ends - starts
    if not len(lengths):
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(int(lengths.sum())) + offsets
