"""Run the compiled rules inside PostgreSQL (``engine="postgres"``).

The source is a table (or view) already in the database; every stage runs there as a
temporary view or table of one connection, rendered in PostgreSQL's dialect through
:mod:`sessionize.sql.dialects`, and with ``into=SCHEMA`` the tables are created in that
schema (``sessionize_events``, ``sessionize_sessions``, ``sessionize_users``, and
``sessionize_quarantine`` when rows were set aside) in one transaction: all of them
or none. No event row travels to the client unless asked for (``to_arrow()``).

Input order, the last tie-breaker, is the table's physical order (``ctid``): the order
rows were loaded in, for a table loaded once. The connection's time zone is set to UTC
for the run (``SET TimeZone``), as on DuckDB; nothing the rules compute depends on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlglot

from ..errors import InputError, OptionError
from ..io.inputs import LoadedInput
from ..result import Table
from ..rules import Rules
from ..sql.compiler import Field, quote
from ..sql.dialects import rewrite
from .base import Engine

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Postgres", "PostgresEngine", "PostgresTable"]

DIALECT = "postgres"
#: The names of the tables ``into=SCHEMA`` creates, per output table.
PREFIX = "sessionize_"
#: PostgreSQL's types as DuckDB names them: the compiler decides by DuckDB type names.
_TYPES = {"text": "VARCHAR", "character varying": "VARCHAR", "character": "VARCHAR",
          "bigint": "BIGINT", "integer": "INTEGER", "smallint": "SMALLINT",
          "double precision": "DOUBLE", "real": "FLOAT", "numeric": "DECIMAL",
          "boolean": "BOOLEAN", "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
          "timestamp without time zone": "TIMESTAMP", "date": "DATE", "json": "JSON",
          "jsonb": "JSONB", "uuid": "UUID"}


def require_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ImportError("engine='postgres' needs psycopg; install it with: "
                          "pip install 'sessionize[postgres]'") from exc
    return psycopg


@dataclasses.dataclass(frozen=True, kw_only=True)
class Postgres:
    """Run the compiled rules inside PostgreSQL.

    ``dsn`` (``postgresql://user@host/db``) or ``connection`` (an open psycopg 3
    connection, left open afterwards); ``into``: the schema where the tables are created
    (``sessionize_events``, ``_sessions``, ``_users``, ``_quarantine``; replaced if they
    exist), or ``None`` to keep them as temporary tables of the run's connection.

    >>> Postgres(dsn="postgresql://localhost/analytics", into="sessions").into
    'sessions'
    """

    dsn: str | None = None
    connection: Any = None
    into: str | None = None

    def __post_init__(self) -> None:
        if (self.dsn is None) == (self.connection is None):
            raise OptionError("engine='postgres' needs a dsn= or a connection=, one of them "
                              f"(got dsn={self.dsn!r}, connection={self.connection!r})\n"
                              "Hint: sessionize.Postgres(dsn='postgresql://user@host/db')")
        if self.into is not None and (not isinstance(self.into, str) or not self.into.strip()):
            raise OptionError(f"'into' must name a schema (got {self.into!r})")

    def open(self, *, progress: Callable[[str, float | None], None] | None = None,
             events_order: str = "time", events_table: bool = True) -> PostgresEngine:
        psycopg = require_psycopg()
        if self.connection is not None:
            return PostgresEngine(self.connection, owns=False, into=self.into,
                                  progress=progress, events_order=events_order)
        try:
            connection = psycopg.connect(self.dsn)
        except psycopg.Error as exc:
            raise OptionError(f"cannot connect to PostgreSQL at {self.dsn!r}: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
        return PostgresEngine(connection, owns=True, into=self.into, progress=progress,
                              events_order=events_order)


class PostgresTable(Table):
    """An output table inside PostgreSQL (a temporary table or view, or ``into``'s)."""

    def __init__(self, engine: PostgresEngine, name: str, relation: str):
        self._engine = engine
        self.name = name
        self.relation = relation

    @property
    def columns(self) -> list[str]:
        with self._engine.con.cursor() as cur:
            cur.execute(f"SELECT * FROM {self.relation} LIMIT 0")
            return [d.name for d in cur.description]

    def __len__(self) -> int:
        return self._engine.con.execute(f"SELECT count(*) FROM {self.relation}").fetchone()[0]

    def to_arrow(self, *, limit: int | None = None) -> pa.Table:
        """The table as a ``pyarrow.Table`` (its rows travel to the client)."""
        import json

        import pyarrow as pa

        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        with self._engine.con.cursor() as cur:
            cur.execute(f"SELECT * FROM {self.relation}{tail}")
            names = [d.name for d in cur.description]
            records = cur.fetchall()
        columns = list(zip(*records)) if records else [() for _ in names]
        arrays = []
        for values in columns:
            if any(isinstance(v, (dict, list)) for v in values):  # JSON, as DuckDB gives it
                values = tuple(None if v is None else json.dumps(v, separators=(",", ":"))
                               for v in values)
            arrays.append(pa.array(values))
        return pa.table(dict(zip(names, arrays))) if names else pa.table({})

    def to_arrow_batches(self, batch_size: int = 1_000_000) -> pa.RecordBatchReader:
        import pyarrow as pa

        table = self.to_arrow()
        return pa.RecordBatchReader.from_batches(table.schema,
                                                 table.to_batches(max_chunksize=batch_size))


class PostgresEngine(Engine):
    """The compiled stages as temporary views and tables of one PostgreSQL connection."""

    name = "postgres"
    dialect = DIALECT
    ignore_nulls = False  # PostgreSQL has no LAST_VALUE(... IGNORE NULLS)
    carry_micros = True  # its exact microseconds are numeric arithmetic (EXTRACT(EPOCH ...))

    def __init__(self, con: Any, *, owns: bool, into: str | None,
                 progress: Callable[[str, float | None], None] | None = None,
                 events_order: str = "time"):
        super().__init__(progress=progress, events_order=events_order)
        self.con = con
        self._owns = owns
        self.into = into
        self._created: list[str] = []
        self._execute("SET TimeZone = 'UTC'")

    # -- SQL ------------------------------------------------------------------------------
    @staticmethod
    def render(duckdb_sql: str) -> str:
        """DuckDB-flavoured SQL (as the compiler writes it) in PostgreSQL's dialect."""
        tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
        return rewrite(tree, DIALECT).sql(dialect=DIALECT)

    def _execute(self, sql: str, params: Any = None) -> Any:
        psycopg = require_psycopg()
        try:
            return self.con.execute(sql, params)
        except psycopg.Error as exc:
            self.con.rollback()
            raise InputError(f"PostgreSQL refused a statement: "
                             f"{str(exc).strip().splitlines()[0]}") from exc

    def _create(self, kind: str, name: str, duckdb_sql: str) -> None:
        self._execute(f"DROP {kind} IF EXISTS {name} CASCADE")
        self._execute(f"CREATE TEMPORARY {kind} {name} AS {self.render(duckdb_sql)}")
        self._created.append(f"{kind} {name}")

    # -- the pipeline -----------------------------------------------------------------------
    def read(self, source: Any, rules: Rules, *, on_invalid: str, stdin: Any = None
             ) -> LoadedInput:
        if rules.identity == "graph":
            raise OptionError("identity='graph' does not run on engine='postgres' yet: its "
                              "rounds compare composite keys PostgreSQL orders differently "
                              "(got identity='graph')\nHint: identity='stitch' or 'first' "
                              "run inside PostgreSQL; the graph runs on DuckDB and Spark")
        if not isinstance(source, str) or not source.strip():
            raise OptionError("engine='postgres' reads a table in the database: give its name, "
                              f"e.g. 'segment.tracks' (got {source!r})")
        schema_name, _, table = source.rpartition(".")
        found = self._execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), c.relkind "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (source,)).fetchall()
        if not found:
            raise InputError(f"the database has no table {source!r}\nHint: name it as "
                             "SCHEMA.TABLE, e.g. segment.tracks (the search_path applies "
                             f"without a schema{'' if schema_name else '; none was given'})")
        schema = {name: _duckdb_type(kind) for name, kind, _ in found}
        if "__sz_row" in schema:
            raise InputError("the input has a column named '__sz_row', which sessionize "
                             "reserves")
        # a table's physical order is the order its rows were loaded in; a view has none
        order = "ctid" if found[0][2] in ("r", "m", "p") else "NULL"
        self._execute("DROP VIEW IF EXISTS sz_input CASCADE")
        self._execute(f"CREATE TEMPORARY VIEW sz_input AS SELECT *, "
                      f"ROW_NUMBER() OVER (ORDER BY {order}) - 1 AS __sz_row FROM {source}")
        self._created.append("VIEW sz_input")
        return LoadedInput(table="sz_input", schema=schema, description=f"table {source}",
                           malformed=[])

    def resolve(self, loaded: LoadedInput, path: str) -> Field | None:
        if path in loaded.schema:
            return Field(quote(path), loaded.schema[path], top_level=path)
        head, _, rest = path.partition(".")
        kind = loaded.schema.get(head, "")
        if not rest or kind not in ("JSON", "JSONB"):
            return None
        json_path = "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in rest.split("."))
        column = quote(head) if kind == "JSON" else f"CAST({quote(head)} AS JSON)"
        return Field(f"json_extract_string({column}, '{json_path}')", "VARCHAR")

    def assign(self, compiled: Any, loaded: LoadedInput, fields: dict[str, Field | None],
               on_invalid: str) -> int:
        self._create("VIEW", "sz_prepared", compiled.texts["prepared"])
        self._progress("checking", None)
        invalid = self.check(loaded, fields, on_invalid)
        self._progress("sessionizing", None)
        if compiled.texts.get("identities"):
            self._create("TABLE", "sz_identities", compiled.texts["identities"])
        self._create("TABLE", "sz_assign", compiled.texts["assign"])
        self._create("TABLE", "sz_sessions", compiled.texts["sessions"])
        self._create("TABLE", "sz_users", compiled.texts["users"])
        stage = "events" if self.events_order == "time" else "events_unordered"
        self._create("VIEW", "sz_events", compiled.texts[stage])
        return invalid

    def create_quarantine(self, sql: str, loaded: LoadedInput) -> None:
        self._create("TABLE", "sz_quarantine", sql)

    def tables(self, compiled: Any) -> dict[str, Table | None]:
        names = ["events", "sessions", "users", "quarantine"]
        if compiled.identities is not None:
            names.append("identities")
        relations = {name: f"sz_{name}" for name in names}
        if self.into is not None:
            relations = self._publish(names)
        self.con.commit()
        return {name: PostgresTable(self, name, relations[name]) for name in names} | (
            {"identities": None} if "identities" not in names else {})

    def _publish(self, names: list[str]) -> dict[str, str]:
        """Create the tables in ``into``, replacing any of the same names, in one
        transaction; the quarantine table only when rows were set aside."""
        schema = quote(self.into)  # type: ignore[arg-type]
        self._execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        out = {}
        for name in names:
            target = f"{schema}.{quote(PREFIX + name)}"
            self._execute(f"DROP TABLE IF EXISTS {target}")
            if name == "quarantine" and not self.rows("SELECT count(*) FROM sz_quarantine")[0][0]:
                out[name] = f"sz_{name}"
                continue
            self._execute(f"CREATE TABLE {target} AS SELECT * FROM sz_{name}")
            out[name] = target
        return out

    def rows(self, sql: str) -> list[tuple]:
        return self._execute(self.render(sql)).fetchall()

    def write(self, tables: Sequence[Table], out_dir: Any, *, format: str,
              on_file: Callable[[str], None] | None) -> list[str]:
        raise OptionError("engine='postgres' keeps its tables in the database: give "
                          "into='SCHEMA' (--into SCHEMA) to create them there "
                          f"(got an output directory {str(out_dir)!r})\nHint: "
                          "result.sessions.to_arrow() fetches a table to the client")

    def close(self) -> None:
        if self._owns:
            self.con.close()
            return
        if self.con.closed:
            return
        self.con.rollback()
        for created in reversed(self._created):  # a connection the caller keeps: tidy up
            kind, name = created.split()
            self.con.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
        self.con.commit()


def _duckdb_type(kind: str) -> str:
    base = kind.split("(")[0].strip()
    if base.endswith("[]"):
        return "JSON"
    return _TYPES.get(base, base.upper())
