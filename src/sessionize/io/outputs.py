"""Write result tables to files, atomically.

Every file is first written under a temporary name in the output directory and
renamed into place only when all tables are complete, so a crash never leaves a
half-written file where a finished one is expected; the previous run's tables of the
format are replaced as a set (:func:`write_staged`).

Representations: Parquet keeps types (UTC timestamps, ``duration[us]`` gaps,
nested structs). CSV and NDJSON write timestamps as ISO-8601 text in UTC with a
``Z``, ``time_since_last_event`` as seconds, and, in CSV, nested values as JSON
text.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import OptionError, OutputError
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
    finished = getattr(table, "parquet_file", None)  # a table the run wrote as Parquet
    if fmt == "parquet" and finished is not None:
        _link_or_copy(finished, path)
        return
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


def _link_or_copy(finished: str, path: str) -> None:
    """Put a finished file at ``path`` (in the staging directory): a hard link where both
    are on one file system (no second write), else a copy."""
    try:
        os.link(finished, path)
    except OSError:
        shutil.copyfile(finished, path)


#: Every table a run can write: a write replaces all of them in its format, so that the
#: directory never mixes this run's tables with an earlier run's (a stale quarantine, say).
OUTPUT_TABLES = ("events", "sessions", "users", "quarantine", "identities")
#: Staging directories inside the output directory start with this.
STAGING_PREFIX = ".sessionize-tmp-"
#: The list of renames a publish is about to make, inside its staging directory.
JOURNAL = "publish.json"


class FileSystem(Protocol):
    """Where a set of tables is published: the local disk here, a cluster's storage for
    Spark (engines/spark_output.py)."""

    def is_file(self, path: str) -> bool: ...   # exists and is not a directory

    def exists(self, path: str) -> bool: ...

    def check_target(self, path: str) -> None: ...  # raise OutputError if it cannot be replaced

    def staging(self, out: str) -> str: ...      # a fresh directory inside ``out``

    def stale(self, out: str) -> list[str]: ...  # staging directories of runs that died

    def write_text(self, path: str, text: str) -> None: ...  # whole or not at all

    def read_text(self, path: str) -> str: ...

    def make_dir(self, path: str) -> None: ...

    def replace(self, tmp: str, final: str) -> None: ...

    def remove(self, path: str) -> None: ...


def write_staged(tables: Sequence[Any], out: str, *, format: str, fs: FileSystem,
                 write_one: Callable[[Any, str, str], None],
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write each table to a staging directory inside ``out``, then publish them together
    as ``out/<name>.<format>``; returns the final paths. Every engine writes through this.

    Publishing first records every move it will make in a journal
    (``<staging>/publish.json``, written whole or not at all), then moves the previous
    run's tables of this format (every name in :data:`OUTPUT_TABLES`, also those this run
    does not write) into the staging directory and the new ones into place; when a move
    fails, the moves made are undone and an :class:`~sessionize.OutputError` says why.
    A crash before the journal is written leaves the old set. A kill during the renames
    (milliseconds) leaves the journal behind; the next write into ``out`` finds it, finishes
    those renames (:func:`_roll_forward`) and only then writes its own set, so every table
    of the set ends up from the same run. Staging directories of runs that died are then
    removed.
    """
    if format not in FORMATS:
        raise OptionError(f"'format' must be one of {', '.join(FORMATS)} (got {format!r})")
    if fs.is_file(out):
        raise OptionError(f"output {out!r} exists and is not a directory")
    ext = FORMATS[format]
    try:
        for dead in fs.stale(out):
            if fs.exists(f"{dead}/{JOURNAL}"):
                _roll_forward(fs, dead)
            fs.remove(dead)
        for name in OUTPUT_TABLES:
            fs.check_target(f"{out}/{name}.{ext}")
        staging = fs.staging(out)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write into {out!r}: {exc}") from exc
    try:
        staged = []
        for table in tables:
            name = f"{table.name}.{ext}"
            if on_file:
                on_file(name)
            write_one(table, f"{staging}/{name}", format)
            staged.append((f"{staging}/{name}", f"{out}/{name}"))
        _publish(fs, staged, [f"{out}/{name}.{ext}" for name in OUTPUT_TABLES], staging, out)
        return [final for _, final in staged]
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write into {out!r}: {exc}") from exc
    finally:
        fs.remove(staging)


