"""What :func:`sessionize.run` returns: a value holding tables and what made them.

A :class:`Result` holds the ``events``, ``sessions``, ``users`` and ``quarantine``
tables (each a :class:`Table` that users hand to pandas, polars or Arrow), the rules
that made them, and the engine that holds them. It analyses nothing itself: the
threshold analysis and the report are functions of a result
(``sessionize.thresholds(result)``, ``sessionize.report(result)``).

Each engine keeps its tables its own way (DuckDB tables or Arrow, Spark DataFrames), so
:class:`Table` is the surface they share and each engine subclasses it; what a result
asks of its engine is the small :class:`Engine` protocol below.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .durations import format_duration
from .errors import OptionError
from .sql.identity import diagnostics, summary_lines

if TYPE_CHECKING:
    import pyarrow as pa

    from .rules import Rules

__all__ = ["Engine", "Result", "Table"]

_PREVIEW_ROWS = 10


class Table:
    """One output table (``events``, ``sessions``, ``users``, ``quarantine`` or
    ``identities``).

    It lives in the engine until asked for: ``to_arrow()``, ``to_pandas()`` and
    ``to_polars()`` materialise it. Durations arrive as Arrow ``duration[us]``
    (pandas ``timedelta64``), timestamps as UTC ``timestamp[us]``.
    """

    name: str

    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def to_arrow(self, *, limit: int | None = None) -> pa.Table:
        """The table as a ``pyarrow.Table``."""
        raise NotImplementedError

    def to_arrow_batches(self, batch_size: int = 1_000_000) -> pa.RecordBatchReader:
        """Stream the table as Arrow record batches (bounded memory, for writing)."""
        raise NotImplementedError

    def to_pandas(self) -> Any:
        """The table as a pandas DataFrame (needs ``pip install pandas``)."""
        require("pandas", "to_pandas()")
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        """The table as a polars DataFrame (needs ``pip install polars``)."""
        require("polars", "to_polars()")
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def __repr__(self) -> str:
        return f"<sessionize Table {self.name!r}: {len(self)} rows, columns {self.columns}>"

    def _repr_html_(self) -> str:
        preview = self.to_arrow(limit=_PREVIEW_ROWS)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in preview.column_names)
        body = []
        for row in preview.to_pylist():
            cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values())
            body.append(f"<tr>{cells}</tr>")
        total = len(self)
        note = f"{total} rows" + (f", first {_PREVIEW_ROWS} shown" if total > _PREVIEW_ROWS else "")
        return (f"<div><strong>{html.escape(self.name)}</strong> <small>({note})</small>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def require(module: str, feature: str) -> None:
    """Fail with the install command when an optional dependency is missing."""
    try:
        __import__(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for {feature}; install it with: pip install {module}"
        ) from exc


class Engine(Protocol):
    """What a result asks of the engine that holds its tables (engines/base.py)."""

    name: str
    dialect: str
    events_order: str

    def rows(self, sql: str) -> list[tuple]: ...

    def write(self, tables: Sequence[Table], out_dir: str | os.PathLike, *, format: str,
              on_file: Callable[[str], None] | None) -> list[str]: ...

    def close(self) -> None: ...


class Result:
    """The outcome of a run: ``events``, ``sessions``, ``users`` and ``quarantine`` tables
    (``identities`` too under ``identity="stitch"``, ``"first"`` or ``"graph"``), the
    ``rules`` that made them, the ``plan`` that ran (``"columnar"``, ``"bucketed"`` or
    ``"sql"``), the ``source`` described, and the ``engine`` holding the tables."""

    def __init__(self, *, engine: Engine, rules: Rules, compiled: Any, plan: str, source: str,
                 events: Table, sessions: Table, users: Table, quarantine: Table,
                 identities: Table | None, quarantined: int):
        self.engine = engine
        self.rules = rules
        self.plan = plan
        self.source = source
        self.events = events
        self.sessions = sessions
        self.users = users
        self.quarantine = quarantine
        self.identities = identities
        self.compiled = compiled
        self._quarantined = quarantined

    def sql(self, stage: str = "events", dialect: str | None = None) -> str:
        """The compiled SQL of a stage (``prepared``, ``assign``, ``events``, ``sessions``,
        ``users``) in any sqlglot dialect (default: the engine's); ``events`` as this run
        built it (without ``ORDER BY`` under ``events_order="none"``)."""
        if stage == "events" and self.engine.events_order != "time":
            stage = "events_unordered"
        return self.compiled.sql(stage, dialect or self.engine.dialect, pretty=True)

    def stats(self) -> dict[str, Any]:
        """Headline numbers: counts, sessions per user, starts by reason."""
        rows = self.engine.rows
        events, users, sessions, mean, median, most = rows(
            "SELECT coalesce(sum(event_count), 0), count(*), coalesce(sum(session_count), 0), "
            "avg(session_count), median(session_count), max(session_count) FROM sz_users")[0]
        reasons = rows("SELECT start_reason, count(*) FROM sz_sessions GROUP BY 1 "
                       "ORDER BY 2 DESC, 1")
        quarantine = rows("SELECT quarantine_reason, count(*) FROM sz_quarantine "
                          "GROUP BY 1 ORDER BY 1")
        return {
            "events": int(events), "users": users, "sessions": int(sessions),
            "sessions_per_user": {"mean": mean, "median": median, "max": most},
            "start_reasons": dict(reasons), "quarantined": dict(quarantine),
        }

    def summary(self) -> str:
        """A few readable lines about the run."""
        s = self.stats()
        per = s["sessions_per_user"]
        lines = [
            f"{s['events']:,} events, {s['users']:,} users, {s['sessions']:,} sessions "
            f"(inactivity gap {format_duration(self.rules.gap_us)}) from {self.source}",
        ]
        if s["users"]:
            lines.append(f"sessions per user: mean {per['mean']:.2f}, median {per['median']:g}, "
                         f"max {per['max']}")
            lines.append("session starts: " + ", ".join(
                f"{reason} {count:,}" for reason, count in s["start_reasons"].items()))
        if s["quarantined"]:
            lines.append("quarantined rows: " + ", ".join(
                f"{reason} {count:,}" for reason, count in s["quarantined"].items()))
        if self.identities is not None:
            lines.extend(summary_lines(self.identity_diagnostics()))
        return "\n".join(lines)

    def identity_diagnostics(self) -> dict[str, Any]:
        """What identity resolution did (docs/identity.md): ``anonymous_ids_stitched``,
        ``events_reattributed``, ``shared_devices``, ``users_on_3_or_more_devices``,
        ``most_devices`` (the ten users with most anonymous ids), ``component_sizes``
        (identifiers per resolved user -> how many) and ``largest_components``."""
        if self.identities is None:
            raise OptionError("identity_diagnostics needs identity='stitch', 'first' or "
                              "'graph' (got identity='event')")
        return diagnostics(self.engine.rows, self.compiled.identity, self.compiled.identity_cap)

    def write(self, out_dir: str | os.PathLike, *, format: str = "parquet",
              on_file: Callable[[str], None] | None = None) -> list[str]:
        """Write every table to ``out_dir/<table>.<format>`` atomically; returns the paths."""
        tables = [self.events, self.sessions, self.users]
        if self._quarantined or len(self.quarantine):
            tables.append(self.quarantine)
        if self.identities is not None:
            tables.append(self.identities)
        return self.engine.write(tables, out_dir, format=format, on_file=on_file)

    def close(self) -> None:
        """Release the engine (its memory and temporary files)."""
        self.engine.close()

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sessionize Result: {self.summary().splitlines()[0]}>"

    def _repr_html_(self) -> str:
        summary = "<br>".join(html.escape(line) for line in self.summary().splitlines())
        return (f"<div><p>{summary}</p>{self.sessions._repr_html_()}"
                f"{self.users._repr_html_()}</div>")
