"""What every engine shares: the run's pipeline, field resolution, bad rows, results.

An engine runs the compiled rules where the data lives. Each one reads its input its
own way and keeps its tables its own way; everything else is here, once:

1. ``read``      the input, with ``__sz_row`` (input order) and its schema   (engine)
2. ``fields``    where each field the rules read lives; a named column that is
                 missing is an :class:`~sessionize.InputError` naming it       (here)
3. compile       :func:`sessionize.sql.compiler.compile_rules`                (here)
4. ``assign``    sessions, users and events from the compiled stages          (engine)
5. ``check``     invalid rows: an error naming the first few, or a count      (here)
6. ``quarantine``  the rows set aside, each with its reason                     (here + engine)
7. ``result``    a :class:`~sessionize.Result` over the engine's tables        (engine)

SQL that the shared steps run is DuckDB-flavoured, as the compiler writes it, over the
stage names ``sz_prepared``, ``sz_users``, ...; :meth:`Engine.rows` renders it for the
engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError, InvalidEventsError
from ..io.inputs import LoadedInput as Input
from ..result import Result, Table
from ..rules import Rules
from ..sql.compiler import COLUMN_FIELDS, Field, compile_rules, field_paths, quote

__all__ = ["Engine", "MAX_REPORTED", "invalid_events_error"]

#: How many invalid rows an error message names.
MAX_REPORTED = 5

Progress = Callable[[str, "float | None"], None]


class Engine:
    """The base of every engine: the pipeline of :func:`sessionize.run` (module docstring).

    Subclasses set ``name`` and ``dialect`` and implement ``read``, ``resolve``,
    ``assign``, ``rows``, ``create_quarantine``, ``tables``, ``write`` and ``close``.
    """

    name = "engine"
    dialect = "duckdb"
    #: False for engines without LAST_VALUE(... IGNORE NULLS) (compile_rules)
    ignore_nulls = True
    #: True where exact epoch microseconds are dear to compute (compile_rules)
    carry_micros = False

    def __init__(self, *, progress: Progress | None = None, events_order: str = "time"):
        self.events_order = events_order
        self._progress: Progress = progress or (lambda stage, fraction: None)
        self.plan = "sql"

    # -- the pipeline ---------------------------------------------------------------------
    def run(self, source: Any, rules: Rules, *, on_invalid: str, stdin: Any = None) -> Result:
        self.rules = rules
        self._progress("reading", None)
        loaded = self.read(source, rules, on_invalid=on_invalid, stdin=stdin)
        fields = self.fields(loaded, rules)
        compiled = compile_rules(rules, fields, list(loaded.schema), source=loaded.table,
                                 ignore_nulls=self.ignore_nulls,
                                 carry_micros=self.carry_micros)
        invalid = self.assign(compiled, loaded, fields, on_invalid)
        self.create_quarantine(self.quarantine_sql(loaded, fields, invalid), loaded)
        return Result(engine=self, rules=rules, compiled=compiled, plan=self.plan,
                      source=loaded.description, quarantined=invalid, **self.tables(compiled))

    # -- what each engine does its own way ------------------------------------------------
    def read(self, source: Any, rules: Rules, *, on_invalid: str, stdin: Any) -> Input:
        raise NotImplementedError

    def resolve(self, loaded: Input, path: str) -> Field | None:
        """Where a column lives: a top-level name, else a dotted path into a struct."""
        raise NotImplementedError

    def assign(self, compiled: Any, loaded: Input, fields: dict[str, Field | None],
               on_invalid: str) -> int:
        """Build the sessions, users and events; return the number of invalid rows."""
        raise NotImplementedError

    def rows(self, sql: str) -> list[tuple]:
        """Rows of a small DuckDB-flavoured query over this run's stages."""
        raise NotImplementedError

    def create_quarantine(self, sql: str, loaded: Input) -> None:
        """Make ``sz_quarantine`` from ``sql`` plus the input's malformed lines."""
        raise NotImplementedError

    def tables(self, compiled: Any) -> dict[str, Table | None]:
        """The result's tables: events, sessions, users, quarantine, identities."""
        raise NotImplementedError

    def write(self, tables: Sequence[Table], out_dir: Any, *, format: str,
              on_file: Callable[[str], None] | None) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- shared steps ---------------------------------------------------------------------
    def fields(self, loaded: Input, rules: Rules) -> dict[str, Field | None]:
        """Every field the rules read, resolved in the input.

        Columns the user named must exist; Segment's defaults (the library name for
        ``gap_by="platform"``, ``context.timezone``, the UTM fields, what ``enrich``
        reads) may be absent, which reads as missing values.
        """
        columns = rules.columns
        paths = field_paths(rules)
        fields = {name: self.resolve(loaded, paths[name][0]) for name in COLUMN_FIELDS}
        if (fields["timestamp"] is None or fields["user_id"] is fields["anonymous_id"] is None) \
                and self._empty(loaded):
            # An input without rows has no columns to speak of (an empty file, a CSV whose
            # every record was malformed): it is zero events, whatever it lacks.
            nothing = Field("CAST(NULL AS VARCHAR)", "VARCHAR")
            fields = {name: field or nothing for name, field in fields.items()}
        if fields["user_id"] is None and fields["anonymous_id"] is None:
            raise InputError(
                f"the input has neither a {columns.user_id!r} nor an "
                f"{columns.anonymous_id!r} column, so no event can be given a user.\n"
                f"Hint: name the columns with user_id= / anonymous_id= (--user-id / "
                f"--anonymous-id); the input has: {', '.join(loaded.schema)}")
        if fields["timestamp"] is None:
            raise InputError(
                f"the input has no timestamp column {columns.timestamp!r}.\n"
                f"Hint: name it with timestamp= (--timestamp); the input has: "
                f"{', '.join(loaded.schema)}")
        for name, (path, required) in paths.items():
            if name in fields:
                continue
            fields[name] = self.resolve(loaded, path)
            if fields[name] is None and required and not self._empty(loaded):
                rule = name.split("_")[0].split(":")[0]
                raise InputError(
                    f"the input has no column {path!r}, which the {rule} rule reads.\n"
                    f"Hint: the input has: {', '.join(loaded.schema)}")
        return fields

    def _empty(self, loaded: Input) -> bool:
        """Whether the input has no rows (asked only when a column is missing)."""
        return self.rows(f"SELECT count(*) FROM {loaded.table}")[0][0] == 0

    def check(self, loaded: Input, fields: dict[str, Field | None], on_invalid: str) -> int:
        """Count the invalid rows of ``sz_prepared``; unless they are to be quarantined,
        raise naming the first few. Duplicates set aside by ``dedupe=True`` are counted,
        never an error."""
        total, count = self.rows(
            "SELECT count(*), count(*) FILTER (WHERE __sz_invalid <> 'duplicate_message_id') "
            "FROM sz_prepared WHERE __sz_invalid IS NOT NULL")[0]
        if count == 0 or on_invalid == "quarantine":
            return total
        raw = f"CAST({fields['timestamp'].sql} AS VARCHAR)"  # type: ignore[union-attr]
        if self.rules.midnight == "event":
            raw = f"CASE WHEN __sz_invalid = 'invalid_timezone' THEN __sz_zone ELSE {raw} END"
        found = self.rows(
            f"SELECT __sz_row + 1, __sz_msg, __sz_invalid, {raw} "
            f"FROM sz_prepared WHERE __sz_invalid IS NOT NULL "
            f"AND __sz_invalid <> 'duplicate_message_id' ORDER BY __sz_row "
            f"LIMIT {MAX_REPORTED}")
        names = (self.rules.columns.user_id, self.rules.columns.anonymous_id)
        origins = loaded.locate(row[0] - 1 for row in found)
        several = sum(len(part.files) for part in loaded.parts) > 1
        problems = [_problem(*row, names, origins.get(row[0] - 1), several) for row in found]
        raise invalid_events_error(count, problems, loaded.description, names)

    @staticmethod
    def quarantine_sql(loaded: Input, fields: dict[str, Field | None], invalid: int, *,
                       reason: str = "__sz_invalid", joined: str = "",
                       where: str = "__sz_invalid IS NOT NULL") -> str:
        """The invalid rows of ``sz_prepared`` (alias ``p``) with the input's columns (the
        time as text, as it came) and the quarantine's columns, in input order.
        ``reason``, ``joined`` and ``where`` let the incremental state add its own rows
        set aside (too late) from a join to the batch's status."""
        ts = fields["timestamp"]
        top = ts.top_level if ts is not None else None
        shown = [f"CAST(p.{quote(c)} AS VARCHAR) AS {quote(c)}" if c == top
                 else f"p.{quote(c)}" for c in loaded.schema]
        return (f"SELECT {''.join(s + ', ' for s in shown)}{reason} AS quarantine_reason, "
                "p.__sz_row + 1 AS source_row, CAST(NULL AS VARCHAR) AS source_file, "
                "CAST(NULL AS BIGINT) AS source_line, CAST(NULL AS VARCHAR) AS raw_line "
                f"FROM sz_prepared AS p{joined} WHERE {where if invalid else 'false'} "
                "ORDER BY p.__sz_row")