def _publish(fs: FileSystem, staged: list[tuple[str, str]], previous: list[str], staging: str,
             out: str) -> None:
    """Swap the previous set for the staged one, undoing every move made if one fails."""
    aside = f"{staging}/previous"
    set_aside = [(final, f"{aside}/{final.rsplit('/', 1)[-1]}") for final in previous
                 if fs.exists(final)]
    moves = set_aside + list(staged)
    moved: list[tuple[str, str]] = []   # (where it was, where it is now)
    try:
        if set_aside:
            fs.make_dir(aside)
        fs.write_text(f"{staging}/{JOURNAL}", json.dumps({"moves": moves}))
        for source, target in moves:
            fs.replace(source, target)
            moved.append((source, target))
    except OSError as exc:
        undone = True
        for where, now in reversed(moved):
            try:
                fs.replace(now, where)
            except OSError:
                undone = False
        state = "the previous tables are back in place"
        if not undone:  # keep them out of the staging directory, which is removed
            kept = f"{out}/.sessionize-previous-{os.getpid()}-{int(time.time())}"
            try:
                fs.replace(aside, kept)
            except OSError:
                kept = aside
            state = f"the previous tables could not all be moved back; they are in {kept!r}"
        raise OutputError(
            f"cannot publish the tables in {out!r}: {exc}; {state}.\n"
            "Hint: check that the output directory is writable and that no directory sits "
            "where a table file goes.") from exc


def _roll_forward(fs: FileSystem, staging: str) -> None:
    """Finish the publish a killed run began: make each journalled move not yet made.

    A move was made exactly when its target exists (each is one atomic rename, the tables
    go aside before any new one comes in, and only tables that existed are journalled to
    go aside), so this is safe to repeat if it is itself interrupted."""
    try:
        moves = json.loads(fs.read_text(f"{staging}/{JOURNAL}"))["moves"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"the publish journal in {staging!r} cannot be read ({exc}); "
                          "nothing was written.\nHint: look at the tables in that directory, "
                          "keep the set you want and delete the directory.") from exc
    for source, target in moves:
        if fs.exists(source) and not fs.exists(target):
            fs.make_dir(target.rsplit("/", 1)[0])
            fs.replace(source, target)


class LocalFileSystem:
    """The local disk: ``os.replace`` moves a finished file into place atomically."""

    def is_file(self, path: str) -> bool:
        return os.path.exists(path) and not os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def check_target(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            raise OutputError(
                f"{path!r} is a directory, where sessionize writes a table file; nothing was "
                "written.\nHint: remove or rename it, or write to another directory.")

    def staging(self, out: str) -> str:
        os.makedirs(out, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-",
                                dir=out)

    def make_dir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def stale(self, out: str) -> list[str]:
        """Staging directories of runs that died (a kill -9): those of this host whose
        process is gone, and any older than a day."""
        found: list[str] = []
        if not os.path.isdir(out):
            return found
        host = socket.gethostname()
        for entry in os.scandir(out):
            if not entry.name.startswith(STAGING_PREFIX) or not entry.is_dir():
                continue
            owner = entry.name[len(STAGING_PREFIX):].rsplit("-", 2)
            alive = True
            if len(owner) == 3 and owner[0] == host and owner[1].isdigit():
                alive = _process_alive(int(owner[1]))
            elif len(owner) != 3 or not owner[1].isdigit():
                alive = False  # an older naming, without an owner
            if not alive or time.time() - entry.stat().st_mtime > 86_400:
                found.append(f"{out}/{entry.name}")
        return found

    def write_text(self, path: str, text: str) -> None:
        with open(f"{path}.part", "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(f"{path}.part", path)

    def read_text(self, path: str) -> str:
        with open(path, encoding="utf-8") as file:
            return file.read()

    def replace(self, tmp: str, final: str) -> None:
        os.replace(tmp, final)

    def remove(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def write_tables(tables: Sequence[Table], out_dir: str | os.PathLike, *, format: str = "parquet",
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write DuckDB-engine ``tables`` as ``out_dir/<name>.<format>``; all appear together or
    none do."""
    out = str(Path(out_dir))
    return write_staged(tables, out, format=format, fs=LocalFileSystem(), write_one=_write_one,
                        on_file=on_file)
