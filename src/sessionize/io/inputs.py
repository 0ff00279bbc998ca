"""Read events from files or in-memory tables into the engine.

Every source ends up as one DuckDB view, ``sz_input``, with a column ``__sz_row``
giving the input order (files in the order given, directories and globs sorted by
name). That order is the last tie-breaker, after timestamp and messageId. Parquet
and in-memory tables are read in place; JSON and CSV are parsed once into a table.

Files: JSON array (the notebook's format), newline-delimited JSON (``.ndjson``,
``.jsonl``, and anything ``.gz``, as Segment's S3 destination writes), Parquet
and CSV; a directory is read recursively; a glob is expanded. DataFrames:
pandas, polars (eager or lazy), pyarrow Table / RecordBatchReader, and DuckDB
relations.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import gzip
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, OptionError
from ..sql.compiler import quote
from .scan import MalformedLine, malformed_csv_error, malformed_error, scan_csv, scan_json

__all__ = ["LoadedInput", "MalformedLine", "load"]

INPUT_TABLE = "sz_input"
ROW = "__sz_row"  # the input order: a column of sz_input, never part of the output

_FORMATS = {
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
}
_ACCEPTED = "JSON array (.json), NDJSON (.ndjson, .jsonl, .gz), Parquet (.parquet) or CSV (.csv)"


@dataclasses.dataclass
class LoadedInput:
    table: str
    schema: dict[str, str]
    description: str
    malformed: list[MalformedLine]
    #: The files behind the rows, in row order (empty for data frames): see :meth:`locate`.
    parts: list[Part] = dataclasses.field(default_factory=list)
    workdir: str | None = None

    def locate(self, rows: Iterable[int]) -> dict[int, tuple[str, int | None, int]]:
        """Where rows (``__sz_row`` values) came from: ``(file, line, row in the file)``,
        1-based; ``line`` is ``None`` for Parquet. Empty for data frames.

        Counting lines costs a pass over the files (the careful pass already knows them),
        so it is done only for the rows an error or the quarantine names."""
        wanted = sorted(set(rows))
        if not wanted or not self.parts:
            return {}
        if [part.fmt for part in self.parts] == ["parquet"]:  # numbered (file, row in file)
            files = self.parts[0].files
            return {row: (files[row >> 40][1], None, (row & ((1 << 40) - 1)) + 1)
                    for row in wanted if row >> 40 < len(files)}
        found: dict[int, tuple[str, int | None, int]] = {}
        start = 0
        pending = iter(wanted)
        row = next(pending, None)
        for part in self.parts:
            for path, shown in part.files:
                if row is None:
                    return found
                lines = part.lines.get(path)
                if lines is None:
                    lines = _row_lines(path, part.fmt, self.workdir)
                count = len(lines) if lines is not None else _parquet_rows(path)
                while row is not None and row < start + count:
                    within = row - start
                    found[row] = (shown, lines[within] if lines is not None else None,
                                  within + 1)
                    row = next(pending, None)
                start += count
        return found


@dataclasses.dataclass
class Part:
    """Files of one format, in the order their rows come in the input table, with the
    input line of each row where a careful pass already counted them."""

    fmt: str
    files: list[tuple[str, str]]  # (the path read, the name shown)
    lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def _row_lines(path: str, fmt: str, workdir: str | None) -> list[int] | None:
    """The input line of each row of a file, as DuckDB reads it (None for Parquet)."""
    if fmt == "parquet":
        return None
    if fmt == "csv":
        delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
        return scan_csv(path, delimiter, workdir or tempfile.gettempdir(),
                        lines_only=True).lines
    return scan_json(path, fmt, workdir or tempfile.gettempdir(), {}, lines_only=True).lines


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def file_format(path: str) -> str:
    """The reader for a path, from its extensions (``.ndjson.gz`` -> ndjson).

    >>> file_format("events.json"), file_format("2024/01/1704067200.gz")
    ('json', 'ndjson')
    >>> file_format("x.csv.gz")
    'csv'
    """
    name = path.lower()
    if name.endswith(".gz"):
        inner = Path(name[:-3]).suffix
        return _FORMATS.get(inner, "ndjson") if inner != ".json" else "ndjson"
    suffix = Path(name).suffix
    if suffix not in _FORMATS:
        raise InputError(
            f"cannot tell the format of {path!r} from its extension {suffix or '(none)'!r}.\n"
            f"Hint: sessionize reads {_ACCEPTED}; rename the file or pass a DataFrame."
        )
    return _FORMATS[suffix]


def expand_paths(sources: Iterable[str | os.PathLike]) -> list[str]:
    """Files named by paths, directories (recursive) and globs, in a stable order."""
    files: list[str] = []
    for source in sources:
        text = os.fspath(source)
        if os.path.isdir(text):
            # names starting with "." or "_" are skipped, files and directories alike
            # (staging directories, _SUCCESS markers, .DS_Store)
            found = sorted(
                str(p) for p in Path(text).rglob("*")
                if p.is_file() and not any(part.startswith((".", "_"))
                                           for part in p.relative_to(text).parts)
            )
            if not found:
                raise InputError(f"directory {text!r} holds no files")
            files.extend(found)
        elif any(ch in text for ch in "*?["):
            found = sorted(p for p in globlib.glob(text, recursive=True) if os.path.isfile(p))
            if not found:
                raise InputError(f"no files match {text!r}")
            files.extend(found)
        elif os.path.isfile(text):
            files.append(text)
        else:
            raise InputError(f"input {text!r} does not exist")
    return files


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# Segment's top-level fields that are text. They are read as text whatever they look like
# (DuckDB would otherwise make UUID-looking ids UUIDs, lower-casing them, and parse
# timestamps its own way: one parser, the compiler's, decides what a valid time is).
_SEGMENT_TEXT = {
    "type", "event", "name", "userId", "anonymousId", "messageId", "previousId", "groupId",
    "timestamp", "originalTimestamp", "sentAt", "receivedAt", "channel", "category",
}
_SCALAR_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "UBIGINT", "HUGEINT")


def _json_table(con: Any, files: list[str], fmt: str, text_columns: Iterable[str],
                table: str, id_columns: Iterable[str] = ()) -> str:
    """Parse JSON files into ``table`` with every top-level key of every object as a
    column; returns ``table``.

    DuckDB infers a schema from a sample and silently drops keys it did not see there, so
    the keys are also collected from the whole input (a fast pass that only splits
    objects). Nested objects stay lossless as JSON (reachable by dotted paths); scalar
    keys keep the type the sample suggests, text fields are text.

    The sample's keys are nearly always all the keys, so the sample is typed and the
    table parsed with them while a second cursor collects the whole input's keys at the
    same time (a JSON array parses on one core, so the two passes share the machine's
    cores); when the whole input has a key the sample lacks, the table is parsed again
    with it.
    """
    try:
        return _json_table_sized(con, files, fmt, text_columns, table, "", id_columns)
    except Exception as exc:  # duckdb raises several types
        if "maximum_object_size" not in str(exc):
            raise
    # DuckDB's default buffer holds objects up to 16-32 MiB, and is faster for it
    return _json_table_sized(con, files, fmt, text_columns, table,
                             f", maximum_object_size={LARGE_OBJECT_BYTES}", id_columns)


#: Objects too large for DuckDB's default buffer are read again with one this large.
LARGE_OBJECT_BYTES = 1 << 28


def _json_table_sized(con: Any, files: list[str], fmt: str, text_columns: Iterable[str],
                      table: str, size: str, id_columns: Iterable[str] = ()) -> str:
    json_format = "newline_delimited" if fmt == "ndjson" else _json_layout(files)
    listed = _sql_list(files)
    text = _SEGMENT_TEXT | set(text_columns)
    # An id holding true, [...] or {...} is missing (never a user), which only its JSON type
    # tells: the pass over every key also notes ids holding anything but text and numbers.
    marks = "".join(
        f"CASE WHEN json_type(json -> {_key_path(key)}) IN ('BOOLEAN', 'ARRAY', 'OBJECT') "
        f"THEN [{_sql_text(_NOT_TEXT + key)}] ELSE [] END, "
        for key in dict.fromkeys(id_columns))
    every = f"list_concat({marks}json_keys(json))" if marks else "json_keys(json)"
    cursor = con.cursor()
    with cursor, ThreadPoolExecutor(1) as pool:
        every_key = pool.submit(lambda: [row[0] for row in cursor.execute(
            f"SELECT DISTINCT unnest({every}) FROM read_json_objects({listed}, "
            f"format='{json_format}'{size})").fetchall()])
        try:
            kinds = _sampled_types(con, listed, json_format, size)
            _create_json_table(con, listed, json_format, kinds, text, table, size)
        except Exception:
            every_key.exception()  # both passes end before the error is handled
            raise
        keys = every_key.result()
    mixed = {k[len(_NOT_TEXT):] for k in keys if k.startswith(_NOT_TEXT)}
    missing = sorted(k for k in keys if k not in kinds and not k.startswith(_NOT_TEXT))
    if missing or mixed:
        _create_json_table(con, listed, json_format,
                           {**kinds, **{k: "JSON" for k in [*missing, *mixed]}}, text - mixed,
                           table, size)
    return table


#: Marks an id key holding values other than text and numbers in the pass over every key.
_NOT_TEXT = "\x00not text:"


def _create_json_table(con: Any, listed: str, json_format: str, kinds: dict[str, str],
                       text: set[str], table: str, size: str) -> None:
    columns = {}
    for key, kind in kinds.items():
        if key in text or kind in ("VARCHAR", "UUID") or kind.startswith(("TIMESTAMP", "DATE")):
            columns[key] = "VARCHAR"
        elif kind in _SCALAR_TYPES and _fits(con, listed, json_format, key, kind, size):
            columns[key] = kind
        else:
            columns[key] = "JSON"
    spec = "{" + ", ".join(f"{_sql_text(k)}: '{v}'" for k, v in columns.items()) + "}"
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_json({listed}, "
        f"format='{json_format}', columns={spec}{size})")


#: How many objects the type sample reads (DuckDB's own schema sample size).
SAMPLE_OBJECTS = 20_480


def _sampled_types(con: Any, listed: str, json_format: str, size: str = "") -> dict[str, str]:
    """A type per key of the first objects, from the JSON types of its values there, keys
    in the order they first appear.

    Text is VARCHAR, integers BIGINT (UBIGINT, HUGEINT when they need it), numbers with
    a fraction DOUBLE, true/false BOOLEAN; objects, arrays, keys never set in the sample
    and mixtures without text are JSON. (Reading only the JSON types of a sample is much
    cheaper than asking ``read_json`` to infer a schema.)
    """
    rows = con.execute(f"""
        WITH sample AS (
            SELECT json, row_number() OVER () AS n FROM (
                SELECT json FROM read_json_objects({listed}, format='{json_format}'{size})
                LIMIT {SAMPLE_OBJECTS})),
        pairs AS (
            SELECT n, json, unnest(json_keys(json)) AS k,
                   generate_subscripts(json_keys(json), 1) AS i FROM sample)
        SELECT k, list(DISTINCT json_type(json -> {_key_path_sql("k")})) FROM pairs
        GROUP BY k ORDER BY min(n * 1000000 + i)""").fetchall()
    return {key: _kind({t for t in (types or []) if t not in (None, "NULL")})
            for key, types in rows}


def _kind(types: set[str]) -> str:
    if "VARCHAR" in types:
        return "VARCHAR"
    if types == {"BOOLEAN"}:
        return "BOOLEAN"
    if types and types <= {"BIGINT", "UBIGINT", "DOUBLE"}:
        if "DOUBLE" in types:
            return "DOUBLE"
        return "HUGEINT" if len(types) == 2 else types.pop()
    return "JSON"


def _json_layout(files: list[str]) -> str:
    """``array`` when every file starts with ``[``, else ``newline_delimited``.

    DuckDB can tell by itself (``format='auto'``), but that costs a second pass.
    """
    layouts = set()
    for path in files:
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        layouts.add("array" if head.startswith(b"[") else "newline_delimited")
    return layouts.pop() if len(layouts) == 1 else "auto"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key_path(key: str) -> str:
    """A JSON path literal naming one top-level key, whatever it holds (a bare key that
    starts with ``$`` or holds ``.`` would be read as a path)."""
    return _sql_text('$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _key_path_sql(column: str) -> str:
    """:func:`_key_path` for keys in a SQL column."""
    return (f"('$.\"' || replace(replace({column}, '\\', '\\\\'), '\"', '\\\"') "
            "|| '\"')")


def _fits(con: Any, listed: str, json_format: str, key: str, kind: str, size: str = "") -> bool:
    """Whether every value of a scalar key casts to the type the sample suggested."""
    value = f"(json -> {_key_path(key)})"
    bad = con.execute(
        f"SELECT count(*) FROM read_json_objects({listed}, format='{json_format}'{size}) "
        f"WHERE json_type({value}) <> 'NULL' "
        f"AND TRY_CAST({value} AS {kind}) IS NULL").fetchall()[0][0]
    return bad == 0


#: The longest CSV line DuckDB is asked to read (its default, 2 MB, refused longer fields).
CSV_MAX_LINE_BYTES = 1 << 30


def _csv_read(files: list[str], delimiter: str, types: dict[str, str]) -> str:
    types_sql = "{" + ", ".join(f"{_sql_text(k)}: 'VARCHAR'" for k in types) + "}"
    extra = f", types={types_sql}" if types else ""
    delim = "\\t" if delimiter == "\t" else delimiter
    return (f"read_csv({_sql_list(files)}, union_by_name=true, header=true, delim='{delim}', "
            f"quote='\"', escape='\"', skip=0, max_line_size={CSV_MAX_LINE_BYTES}{extra})")


def _csv_table(con: Any, files: list[str], delimiter: str, text_columns: list[str],
               table: str) -> None:
    header = con.sql(f"SELECT * FROM {_csv_read(files, delimiter, {})} LIMIT 0").columns
    types = {name: "VARCHAR" for name in text_columns if name in header}
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM "
                f"{_csv_read(files, delimiter, types)}")


def _starts_blank(path: str) -> bool:
    """Whether a CSV file starts with a blank line (its header comes after it)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(8).removeprefix(b"\xef\xbb\xbf")
    except (OSError, EOFError):
        return False  # the careful pass reports an unreadable file
    return head[:1] in (b"\n", b"\r")


def _read_csv_files(con: Any, files: list[str], on_invalid: str, workdir: str,
                    text_columns: Iterable[str], names: dict[str, str],
                    table: str = "sz_input_csv"
                    ) -> tuple[str, list[MalformedLine], list[Part]]:
    """Parse CSV (``.tsv``: tab-separated) files into ``table``: with DuckDB, the dialect
    given (RFC 4180) rather than sniffed; when DuckDB refuses a file, after the careful
    pass of :func:`sessionize.io.scan.scan_csv`, which sets malformed rows aside."""
    text_columns = list(text_columns)
    by_delimiter: dict[str, list[str]] = {}
    for path in files:
        delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
        by_delimiter.setdefault(delimiter, []).append(path)
    parts, malformed, origins = [], [], []
    for i, (delimiter, group) in enumerate(by_delimiter.items()):
        part = f"{table}_{i}"
        origin = Part("csv", [(p, names.get(p, p)) for p in group])
        origins.append(origin)
        try:
            if any(map(_starts_blank, group)):  # DuckDB reads the header after a blank line
                raise ValueError("a blank first line")  # as a row as well: read carefully
            _csv_table(con, group, delimiter, text_columns, part)
        except Exception:  # duckdb raises several types; the careful pass says which row
            cleaned = []
            for path in group:
                found = scan_csv(path, delimiter, workdir, stop_at_first=on_invalid == "raise",
                                 shown=names.get(path, path))
                if found.malformed and on_invalid == "raise":
                    raise malformed_csv_error(found.malformed[0]) from None
                malformed.extend(found.malformed)
                origin.lines[path] = found.lines
                if found.clean is not None:
                    cleaned.append(found.clean)
            if not cleaned:
                _empty_json_table(con, part, 0, text_columns)
            else:
                try:
                    _csv_table(con, cleaned, ",", text_columns, part)
                except Exception as exc:
                    raise InputError(
                        f"cannot read the CSV in {group}: DuckDB refused it ({exc}), though "
                        "every row passed sessionize's own checks.\nHint: please report this "
                        "with a sample of the file.") from exc
        parts.append(part)
    if len(parts) == 1:
        return parts[0], malformed, origins
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {p}" for p in parts)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {union}")
    return table, malformed, origins