def invalid_events_error(count: int, problems: list[dict], description: str,
                         user_columns: tuple[str, str]) -> InvalidEventsError:
    """The one message for invalid rows, shared by every engine."""
    more = f"\n... and {count - len(problems)} more" if count > len(problems) else ""
    return InvalidEventsError(
        f"{count} invalid event{'s' if count != 1 else ''} in {description}:\n  "
        + "\n  ".join(p["message"] for p in problems) + more
        + "\nAccepted timestamps: ISO-8601 text YYYY-MM-DD[THH:MM:SS[.ffffff][Z|+HH:MM]] "
          "(no offset means UTC), epoch seconds or milliseconds (numbers or numeric text), "
          "or a timestamp column, from 0001-01-01 to 9999-12-31 UTC; every event needs a "
          f"non-empty {user_columns[0]} or {user_columns[1]} (white space, true/false, "
          "lists and objects are missing)."
          "\nHint: on_invalid='quarantine' (--on-invalid quarantine) sets these rows aside "
          "in a quarantine table with a reason each and processes the rest.",
        problems=problems, count=count)


def _problem(row: int, msg: str | None, reason: str, raw: str | None,
             user_columns: tuple[str, str],
             origin: tuple[str, int | None, int] | None = None, several: bool = False) -> dict:
    """One invalid row: ``row`` is its 1-based place in the input (in its file, for
    Parquet); ``origin`` (file, line, row in the file) where the input is files."""
    file = line = None
    where = f"row {row}"
    if origin is not None:
        file, line, within = origin
        if line is None:  # Parquet: rows, no lines
            row = within
            where = f"row {row}"
        elif line != row or several:
            where = f"line {line}, row {row}"
        if several:
            where = f"{file!r} {where}"
    where += f" (messageId {msg!r})" if msg else ""
    if reason == "missing_timestamp":
        text = f"{where}: the timestamp is missing"
        field, value = "timestamp", None
    elif reason == "invalid_timestamp":
        text = f"{where}: timestamp {raw!r} is not a time"
        field, value = "timestamp", raw
    elif reason == "invalid_timezone":
        text = (f"{where}: time zone {raw!r} is not an IANA time zone name "
                "(such as 'Europe/Berlin'); midnight='event' reads it")
        field, value = "timezone", raw
    else:
        text = f"{where}: neither {user_columns[0]} nor {user_columns[1]} is set"
        field, value = "/".join(user_columns), None
    return {"row": row, "file": file, "line": line, "message_id": msg, "field": field,
            "value": value, "reason": reason, "message": text}
