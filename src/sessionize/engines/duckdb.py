"""Run the compiled rules on DuckDB (in memory, or in a database file).

The connection's time zone is pinned to UTC so that no session setting can
shift a timestamp, and only extensions the wheel ships (json, parquet, icu)
are used: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import duckdb

from ..columnar.enrich import enrich
from ..columnar.gather import TS, strings
from ..columnar.kernel import Stream, assign, unsupported_rule, workers
from ..errors import OptionError
from ..io.inputs import INPUT_TABLE, ROW, LoadedInput, load
from ..io.outputs import write_tables
from ..result import Table
from ..rules import Rules
from ..sql.compiler import Field, P, compile_rules, enrichment, quote, text_column
from ..sql.identity import DuckDBRunner, build_identities
from .base import Engine
from .bucketed import (
    INPUT_PREFIX as BUCKET_INPUT_PREFIX,
)
from .bucketed import (
    Layout,
    ParquetTable,
    bucket_count,
    parse_size,
    partition_sql,
    run_buckets,
    user_bounds,
)
from .bucketed import (
    unsupported_rule as bucketed_unsupported,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DuckDB", "DuckDBEngine", "DuckDBTable"]
#: How sessions are assigned: the compiled SQL on DuckDB, the columnar plan (kernel.py)
#: for the rules it runs, or the same per bucket of users (bucketed.py), for inputs
#: larger than memory. "auto" (:meth:`DuckDBEngine._choose_plan`): the SQL plan for a
#: rule the kernel does not run or a database file; else the bucketed plan under a
#: memory_limit or when the input does not fit in memory; else the columnar plan.
PLANS = ("auto", "sql", "columnar", "bucketed")
#: The events table's row order: "time" (by time, ties by user, messageId, input order;
#: the notebook's order) or "none" (no sort: the columnar plan keeps the input's order,
#: the SQL plan and Spark their own).
EVENTS_ORDERS = ("time", "none")
#: The columnar plan holds the input about three times over (read, gathered, written):
#: "auto" uses it while that estimate stays under this share of the machine's memory.
COLUMNAR_MEMORY_SHARE = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class DuckDB:
    """The embedded engine (the default), and how to run it.

    ``database``: keep DuckDB's tables in this file instead of memory; ``memory_limit``
    (e.g. ``"4GB"``), ``threads`` (also the columnar plan's threads; default: every core)
    and ``temp_directory`` (where DuckDB spills, and the bucketed plan keeps its files)
    tune it; ``plan`` picks how sessions are assigned (``"auto"``, ``"sql"``,
    ``"columnar"``, ``"bucketed"``; docs/guide.md, section 8); ``buckets`` sets the
    bucketed plan's number of buckets (default: from the input's size and the memory).

    >>> DuckDB(memory_limit="4GB").plan
    'auto'
    """

    database: str | os.PathLike | None = None
    memory_limit: str | None = None
    threads: int | None = None
    temp_directory: str | os.PathLike | None = None
    plan: str = "auto"
    buckets: int | None = None

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise OptionError(f"'plan' must be one of {', '.join(PLANS)} (got {self.plan!r})")
        if self.buckets is not None and (isinstance(self.buckets, bool)
                                         or not isinstance(self.buckets, int)
                                         or self.buckets < 1):
            raise OptionError(f"'buckets' must be a whole number of at least 1 (got "
                              f"{self.buckets!r})")
        if self.buckets is not None and self.plan not in ("auto", "bucketed"):
            raise OptionError(f"'buckets' applies to the bucketed plan (got "
                              f"buckets={self.buckets!r} with plan={self.plan!r})\n"
                              "Hint: plan='bucketed' (or 'auto')")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise OptionError(f"'threads' must be a whole number of at least 1 (got "
                              f"{self.threads!r})")

    def open(self, *, progress: Callable[[str, float | None], None] | None = None,
             events_order: str = "time", events_table: bool = True) -> DuckDBEngine:
        """A running engine for one :func:`sessionize.run`."""
        return DuckDBEngine(database=self.database, memory_limit=self.memory_limit,
                            threads=self.threads, temp_directory=self.temp_directory,
                            progress=progress, plan=self.plan, events_order=events_order,
                            events_table=events_table, buckets=self.buckets)



class DuckDBTable(Table):
    """An output table in the DuckDB engine: a DuckDB table or view, or an Arrow table the
    columnar plan built (registered in the engine when first asked for)."""

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


class DuckDBEngine(Engine):
    """One DuckDB connection holding the input, the compiled stages and the results."""

    name = "duckdb"
    dialect = "duckdb"

    def __init__(self, *, database: str | os.PathLike | None = None,
                 memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: str | os.PathLike | None = None,
                 progress: Callable[[str, float | None], None] | None = None,
                 plan: str = "auto", events_order: str = "time", events_table: bool = True,
                 buckets: int | None = None):
        if plan not in PLANS:
            raise OptionError(f"'plan' must be one of {', '.join(PLANS)} (got {plan!r})")
        check_events_order(events_order)
        super().__init__(progress=progress, events_order=events_order)
        self.plan = plan
        self.threads = threads
        self.buckets = buckets
        self.memory_limit = memory_limit
        self.bucketed: Any = None  # the bucketed plan's files (bucketed.Written), when it ran
        # False when nobody reads the events table (report, thresholds): the columnar
        # plan then reads only the keys, not the input's columns with them
        self.events_table = events_table
        self.database = database
        self.columnar_events: Callable[[], Any] | None = None
        self.columnar_rows: int | None = None
        self.columnar: Any = None  # the columnar plan's kernel.Columnar, when it ran
        self._assign_ready = False
        self.con = duckdb.connect(os.fspath(database) if database else ":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        try:
            if memory_limit:
                self.con.execute(f"SET memory_limit = '{memory_limit}'")
            if threads:
                self.con.execute(f"SET threads = {int(threads)}")
            if temp_directory:
                self.con.execute(f"SET temp_directory = '{os.fspath(temp_directory)}'")
        except duckdb.Error as exc:
            raise OptionError(f"DuckDB refused a setting: {exc}") from exc
        # Removed on close() or when the engine is garbage-collected (results in a
        # notebook are rarely closed), without TemporaryDirectory's ResourceWarning.
        # In temp_directory when given: the bucketed plan keeps its buckets here.
        workdir = tempfile.mkdtemp(prefix="sessionize-", dir=os.fspath(temp_directory)
                                   if temp_directory else None)
        self._workdir = workdir
        self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)
        self._watch = progress is not None

    # -- running --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Report a stage, and DuckDB's own percentage while its statement runs."""
        self._progress(name, None)
        if not self._watch:  # nobody is listening: no thread polling the connection
            yield
            return
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.5):
                try:
                    pct = self.con.query_progress()
                except Exception:  # the connection may be between statements
                    continue
                if pct is not None and pct >= 0:
                    self._progress(name, min(pct, 100.0) / 100.0)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def read(self, source: Any, rules: Rules, *, on_invalid: str,
             stdin: IO[bytes] | None = None) -> LoadedInput:
        with self._stage("reading"):
            return load(self.con, source, text_columns=self._text_columns(rules),
                        on_invalid=on_invalid, workdir=self._workdir, stdin=stdin,
                        id_columns=(rules.columns.user_id, rules.columns.anonymous_id))

    def assign(self, compiled: Any, loaded: LoadedInput, fields: dict[str, Field | None],
               on_invalid: str) -> int:
        self.con.execute(f"CREATE OR REPLACE VIEW sz_prepared AS {compiled.sql('prepared')}")
        self.plan = self._choose_plan(self.rules, loaded)
        if self.plan == "columnar":
            return self._run_columnar(compiled, self.rules, loaded, fields, on_invalid)
        if self.plan == "bucketed":
            return self._run_bucketed(compiled, self.rules, loaded, fields, on_invalid)
        with self._stage("checking"):
            invalid = self.check(loaded, fields, on_invalid)
        with self._stage("sessionizing"):
            self._build_identities(compiled)
            self.con.execute(f"CREATE OR REPLACE TABLE sz_assign AS {compiled.sql('assign')}")
            self.con.execute(
                f"CREATE OR REPLACE TABLE sz_sessions AS {compiled.sql('sessions')}")
            self.con.execute(f"CREATE OR REPLACE TABLE sz_users AS {compiled.sql('users')}")
            # Events are a view: the join back to the input runs when they are read.
            self.con.execute("CREATE OR REPLACE VIEW sz_events AS "
                             f"{compiled.sql(events_stage(self.events_order))}")
        return invalid

    def tables(self, compiled: Any) -> dict[str, Table | None]:
        if self.bucketed is not None:
            return {
                **{name: ParquetTable(self, name, f"sz_{name}", getattr(self.bucketed, name))
                   for name in ("events", "sessions", "users")},
                "quarantine": DuckDBTable(self, "quarantine", "sz_quarantine"),
                "identities": (DuckDBTable(self, "identities", "sz_identities")
                               if compiled.identities is not None else None),
            }
        columnar = self.columnar if self.plan == "columnar" else None
        return {
            "events": DuckDBTable(self, "events", "sz_events", arrow=self.columnar_events,
                                  length=self.columnar_rows),
            "sessions": DuckDBTable(self, "sessions", "sz_sessions",
                                    built=columnar.sessions if columnar is not None else None),
            "users": DuckDBTable(self, "users", "sz_users",
                                 built=columnar.users if columnar is not None else None),
            "quarantine": DuckDBTable(self, "quarantine", "sz_quarantine"),
            "identities": (DuckDBTable(self, "identities", "sz_identities")
                           if compiled.identities is not None else None),
        }

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def write(self, tables: Sequence[Table], out_dir: Any, *, format: str,
              on_file: Callable[[str], None] | None) -> list[str]:
        return write_tables(tables, out_dir, format=format, on_file=on_file)

    def create_quarantine(self, sql: str, loaded: LoadedInput) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE sz_quarantine AS {sql}")
        if loaded.parts:  # name the file and line of every row set aside
            rows = [r[0] - 1 for r in self.con.execute(
                "SELECT source_row FROM sz_quarantine").fetchall()]
            origins = loaded.locate(rows)
            if origins:
                import pyarrow as pa

                self.con.register("sz_origins", pa.table({
                    "r": list(origins), "f": [o[0] for o in origins.values()],
                    "l": pa.array([o[1] for o in origins.values()], pa.int64()),
                    "n": [o[2] for o in origins.values()]}))
                self.con.execute(
                    "UPDATE sz_quarantine SET source_file = o.f, source_line = o.l, "
                    "source_row = o.n FROM sz_origins AS o "
                    "WHERE sz_quarantine.source_row = o.r + 1")
                self.con.unregister("sz_origins")
        if loaded.malformed:
            self.con.executemany(
                "INSERT INTO sz_quarantine (quarantine_reason, source_file, source_line, raw_line) "
                "VALUES (?, ?, ?, ?)",
                [(bad.reason, bad.path, bad.line, bad.text) for bad in loaded.malformed])

    def _build_identities(self, compiled: Any) -> None:
        if compiled.identities is not None:  # the graph's rounds run first (sql/identity.py)
            build_identities(DuckDBRunner(self.con), compiled)

    # -- the columnar plan --------------------------------------------------------------------
    def _choose_plan(self, rules: Rules, loaded: LoadedInput) -> str:
        """The plan that runs: the one asked for, or under ``"auto"``: the SQL plan for a
        rule the columnar kernel does not run, or with a database file (its tables are
        kept there); else the bucketed plan when the columnar plan's estimate
        (:meth:`_fits_in_memory`) does not fit in ``memory_limit`` (without one, in part
        of the machine's memory); else the columnar plan.
        Analyses (``events_table=False``) never pick the bucketed plan: they read the
        per-event assignment, which it does not keep."""
        rule = unsupported_rule(rules)
        if self.plan in ("columnar", "bucketed") and rule is not None:
            kernel = ("" if self.plan == "columnar" else
                      ", the columnar kernel the bucketed plan runs per bucket,")
            raise OptionError(f"plan={self.plan!r}{kernel} does not run the {rule} rule; use "
                              "plan='sql' (which spills to disk under memory_limit) or 'auto' "
                              "(which picks the SQL plan for it)")
        per_bucket = bucketed_unsupported(rules)
        if self.plan == "bucketed" and per_bucket is not None:
            raise OptionError(f"plan='bucketed' does not run the {per_bucket} rule yet; use "
                              "plan='sql' (which spills to disk under memory_limit) or "
                              "'auto' (which picks the SQL plan for it when the input does "
                              "not fit)")
        if self.plan != "auto":
            return self.plan
        if rule is not None or self.database:
            return "sql"
        if not self._fits_in_memory(loaded):  # under memory_limit, else half the memory
            return "bucketed" if self.events_table and per_bucket is None else "sql"
        return "columnar"

    def _input_rows(self, loaded: LoadedInput) -> int:
        """The input's row count (counted once per run; cheap for Parquet and tables)."""
        if getattr(self, "_rows", None) is None:
            self._rows = self.con.execute(f"SELECT count(*) FROM {loaded.table}").fetchall()[0][0]
        return self._rows

    def _bytes_per_row(self, loaded: LoadedInput) -> float:
        """The input's bytes per row in memory, from its first 10,000 rows, plus the keys'
        and the kernel's arrays."""
        if getattr(self, "_per_row", None) is None:
            sample = self.con.sql(f"SELECT * FROM {loaded.table} LIMIT 10000").to_arrow_table()
            self._per_row = sample.nbytes / max(sample.num_rows, 1) + 64
        return self._per_row

    def _memory_budget(self) -> int | None:
        """Bytes the run may hold: ``memory_limit``, else COLUMNAR_MEMORY_SHARE of the
        machine's memory (``None``: unknown)."""
        if self.memory_limit:
            return parse_size(self.memory_limit)
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
        return int(COLUMNAR_MEMORY_SHARE * memory)

    def _fits_in_memory(self, loaded: LoadedInput) -> bool:
        """Whether about three copies of the input (:meth:`_bytes_per_row`) stay under the
        memory budget (:meth:`_memory_budget`)."""
        rows = self._input_rows(loaded)
        budget = self._memory_budget()
        if budget is None:
            return rows <= 10_000_000
        return 3 * rows * self._bytes_per_row(loaded) <= budget

    def _run_bucketed(self, compiled: Any, rules: Rules, loaded: LoadedInput,
                      fields: dict[str, Field | None], on_invalid: str) -> int:
        """Sessionize with the bucketed plan (bucketed.py); returns the number of invalid
        rows, as :meth:`check` does."""
        ts_column = fields["timestamp"].top_level
        columns: list[tuple[str, str | None]] = [
            (c if c == ts_column else compiled.renamed.get(c, c), None if c == ts_column else c)
            for c in loaded.schema]
        if ts_column is None:
            columns.append(("timestamp", None))
        sources = [source for _, source in columns if source is not None]
        layout = Layout(key_names=[e.alias_or_name for e in compiled.keys.expressions],
                        columns=columns,
                        inputs={c: f"{BUCKET_INPUT_PREFIX}{i}" for i, c in enumerate(sources)},
                        message_column=text_column(fields.get("message_id")))
        # the same stages, with the input's columns riding along with the keys
        riding = compile_rules(rules, fields, list(loaded.schema), source=loaded.table,
                               join_back=False, ignore_nulls=self.ignore_nulls)
        rows = self._input_rows(loaded)
        threads = workers(self.threads)
        with self._stage("partitioning"):
            self._build_identities(compiled)
            buckets = self.buckets
            if buckets is None:
                budget = self._memory_budget() or 8 * 2**30
                buckets = bucket_count(rows, self._bytes_per_row(loaded), budget, threads)
            bounds = user_bounds(self.con, f"SELECT {P}user FROM ({compiled.sql('keys')})",
                                 buckets)
        self.bucketed = run_buckets(
            self.con, partition_sql(riding.sql("keys"), layout, bounds, riding.copies),
            len(bounds) + 1,
            os.path.join(self._workdir, "bucketed"), layout, rules,
            events_order=self.events_order, threads=self.threads, progress=self._progress)
        invalid = 0
        if self.bucketed.rows != rows:
            with self._stage("checking"):
                invalid = self.check(loaded, fields, on_invalid)
        return invalid

    def _run_columnar(self, compiled: Any, rules: Rules, loaded: LoadedInput,
                      fields: dict[str, Field | None], on_invalid: str) -> int:
        """Sessionize with the columnar plan; returns the number of invalid rows, as
        :meth:`check` does."""
        ts_column = fields["timestamp"].top_level
        columns: list[tuple[str, str | None]] = [
            (c if c == ts_column else compiled.renamed.get(c, c), None if c == ts_column else c)
            for c in loaded.schema]
        if ts_column is None:
            columns.append(("timestamp", None))
        stream = self._input_stream(columns, text_column(fields.get("message_id")))
        inputs = None if stream is not None else self._inputs_with_keys(compiled, columns)
        with self._stage("sessionizing"):
            self._build_identities(compiled)
            keys = read_keys(self.con, compiled, inputs,
                             text_column(fields.get("message_id")))
        # The keys are the valid events: when they are every row, there is nothing to check.
        rows = self._input_rows(loaded)
        invalid = 0
        if keys.num_rows != rows:
            with self._stage("checking"):
                invalid = self.check(loaded, fields, on_invalid)
        with self._stage("sessionizing"):
            result = assign(keys, gap_us=rules.gap_us, per_event_gap=bool(rules.gaps_us),
                            con=self.con, time_order=self.events_order == "time",
                            inputs=inputs, stream=stream, threads=self.threads, rules=rules)
            result.sessions = enrich(result, self.con, enrichment(rules, fields),
                                     rules.bounce_us, loaded.table)
        self.con.register("sz_sessions", result.sessions)
        self.con.register("sz_users", result.users)
        self.columnar = result
        # output name -> the input's DuckDB type, for register_arrow
        self._input_types = {name: loaded.schema[source] for name, source in columns
                             if source is not None}
        self.columnar_events = lambda: result.events(self.con, columns, self.events_order)
        self.columnar_rows = keys.num_rows
        return invalid

    def _input_stream(self, columns: list[tuple[str, str | None]],
                      message_column: str | None) -> Any:
        """How a time-ordered run reads the input columns the events table shows
        (:class:`kernel.Stream`): one at a time, each on a cursor of its own (the
        connection is not for two threads), once the time order is known. ``None`` when
        the events table is not read, is not in time order, or a cursor cannot see the
        input (a data frame is registered on the connection only): the keys carry them
        then (:meth:`_inputs_with_keys`)."""

        if not self.events_table or self.events_order != "time":
            return None
        sources = [source for _, source in columns if source is not None]
        try:
            probe = self.con.cursor()
            try:
                probe.execute(f"SELECT {ROW} FROM {INPUT_TABLE} LIMIT 0")
            finally:
                probe.close()
        except duckdb.Error:
            return None

        def read(names: list[str]) -> Any:
            cursor = self.con.cursor()
            try:
                cursor.execute("SET TimeZone = 'UTC'")
                selected = ", ".join(quote(c) for c in [*names, ROW])
                # a projection keeps the input's order (DuckDB preserves insertion order)
                return cursor.sql(f"SELECT {selected} FROM {INPUT_TABLE}").to_arrow_table()
            finally:
                cursor.close()

        in_keys = {message_column: f"{P}msg"} if message_column in sources else {}
        return Stream(sources, read, in_keys)

    def _inputs_with_keys(self, compiled: Any,
                          columns: list[tuple[str, str | None]]) -> dict[str, str] | None:
        """The input columns the events table shows, each with the name it gets in the
        keys query, when they are read with the keys (``None``: the events table re-reads
        them from the input when built).

        One query that returns the keys and the input's columns together costs about half
        of a second read of the input (10M events: 2.7 s against 1.9 s + 1.8 s). It is used
        when the run's events table will be read but the input is not streamed (events in
        input order, or a data frame a cursor cannot see: :meth:`_input_stream`), and
        when the keys come straight from
        ``sz_prepared`` (the per-event identity), which still has every input column; the
        other identity policies resolve users through a narrow join."""
        if not self.events_table or compiled.identity != "event":
            return None
        return {source: f"{INPUT_PREFIX}{i}" for i, (_, source) in enumerate(columns)
                if source is not None}

    def register_arrow(self, name: str, table: Any) -> None:
        """Make an Arrow table the columnar plan built queryable as ``name``, with the
        input's DuckDB types where Arrow lost them (JSON arrives as plain text)."""
        self.con.register(f"{name}_arrow", table)
        arrow_types = dict(zip(table.column_names, map(str, self.con.table(f"{name}_arrow").types)))
        casts = [f"CAST({quote(c)} AS {kind}) AS {quote(c)}"
                 for c, kind in self._input_types.items()
                 if c in arrow_types and arrow_types[c] != kind and kind in ("JSON", "UUID")]
        replace = f" REPLACE ({', '.join(casts)})" if casts else ""
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *{replace} FROM {name}_arrow")

    def _no_assignment(self) -> None:
        if self.bucketed is not None:
            raise OptionError(
                "the bucketed plan keeps no per-event assignment table, which the threshold "
                "analysis and the report read.\nHint: give them the source instead of this "
                "result (sessionize.report(source, memory_limit=...) runs the SQL plan, which "
                "spills under memory_limit), or run with plan='columnar' or 'sql'")

    def ensure_assign(self) -> None:
        """Make ``sz_assign`` queryable (the columnar plan builds it on first need)."""
        self._no_assignment()
        if self.columnar is not None and not self._assign_ready:
            self.con.register("sz_assign", self.columnar.assign_table())
            self._assign_ready = True

    def assign_of_users(self, users: list[str], limit: int) -> str:
        """A table with ``sz_assign``'s rows of ``users`` (at least each one's first
        ``limit`` events): on the columnar plan only those rows are built."""
        self._no_assignment()
        if self.columnar is None or self._assign_ready:
            self.ensure_assign()
            return "sz_assign"
        import pyarrow.compute as pc

        codes = pc.index_in(strings(users), self.columnar.names).to_pylist()
        positions = self.columnar.positions_of_users([c for c in codes if c is not None], limit)
        self.con.register("sz_assign_users", self.columnar.assign_table(positions))
        return "sz_assign_users"

    def event_names(self) -> str:
        """A table with every valid event's ``__sz_name`` (the columnar plan's keys, as
        they are, or ``sz_assign``)."""
        self._no_assignment()
        if self.columnar is None or self._assign_ready:
            self.ensure_assign()
            return "sz_assign"
        self.con.register("sz_keys", self.columnar.keys)
        return "sz_keys"

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _text_columns(rules: Rules) -> list[str]:
        c = rules.columns
        return [c.timestamp, c.user_id, c.anonymous_id, c.message_id, c.received_at, c.sent_at,
                c.original_timestamp]

    def resolve(self, loaded: LoadedInput, path: str) -> Field | None:
        """Where a configured column lives: a top-level name, else a dotted struct path."""
        if path in loaded.schema:
            return Field(quote(path), loaded.schema[path], top_level=path)
        head, _, rest = path.partition(".")
        kind = loaded.schema.get(head, "").upper()
        if not rest or not kind.startswith(("STRUCT", "JSON", "MAP")):
            return None
        parts = rest.split(".")
        if kind == "JSON":  # nested objects read from JSON files stay JSON
            json_path = "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in parts)
            sql = f"({quote(head)} -> {_literal(json_path)})"
        else:
            sql = quote(head) + "".join(f"[{_literal(part)}]" for part in parts)
        try:
            kind = str(self.con.sql(f"SELECT {sql} AS x FROM {loaded.table} LIMIT 0").types[0])
        except duckdb.Error:
            return None
        return Field(sql, kind)

    def close(self) -> None:
        if self.columnar is not None:
            self.columnar.close()
        self.con.close()
        self._cleanup()


