"""What :func:`sessionize.run` returns: tables users can hand to pandas, polars or Arrow."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .sql.compiler import quote

if TYPE_CHECKING:
    import pyarrow as pa

    from .engines.duckdb import DuckDBEngine

__all__ = ["Result", "Table"]

_PREVIEW_ROWS = 10


class Table:
    """One output table (``events``, ``sessions``, ``users`` or ``quarantine``).

    It lives in the engine until asked for: ``to_arrow()``, ``to_pandas()`` and
    ``to_polars()`` materialise it. Durations arrive as Arrow ``duration[us]``
    (pandas ``timedelta64``), timestamps as UTC ``timestamp[us]``.
    """

    def __init__(self, engine: DuckDBEngine, name: str, relation: str,
                 arrow: Callable[[], pa.Table] | None = None, length: int | None = None,
                 built: pa.Table | None = None):
        self._engine = engine
        self.name = name
        self._relation = relation
        # The columnar plan builds a table as Arrow when first asked for (kernel.py), or
        # has built it already (``built``, registered in the engine as ``relation``):
        # to_arrow() then hands it over as it is, not read back through DuckDB (10M
        # events: 1.8M sessions, 0.28 s).
        self._build = arrow if built is None else (lambda: built)
        self._arrow: pa.Table | None = built
        self._length = length if built is None else built.num_rows  # known without building

    def _built(self) -> pa.Table:
        if self._arrow is None:
            self._arrow = self._build()
            self._engine.register_arrow(self._relation, self._arrow)
        return self._arrow

    @property
    def relation(self) -> Any:
        """The table as a DuckDB relation, for further SQL."""
        if self._build is not None:
            self._built()
        return self._engine.con.table(self._relation)

    @property
    def columns(self) -> list[str]:
        return list(self.relation.columns)

    def __len__(self) -> int:
        if self._build is not None:
            return self._length if self._length is not None else self._built().num_rows
        return self._engine.con.execute(f"SELECT count(*) FROM {self._relation}").fetchall()[0][0]

    def _arrow_sql(self, limit: int | None = None) -> str:
        rel = self.relation
        cols = [
            f"epoch_us({quote(c)}) AS {quote(c)}" if str(t) == "INTERVAL" else quote(c)
            for c, t in zip(rel.columns, rel.types)
        ]
        tail = f" LIMIT {limit}" if limit is not None else ""
        return f"SELECT {', '.join(cols)} FROM {self._relation}{tail}"

    def _interval_columns(self) -> list[str]:
        rel = self.relation
        return [c for c, t in zip(rel.columns, rel.types) if str(t) == "INTERVAL"]

    def to_arrow(self, *, limit: int | None = None) -> pa.Table:
        """The table as a ``pyarrow.Table``."""
        import pyarrow as pa

        if self._build is not None:
            table = self._built()
            return table if limit is None else table.slice(0, limit)
        table = self._engine.con.sql(self._arrow_sql(limit)).to_arrow_table()
        for name in self._interval_columns():
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(i).cast(pa.duration("us")))
        return table

    def to_arrow_batches(self, batch_size: int = 1_000_000) -> pa.RecordBatchReader:
        """Stream the table as Arrow record batches (bounded memory, for writing)."""
        import pyarrow as pa

        if self._build is not None:
            table = self._built()
            return pa.RecordBatchReader.from_batches(
                table.schema, table.to_batches(max_chunksize=batch_size))
        reader = self._engine.con.sql(self._arrow_sql()).to_arrow_reader(batch_size)
        intervals = set(self._interval_columns())
        if not intervals:
            return reader
        schema = pa.schema([
            f.with_type(pa.duration("us")) if f.name in intervals else f for f in reader.schema
        ])

        def batches():
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [col.cast(pa.duration("us")) if name in intervals else col
                     for name, col in zip(batch.schema.names, batch.columns)],
                    schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def to_pandas(self) -> Any:
        """The table as a pandas DataFrame (needs ``pip install pandas``)."""
        _require("pandas")
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        """The table as a polars DataFrame (needs ``pip install polars``)."""
        _require("polars")
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


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for to_{module}(); install it with: pip install {module}"
        ) from exc


class Result:
    """The outcome of a run: ``events``, ``sessions``, ``users`` and ``quarantine`` tables,
    the compiled SQL, and counts for a summary."""

    def __init__(self, engine: DuckDBEngine, *, gap_us: int, compiled: Any, source: str,
                 quarantined: int):
        self._engine = engine
        self.events = Table(engine, "events", "sz_events",
                            arrow=getattr(engine, "columnar_events", None),
                            length=getattr(engine, "columnar_rows", None))
        #: how sessions were assigned: "sql" (the compiled SQL) or "columnar" (kernel.py)
        self.plan = getattr(engine, "plan", "sql")
        columnar = getattr(engine, "columnar", None) if self.plan == "columnar" else None
        self.sessions = Table(engine, "sessions", "sz_sessions",
                              built=columnar.sessions if columnar is not None else None)
        self.users = Table(engine, "users", "sz_users",
                           built=columnar.users if columnar is not None else None)
        self.quarantine = Table(engine, "quarantine", "sz_quarantine")
        #: identifier -> resolved user and the rule that decided it (identity="stitch"/"first")
        self.identities = (Table(engine, "identities", "sz_identities")
                           if getattr(compiled, "identities", None) is not None else None)
        self.gap_us = gap_us
        self.source = source
        self._compiled = compiled
        self._quarantined = quarantined

    def sql(self, stage: str = "events", dialect: str = "duckdb") -> str:
        """The compiled SQL of a stage (``prepared``, ``assign``, ``events``, ``sessions``,
        ``users``) in any sqlglot dialect; ``events`` as this run built it (without
        ``ORDER BY`` under ``events_order="none"``)."""
        if stage == "events":
            from .engines.duckdb import events_stage

            stage = events_stage(getattr(self._engine, "events_order", "time"))
        return self._compiled.sql(stage, dialect, pretty=True)

    def stats(self) -> dict[str, Any]:
        """Headline numbers: counts, sessions per user, starts by reason."""
        con = self._engine.con
        events, users, sessions = con.execute(
            "SELECT (SELECT coalesce(sum(event_count), 0) FROM sz_users), "
            "(SELECT count(*) FROM sz_users), "
            "(SELECT count(*) FROM sz_sessions)").fetchall()[0]
        per_user = con.execute(
            "SELECT avg(session_count), median(session_count), max(session_count) "
            "FROM sz_users").fetchall()[0]
        reasons = dict(con.execute(
            "SELECT start_reason, count(*) FROM sz_sessions GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall())
        quarantine = dict(con.execute(
            "SELECT quarantine_reason, count(*) FROM sz_quarantine GROUP BY 1 ORDER BY 1"
        ).fetchall())
        return {
            "events": events, "users": users, "sessions": sessions,
            "sessions_per_user": {"mean": per_user[0], "median": per_user[1], "max": per_user[2]},
            "start_reasons": reasons, "quarantined": quarantine,
        }

    def summary(self) -> str:
        """A few readable lines about the run."""
        from .durations import format_duration

        s = self.stats()
        per = s["sessions_per_user"]
        lines = [
            f"{s['events']:,} events, {s['users']:,} users, {s['sessions']:,} sessions "
            f"(inactivity gap {format_duration(self.gap_us)}) from {self.source}",
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
            from .sql.identity import summary_lines

            lines.extend(summary_lines(self.identity_diagnostics()))
        return "\n".join(lines)

    def _query(self, sql: str) -> list:
        """Rows of a small DuckDB-flavoured query over the run's stages."""
        return self._engine.con.execute(sql).fetchall()

    def identity_diagnostics(self) -> dict[str, Any]:
        """What identity resolution did (docs/identity.md): ``anonymous_ids_stitched``,
        ``events_reattributed``, ``shared_devices``, ``users_on_3_or_more_devices``,
        ``most_devices`` (the ten users with most anonymous ids), ``component_sizes``
        (identifiers per resolved user -> how many) and ``largest_components``."""
        if self.identities is None:
            from .errors import OptionError

            raise OptionError("identity_diagnostics needs identity='stitch', 'first' or "
                              "'graph' (got identity='event')")
        from .sql.identity import diagnostics

        return diagnostics(self._query, self._compiled.identity, self._compiled.identity_cap)

    def write(self, out_dir: str | os.PathLike, *, format: str = "parquet",
              on_file: Callable[[str], None] | None = None) -> list[str]:
        """Write every table to ``out_dir/<table>.<format>`` atomically; returns the paths."""
        from .io.outputs import write_tables

        tables = [self.events, self.sessions, self.users]
        if self._quarantined or len(self.quarantine):
            tables.append(self.quarantine)
        if self.identities is not None:
            tables.append(self.identities)
        return write_tables(tables, out_dir, format=format, on_file=on_file)

    def thresholds(self, *, platform: str | None = "auto", grid: Any = None) -> Any:
        """Gap distribution, sensitivity curve (1 min .. 4 h) and recommended thresholds.

        See :func:`sessionize.thresholds`; returns a ``ThresholdAnalysis``.
        """
        from .analysis.thresholds import analyze

        return analyze(self, platform=platform, grid=grid)

    def report(self, *, show_user_ids: bool = False, platform: str | None = "auto") -> Any:
        """The HTML report with its charts (a ``Report``: ``.html``, ``.charts``, ``.write``)."""
        from .report import build_report

        return build_report(self, show_user_ids=show_user_ids, platform=platform)

    def to_html(self, path: str | os.PathLike | None = None, *, show_user_ids: bool = False,
                platform: str | None = "auto") -> str:
        """The report as one self-contained HTML page; also written to ``path`` when given."""
        built = self.report(show_user_ids=show_user_ids, platform=platform)
        if path is not None:
            built.write(path)
        return built.html

    def plot(self, chart: str, *, format: str = "svg", show_user_ids: bool = False,
             platform: str | None = "auto") -> Any:
        """One report chart as SVG (a ``str`` notebooks display) or PNG bytes.

        Charts: ``sessions_per_user``, ``start_reasons``, ``gap_histogram``,
        ``sensitivity_sessions``, ``sensitivity_median_duration``,
        ``sensitivity_one_event``, ``durations``, ``timelines``, ``gaps_by_platform``.
        PNG needs headless Chromium.
        """
        from .report import CHARTS

        if chart not in CHARTS:
            from .errors import OptionError

            raise OptionError(f"'chart' must be one of {', '.join(CHARTS)} (got {chart!r})")
        built = self.report(show_user_ids=show_user_ids, platform=platform)
        return built.chart(chart, format=format)

    def close(self) -> None:
        """Release the engine (its memory and temporary files)."""
        self._engine.close()

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
