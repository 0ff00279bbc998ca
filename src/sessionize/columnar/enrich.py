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

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.inputs import INPUT_TABLE, ROW
from ..sql.compiler import quote
from .gather import arrow, to_numpy

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
    values = _values(con, columns, source)
    # per (user, time) position: the event's row in ``values``
    at = result.input_positions(values.column(ROW))[result.by_user]
    session = result.session
    starts = np.flatnonzero(result.reason >= 0)
    ends = np.append(starts[1:], len(session)) - 1 if len(starts) else starts
    sessions = np.arange(len(starts))
    added: dict[str, pa.Array | pa.ChunkedArray] = {}
    for i, (name, how, _) in enumerate(columns):
        value = values.column(f"v{i}")
        if how in ("first", "last"):
            present = np.flatnonzero(to_numpy(pc.is_valid(value))[at])
            of = session[present]  # ascending: positions are in session order
            if how == "first":
                pick = np.searchsorted(of, sessions, "left")
                found = pick < len(of)
            else:
                pick = np.searchsorted(of, sessions, "right") - 1
                found = pick >= 0
            pick = np.clip(pick, 0, max(len(present) - 1, 0))
            found &= of[pick] == sessions if len(of) else False
            rows = at[present[pick]] if len(present) else np.zeros(len(sessions), np.int64)
            added[name] = pc.take(value, arrow(rows, mask=~found))  # not found: null
        else:
            true = to_numpy(pc.fill_null(value, False)).astype(np.int64)[at]
            count = np.add.reduceat(true, starts) if len(starts) else starts
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


def _values(con: duckdb.DuckDBPyConnection, columns: list[tuple[str, str, str]],
            source: str) -> pa.Table:
    """The per-event values of ``columns``, every input row's, with its row number."""
    selected = ", ".join(f"{sql} AS v{i}" for i, (_, _, sql) in enumerate(columns))
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
