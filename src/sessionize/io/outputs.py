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
from typing import TYPE_CHECKING

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


def write_tables(tables: Sequence[Table], out_dir: str | os.PathLike, *, format: str = "parquet",
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write ``tables`` as ``out_dir/<name>.<format>``; all appear together or none do."""
    if format not in FORMATS:
        raise OptionError(
            f"'format' must be one of {', '.join(FORMATS)} (got {format!r})")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OptionError(f"output {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".sessionize-tmp-", dir=out)
    try:
        staged = []
        for table in tables:
            name = f"{table.name}.{FORMATS[format]}"
            if on_file:
                on_file(name)
            tmp = os.path.join(staging, name)
            _write_one(table, tmp, format)
            staged.append((tmp, str(out / name)))
        for tmp, final in staged:
            os.replace(tmp, final)
        return [final for _, final in staged]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