def _empty_json_table(con: Any, table: str, rows: int, text_columns: Iterable[str]) -> str:
    """The table of a JSON input whose objects have no keys at all (no objects, ``{}``):
    ``rows`` rows of the text columns the rules read, every value missing."""
    names = list(dict.fromkeys([*text_columns]))
    columns = ", ".join(f"CAST(NULL AS VARCHAR) AS {quote(n)}" for n in names)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {columns} FROM range({rows})")
    return table


def _read_json_files(con: Any, files: list[str], fmt: str, on_invalid: str,
                     workdir: str, text_columns: Iterable[str],
                     names: dict[str, str] | None = None, table: str = "sz_input_json",
                     id_columns: Iterable[str] = ()) -> tuple[str, list[MalformedLine], Part]:
    """Parse JSON files into ``table``: with DuckDB straight away, or, when DuckDB refuses
    the input, after the careful pass of :mod:`sessionize.io.scan` (which sets aside the
    objects DuckDB refuses, and in raise mode names the first)."""
    # ``names`` maps temporary files (stdin's copy) to what the user knows them by, so that
    # errors and the quarantine table say "<stdin>" rather than a deleted temporary path.
    names = names or {}
    text_columns = list(text_columns)
    nonempty = [p for p in files if not _is_empty_file(p)]
    part = Part(fmt, [(p, names.get(p, p)) for p in files],
                {p: [] for p in files if p not in nonempty})
    if nonempty:
        try:
            return _json_table(con, nonempty, fmt, text_columns, table, id_columns), [], part
        except Exception:  # duckdb raises several types; the careful pass says which line
            pass
    spellings: dict[str, str] = {}
    scanned = []
    for path in nonempty:
        found = scan_json(path, fmt, workdir, spellings, stop_at_first=on_invalid == "raise",
                          shown=names.get(path, path))
        if found.malformed and on_invalid == "raise":
            raise malformed_error(found.malformed[0])
        scanned.append(found)
    malformed = [bad for found in scanned for bad in found.malformed]
    cleaned = [found.clean for found in scanned if found.clean is not None]
    rows = sum(len(found.lines) for found in scanned)
    part.lines.update({found.path: found.lines for found in scanned})
    if not spellings:  # no object has a key: every field of every row is missing
        return _empty_json_table(con, table, rows, text_columns), malformed, part
    try:
        return (_json_table(con, cleaned, "ndjson", text_columns, table, id_columns),
                malformed, part)
    except Exception as exc:
        named = files[0] if len(files) == 1 else files
        raise InputError(
            f"cannot read the JSON in {named}: DuckDB refused it ({exc}), though every object "
            "passed sessionize's own checks.\nHint: please report this with a sample of the "
            "file; splitting the file may show which object it is.") from exc


