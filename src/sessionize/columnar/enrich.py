"""The session enrichment on the columnar plan (``enrich=``, ``first_last=``).

The compiler defines each enrichment column once (:func:`sessionize.sql.compiler.enrichment`):
how it aggregates and the per-event value it aggregates, as SQL over the input. Here
DuckDB computes those values per input row (one projection of the input), and numpy
aggregates them over the sessions, which are runs of the kernel's (user, time) order:

- ``first``/``last``: the first/last position of the session where the value is present
  (a binary search of the session index over the positions with a value), then one
  gather of the values, a session's worth, not an event's;
- ``count``: a sum of the true values over each run;
- ``bounce``: at most one true value, and the session lasts less than ``bounce``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.inputs import INPUT_TABLE, ROW
from ..sql.compiler import quote
from .gather import arrow, bools

if TYPE_CHECKING:
    import duckdb

    from .kernel import Columnar

__all__ = ["enrich"]


def enrich(result: Columnar, con: duckdb.DuckDBPyConnection,
           columns: list[tuple[str, str, str]], bounce_us: int,
           source: str = INPUT_TABLE) -> pa.Table:
    """``result.sessions`` with the enrichment ``columns`` appended ((name, aggregate,
    per-event value SQL over the input ``source`` as ``i``), from the compiler's
    ``enrichment``)."""
    if not columns:
        return result.sessions
    # each value once (a first and a last value share theirs)
    sqls = list(dict.fromkeys(sql for _, _, sql in columns))
    values = _values(con, sqls, source)
    # per (user, time) position: the event's row in ``values``
    at = result.input_positions(values.column(ROW))[result.by_user]
    session = result.session
    starts = np.flatnonzero(result.reason >= 0)
    ends = np.append(starts[1:], len(session)) - 1 if len(starts) else starts
    added: dict[str, pa.Array | pa.ChunkedArray] = {}
    # one bit per value: present (first, last) or true (count, bounce), gathered into
    # (user, time) order at once (one random gather, not one per value)
    tests = list(dict.fromkeys((sql, how in ("first", "last")) for _, how, sql in columns))
    bits = np.zeros(values.num_rows, np.uint16 if len(tests) <= 16 else np.uint64)
    for bit, (sql, presence) in enumerate(tests):
        value = values.column(f"v{sqls.index(sql)}")
        bits |= bools(pc.is_valid(value) if presence else value).astype(bits.dtype) << bit
    bits = bits[at]
    for name, how, sql in columns:
        value = _one_chunk(values.column(f"v{sqls.index(sql)}"))
        flag = (bits >> tests.index((sql, how in ("first", "last")))) & 1
        if how in ("first", "last"):
            have, rows = _first_and_last(flag.astype(bool), session, at, how)
            indices = np.zeros(len(starts), np.int64)
            indices[have] = rows
            missing = np.ones(len(starts), bool)
            missing[have] = False
            added[name] = pc.take(value, arrow(indices, mask=missing))  # missing: null
        else:
            count = np.add.reduceat(flag.astype(np.int64), starts) if len(starts) else starts
            if how == "count":
                added[name] = arrow(count.astype(np.int64))
            else:
                lasts = result.ts[ends] - result.ts[starts]
                added[name] = arrow((count <= 1) & (lasts < bounce_us))
    table = result.sessions
    names = _table_names(con, [*table.column_names, *added])
    for name, column in zip(names[table.num_columns:], added.values()):
        table = table.append_column(name, column)
    return table


def _first_and_last(present: np.ndarray, session: np.ndarray, at: np.ndarray,
                    how: str) -> tuple[np.ndarray, np.ndarray]:
    """The sessions with a value (``present`` per (user, time) position) and, for each,
    the row (``at``) of its first (``how="first"``) or last position with one: the
    positions with a value, in order, change session where a session's first one is."""
    where = np.flatnonzero(present)
    of = session[where]  # ascending: positions are in session order
    change = np.flatnonzero(of[1:] != of[:-1]) + 1
    if how == "first":
        picks = np.append(0, change) if len(where) else change
    else:
        picks = np.append(change - 1, len(where) - 1) if len(where) else change
    return of[picks], at[where[picks]]


def _one_chunk(values: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``values`` as one array where its offsets allow (a take from one array is several
    times faster than from DuckDB's many chunks)."""
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowCapacityError):
        return values.combine_chunks()
    return values


def _values(con: duckdb.DuckDBPyConnection, sqls: list[str], source: str) -> pa.Table:
    """The per-event values ``sqls`` (as ``v0``, ``v1``, ...), every input row's, with
    its row number."""
    selected = ", ".join(f"{sql} AS v{i}" for i, sql in enumerate(sqls))
    # a projection keeps the input's order (DuckDB preserves insertion order)
    return con.sql(f"SELECT i.{ROW}, {selected} FROM {source} AS i").to_arrow_table()


def _table_names(con: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
    """The column names a DuckDB table with columns ``names`` has: DuckDB renames a
    repeated name (``first_last=["event"]`` repeats ``first_event``), as the SQL plan's
    sessions table shows it."""
    if len({n.lower() for n in names}) == len(names):
        return names
    nulls = ", ".join(f"NULL AS {quote(n)}" for n in names)
    con.execute(f"CREATE OR REPLACE TEMP TABLE sz_names AS SELECT {nulls} LIMIT 0")
    try:
        return con.table("sz_names").columns
    finally:
        con.execute("DROP TABLE sz_names")