#: The keys query's names for the input columns it carries (see keys_sql).
INPUT_PREFIX = "__sz_in_"


def keys_sql(compiled: Any, inputs: dict[str, str] | None, omit: tuple[str, ...] = ()) -> str:
    """The compiled ``keys`` stage, with the input columns ``inputs`` (input name: the
    name it gets) added to its select list when given, and without the columns ``omit``."""
    if not inputs and not omit:
        return compiled.sql("keys")
    from sqlglot import exp

    tree = compiled.keys.copy()
    tree.set("expressions", [e for e in tree.expressions if e.alias_or_name not in omit])
    tree = tree.select(*(exp.alias_(exp.column(source, quoted=True), name, quoted=True)
                         for source, name in (inputs or {}).items()), copy=False)
    return tree.sql(dialect="duckdb")


def read_keys(con: duckdb.DuckDBPyConnection, compiled: Any, inputs: dict[str, str] | None,
              message_column: str | None) -> Any:
    """The compiled ``keys`` stage as Arrow, with the input columns ``inputs`` carried
    (see :meth:`DuckDBEngine._inputs_with_keys`).

    Two of its columns are the same values as others, so they are not converted from
    DuckDB twice: the time (``__sz_ts``) is the microseconds (``__sz_ts_us``) seen as a
    timestamp, with no copy; and the messageId (``__sz_msg``) is the carried input column
    ``message_column`` when it is that column unchanged (:func:`compiler.text_column`).
    At 10M events that is 0.5 GB less to convert and hold. The table has the compiled
    stage's columns, in its order, then the carried ones, whichever way they were read.
    """
    import pyarrow as pa

    msg = (inputs or {}).get(message_column) if message_column is not None else None
    omit = (f"{P}ts",) + ((f"{P}msg",) if msg is not None else ())
    table = con.sql(keys_sql(compiled, inputs, omit)).to_arrow_table()
    names = [e.alias_or_name for e in compiled.keys.expressions]
    micros = table.column(f"{P}ts_us")
    same = {f"{P}ts": pa.chunked_array([chunk.view(TS) for chunk in micros.chunks], TS)}
    if msg is not None:
        same[f"{P}msg"] = table.column(msg)
    return pa.table({name: same[name] if name in same else table.column(name)
                     for name in names + list((inputs or {}).values())})


def check_events_order(events_order: str) -> None:
    if events_order not in EVENTS_ORDERS:
        raise OptionError(f"'events_order' must be one of {', '.join(EVENTS_ORDERS)} "
                          f"(got {events_order!r})")


def events_stage(events_order: str) -> str:
    """The compiled stage that builds the events table in ``events_order``."""
    return "events" if events_order == "time" else "events_unordered"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