def _is_empty_file(path: str) -> bool:
    """A file of zero bytes holds no events, whatever its format says."""
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _frame_to_arrow(source: Any) -> Any | None:
    """An Arrow-compatible object for DataFrame-like sources, or None for paths."""
    module = type(source).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd
        import pyarrow as pa

        _check_names([str(c) for c in source.columns])
        periods = [str(c) for c, kind in source.dtypes.items()
                   if isinstance(kind, pd.PeriodDtype)]
        if periods:
            raise InputError(
                f"column {periods[0]!r} holds pandas Periods (spans of time, such as a "
                "month), which are not instants; sessionize would read their ordinals as "
                "numbers.\nHint: convert it, e.g. frame[col].dt.to_timestamp() for the "
                "start of each period, or .astype(str) to keep it as text.")
        try:
            return pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            # An object column mixing types (ISO text and epoch numbers in one timestamp
            # column, as records from JSON give) has no single Arrow type; read such columns
            # as text, as the JSON reader does, instead of failing with an Arrow error.
            try:
                return pa.Table.from_pandas(_mixed_columns_as_text(source),
                                            preserve_index=False)
            except (pa.ArrowTypeError, pa.ArrowInvalid, ValueError) as exc:
                raise InputError(f"cannot read the pandas DataFrame: {exc}.\nHint: give "
                                 "each column one type (text, numbers or times).") from exc
    if module == "polars":
        if type(source).__name__ == "LazyFrame":
            source = source.collect()
        return source.to_arrow()
    if module == "pyarrow":
        return source
    if module in ("duckdb", "_duckdb"):
        return source.to_arrow_table()
    return None


