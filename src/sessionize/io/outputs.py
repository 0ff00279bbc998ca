"""Write result tables to files, atomically.

Every file is first written under a temporary name in the output directory and
renamed into place only when all tables are complete, so a crash never leaves a
half-written file where a finished one is expected.

Representations: Parquet keeps types (UTC timestamps, ``duration[us]`` gaps,
nested structs). CSV and NDJSON write timestamps as ISO-8601 text in UTC with a
``Z``, ``time_since_last_event`` as seconds, and, in CSV, nested values as JSON
text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import OptionError
from ..sql.compiler import quote

if TYPE_CHECKING:
    from ..result import Table

__all__ = ["FORMATS", "write_tables"]

FORMATS = {"parquet": "parquet", "csv": "csv", "ndjson": "ndjson"}
_NESTED = ("STRUCT", "MAP", "UNION")


def _text_select(table: Table, fmt: str) -> str:
    rel = table.relation
    cols = []
    for name, kind in zip(rel.columns, rel.types):
        kind = str(kind).upper()
        q = quote(name)
        if kind.startswith("TIMESTAMP WITH TIME ZONE"):
            cols.append(f"strftime({q}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {q}")
        elif kind == "INTERVAL":
            cols.append(f"epoch_us({q}) / 1000000.0 AS {q}")
        elif fmt == "csv" and (kind.startswith(_NESTED) or kind.endswith("[]") or kind == "JSON"):
            cols.append(f"CAST(to_json({q}) AS VARCHAR) AS {q}")
        else:
            cols.append(q)
    return f"SELECT {', '.join(cols)} FROM {table._relation}"


def _write_one(table: Table, path: str, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        reader = table.to_arrow_batches()
        with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
        return
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json"
    target = path.replace("'", "''")
    table._engine.con.execute(f"COPY ({_text_select(table, fmt)}) TO '{target}' ({options})")


class FileSystem(Protocol):
    """Where a set of tables is published: the local disk here, a cluster's storage for
    Spark (engines/spark_output.py)."""

    def is_file(self, path: str) -> bool: ...   # exists and is not a directory

    def staging(self, out: str) -> str: ...      # a fresh directory inside ``out``

    def replace(self, tmp: str, final: str) -> None: ...

    def remove(self, path: str) -> None: ...


def write_staged(tables: Sequence[Any], out: str, *, format: str, fs: FileSystem,
                 write_one: Callable[[Any, str, str], None],
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write each table to a staging directory inside ``out``, then move them all into
    place as ``out/<name>.<format>``: a crash while writing leaves the old files (or none),
    never a half-written one. Returns the final paths. Every engine writes through this."""
    if format not in FORMATS:
        raise OptionError(f"'format' must be one of {', '.join(FORMATS)} (got {format!r})")
    if fs.is_file(out):
        raise OptionError(f"output {out!r} exists and is not a directory")
    staging = fs.staging(out)
    try:
        staged = []
        for table in tables:
            name = f"{table.name}.{FORMATS[format]}"
            if on_file:
                on_file(name)
            write_one(table, f"{staging}/{name}", format)
            staged.append((f"{staging}/{name}", f"{out}/{name}"))
        for tmp, final in staged:
            fs.replace(tmp, final)
        return [final for _, final in staged]
    finally:
        fs.remove(staging)


class LocalFileSystem:
    """The local disk: ``os.replace`` moves a finished file into place atomically."""

    def is_file(self, path: str) -> bool:
        return os.path.exists(path) and not os.path.isdir(path)

    def staging(self, out: str) -> str:
        os.makedirs(out, exist_ok=True)
        return tempfile.mkdtemp(prefix=".sessionize-tmp-", dir=out)

    def replace(self, tmp: str, final: str) -> None:
        os.replace(tmp, final)

    def remove(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


def write_tables(tables: Sequence[Table], out_dir: str | os.PathLike, *, format: str = "parquet",
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write DuckDB-engine ``tables`` as ``out_dir/<name>.<format>``; all appear together or
    none do."""
    out = str(Path(out_dir))
    return write_staged(tables, out, format=format, fs=LocalFileSystem(), write_one=_write_one,
                        on_file=on_file)