def _with_row_numbers(table: Any) -> Any:
    """The Arrow table with its input order as a column (no copy of the other columns)."""
    import pyarrow as pa

    if isinstance(table, pa.RecordBatchReader):  # a stream can be scanned only once
        table = table.read_all()
    _check_names(table.column_names)
    _check_reserved(table.column_names)
    return table.append_column(ROW, pa.array(range(table.num_rows), pa.int64()))


#: Column names starting with this are sessionize's own, in every stage of a run.
RESERVED_PREFIX = "__sz_"


def _check_names(columns: list[str]) -> None:
    """Column names must be distinct, ignoring case (DuckDB's names ignore case)."""
    seen: dict[str, str] = {}
    for i, name in enumerate(columns):
        first = seen.setdefault(name.lower(), name)
        if len(seen) <= i:  # a name seen before, perhaps spelled otherwise
            same = "twice" if first == name else f"as {first!r} and {name!r}"
            raise InputError(
                f"the input has the column {name!r} {same}; column names must be distinct "
                "(ignoring case).\nHint: rename or drop one of them.")


def _check_reserved(columns: Iterable[str]) -> None:
    reserved = [c for c in columns if c.lower().startswith(RESERVED_PREFIX)]
    if reserved:
        raise InputError(
            f"the input has a column named {reserved[0]!r}; names starting with "
            f"{RESERVED_PREFIX!r} are reserved for sessionize's own columns.\n"
            "Hint: rename the column (or key) in the input.")


def _mixed_columns_as_text(frame: Any) -> Any:
    import pyarrow as pa

    def text(value: Any) -> Any:
        if value is None or isinstance(value, str) or (isinstance(value, float) and value != value):
            return value
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    frame = frame.copy()
    for name in frame.columns:
        if frame[name].dtype == object:
            try:
                pa.array(frame[name], from_pandas=True)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                frame[name] = frame[name].map(text)
    return frame


# Nanosecond timestamps (pandas datetime64[ns], Parquet NANOS) are truncated to microseconds,
# as ISO text with nine fractional digits is: DuckDB's own cast rounds, so the same instant
# would otherwise get a different microsecond depending on the input kind. Floor division
# keeps instants before 1970 truncated towards the past too.
_NS_TYPES = {"TIMESTAMP_NS": "TIMESTAMP", "TIMESTAMPTZ_NS": "TIMESTAMPTZ",
             "TIMESTAMP_NS WITH TIME ZONE": "TIMESTAMPTZ"}


def _truncate_nanoseconds(schema: dict[str, str]) -> list[str]:
    """``REPLACE`` items that truncate nanosecond timestamps to microseconds (floor).

    DuckDB's cast rounds, text parsing truncates; flooring keeps both the same instant
    and the row order.
    """
    items = []
    for name, kind in schema.items():
        target = _NS_TYPES.get(kind.upper())
        if target is None:
            continue
        q = '"' + name.replace('"', '""') + '"'
        ns = f"epoch_ns({q})"
        micros = f"({ns} - (({ns} % 1000) + 1000) % 1000) // 1000"
        items.append(f"CAST(make_timestamp({micros}) AS {target}) AS {q}")
    return items


def _records_to_file(records: list[Mapping], workdir: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".ndjson", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8") as dst:
        for record in records:
            dst.write(json.dumps(record, default=str) + "\n")
    return path


def _stdin_to_file(stream: IO[bytes], workdir: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".ndjson", dir=workdir)
    with os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(stream, dst)
    return path


def load(con: Any, source: Any, *, text_columns: Iterable[str], on_invalid: str,
         workdir: str, stdin: IO[bytes] | None = None,
         id_columns: Iterable[str] = ()) -> LoadedInput:
    """Read ``source`` into the table ``sz_input`` of connection ``con``.

    ``text_columns`` are read as text whatever they look like; of them, ``id_columns``
    (the user ids) are read as JSON when a JSON input holds booleans, lists or objects in
    them, so that the rules can tell such values (missing) from text."""
    frame = _frame_to_arrow(source)
    malformed: list[MalformedLine] = []
    parts: list[Part] = []
    if frame is not None:
        con.register("sz_source_frame", _with_row_numbers(frame))
        relations = ["sz_source_frame"]
        description = f"a {type(source).__module__.split('.')[0]} {type(source).__name__}"
    else:
        sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        if not sources:
            raise OptionError("no input given (got an empty list)")
        names: dict[str, str] = {}
        if any(isinstance(s, Mapping) for s in sources):
            # Records in memory (dicts, as json.load gives) are read exactly like a JSON file.
            count = len(sources)
            bad = next((i for i, s in enumerate(sources) if not isinstance(s, Mapping)), None)
            if bad is not None:
                raise InputError(
                    f"record {bad + 1} of {count} is a {type(sources[bad]).__name__} "
                    f"({sources[bad]!r:.60}), not an event dict.\nHint: a list source holds "
                    "either paths or event dicts (one per event), not a mixture.")
            sources = [_records_to_file(sources, workdir)]
            names[sources[0]] = f"{count} event records"
        if any(not isinstance(s, (str, os.PathLike)) for s in sources):
            bad = next(s for s in sources if not isinstance(s, (str, os.PathLike)))
            raise OptionError(
                "source must be a path, a list of paths or globs, '-', a list of event dicts, "
                f"or a pandas/polars/pyarrow/DuckDB table (got {type(bad).__name__})"
            )
        paths = []
        for s in sources:
            if os.fspath(s) == "-":
                paths.append(_stdin_to_file(stdin or sys.stdin.buffer, workdir))
                names[paths[-1]] = "<stdin>"
            else:
                paths.extend(expand_paths([s]))
        by_format: dict[str, list[str]] = {}
        for path in paths:
            fmt = file_format(path)
            if not _is_empty_file(path):  # zero bytes hold no events, whatever the format
                by_format.setdefault(fmt, []).append(path)
        if not by_format:  # only empty files: an empty input, read as an empty JSON file
            by_format["json"] = []
        relations = []
        for fmt, files in by_format.items():
            if fmt in ("json", "ndjson"):
                relation, bad_lines, part = _read_json_files(
                    con, files, fmt, on_invalid, workdir, text_columns, names,
                    f"sz_input_{fmt}", id_columns)
                malformed.extend(bad_lines)
                parts.append(part)
            elif fmt == "parquet":
                relation = f"read_parquet({_sql_list(files)}, union_by_name=true)"
                parts.append(Part("parquet", [(p, p) for p in files]))
            else:
                relation, bad_lines, csv_parts = _read_csv_files(con, files, on_invalid,
                                                                 workdir, text_columns, names)
                malformed.extend(bad_lines)
                parts.extend(csv_parts)
            relations.append(relation)
        # zero-byte files hold no rows: their place in the row order is empty
        for path in paths:
            if _is_empty_file(path) and not any(path in part.lines for part in parts):
                parts.append(Part("ndjson", [(path, names.get(path, path))], {path: []}))
        description = names.get(paths[0], paths[0]) if len(paths) == 1 else f"{len(paths)} files"
        parquet_only = list(by_format) == ["parquet"]
    try:
        if frame is not None:
            base = "sz_source_frame"
        elif parquet_only and "file_row_number" not in con.sql(
                f"SELECT * FROM {relations[0]} LIMIT 0").columns:
            # Parquet is read in place: rows are numbered by (file, row in file).
            files = by_format["parquet"]
            base = (f"(SELECT * EXCLUDE (file_row_number, {ROW}_file), "
                    f"(list_position({_sql_list(files)}, {ROW}_file) - 1) * {1 << 40} "
                    f"+ file_row_number AS {ROW} FROM read_parquet({_sql_list(files)}, "
                    f"union_by_name=true, file_row_number=true, filename='{ROW}_file'))")
        elif list(by_format) in (["json"], ["ndjson"], ["csv"]):
            # JSON and CSV are parsed once into a table; its rowid is the input order.
            base = f"(SELECT *, rowid AS {ROW} FROM {relations[0]})"
        else:
            # Text formats are parsed once into a table; its rowid is the input order.
            union = " UNION ALL BY NAME ".join(f"SELECT * FROM {r}" for r in relations)
            con.execute(f"CREATE OR REPLACE TABLE sz_input_data AS {union}")
            base = f"(SELECT *, rowid AS {ROW} FROM sz_input_data)"
        if frame is None:
            for relation in relations:
                _check_reserved(con.sql(f"SELECT * FROM {relation} LIMIT 0").columns)
        probe = con.sql(f"SELECT * FROM {base} LIMIT 0")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {description}: {exc}") from exc
    schema = {name: str(kind) for name, kind in zip(probe.columns, probe.types)
              if name != ROW}
    replaced = _truncate_nanoseconds(schema)
    replace = f" REPLACE ({', '.join(replaced)})" if replaced else ""
    con.execute(f"CREATE OR REPLACE VIEW {INPUT_TABLE} AS SELECT *{replace} FROM {base}")
    schema = {name: _NS_TYPES.get(kind.upper(), kind) for name, kind in schema.items()}
    return LoadedInput(INPUT_TABLE, schema, description, malformed, parts, workdir)
