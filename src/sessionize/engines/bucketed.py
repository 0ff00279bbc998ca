"""The bucketed plan: the columnar plan for inputs larger than memory.

The columnar plan (:mod:`sessionize.columnar.kernel`) holds the whole input, about three
times over. The bucketed plan bounds that by one bucket:

1. **bounds**: a sample of the resolved users gives ``buckets - 1`` user names that cut
   the users into ranges of about equal events (:func:`user_bounds`);
2. **partition**: one pass over the input streams the valid events (the compiled ``keys``
   stage, with the input columns the events table shows, and the bucket: the user's
   range, :func:`bucket_sql`) from DuckDB as Arrow batches and appends each row to its
   bucket's file (:func:`partition`; Arrow IPC, :data:`IPC_OPTIONS`).
   Identity policies that need a global view (stitch, first, graph)
   have built their identity map before (it is small), so the resolved user is final;
3. **sessionize**: each bucket is read into memory and run through the same kernel; the
   sessions and users tables of the buckets are appended, in bucket order, to one
   Parquet file each (users are disjoint between buckets and the ranges are in name
   order, so that is the tables' (user, session) order); the events table is appended
   the same way when its order is ``"none"``, or written per bucket in time order and
   then merged by time (:func:`merge_by_time`). Buckets run side by side on
   ``threads`` workers.

The files are the run's tables (:class:`ParquetTable`); ``Result.write`` publishes them
through the staged write of :mod:`sessionize.io.outputs`, linking a Parquet table into
place instead of writing it again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..columnar.gather import TS
from ..columnar.kernel import assign, workers
from ..errors import OptionError
from ..result import Table
from ..sql.compiler import P, quote

if TYPE_CHECKING:
    import duckdb

    from ..rules import Rules

__all__ = ["ParquetTable", "bucket_count", "parse_size", "run_buckets"]

BUCKET = "__sz_bucket"
#: The bucket files' names for the input columns the events table shows.
INPUT_PREFIX = "__sz_in_"
#: The columnar plan holds about this many copies of its input at its peak (read,
#: gathered, written).
COPIES = 3
#: The share of the memory budget the buckets in flight may take (the rest: DuckDB's
#: own buffers, the writers, Python).
BUCKET_SHARE = 0.5
#: How many resolved users the bounds are drawn from.
SAMPLE_ROWS = 100_000
#: Rows the time merge holds from all buckets together (about).
MERGE_ROWS = 1_000_000
#: Final tables are compressed as the other plans' writes are (io/outputs.py).
COMPRESSION = "zstd"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes in a DuckDB memory size such as ``"4GB"``, ``"500 MiB"`` (KB = 1000 bytes,
    KiB = 1024, as DuckDB reads them).

    >>> parse_size("4GB"), parse_size("1.5 GiB")
    (4000000000, 1610612736)
    """
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = found.group(2).lower() if found else ""
    if not found or unit not in _UNITS:
        raise OptionError(f"'memory_limit' must be a size such as '4GB' or '500MiB' "
                          f"(got {text!r})")
    return int(float(found.group(1)) * _UNITS[unit])


def bucket_count(rows: int, bytes_per_row: float, budget: int, threads: int) -> int:
    """How many buckets keep ``threads`` buckets in flight, each held about
    :data:`COPIES` times, under :data:`BUCKET_SHARE` of ``budget`` bytes.

    >>> bucket_count(100_000_000, 100, 4 * 10**9, 2)
    30
    """
    need = COPIES * rows * bytes_per_row * threads
    return max(1, math.ceil(need / (BUCKET_SHARE * budget)))


def user_bounds(con: duckdb.DuckDBPyConnection, users_sql: str, buckets: int) -> list[str]:
    """``buckets - 1`` (or fewer: a heavy user is never split) increasing user names; the
    bucket of a user is how many of them are at most its name. Drawn from a sample of the
    events' resolved users (``users_sql``: a query whose one column is them), so that the
    buckets hold about equal events."""
    if buckets < 2:
        return []
    sample = sorted(row[0] for row in con.execute(
        f"SELECT * FROM ({users_sql}) USING SAMPLE reservoir({SAMPLE_ROWS} ROWS) "
        "REPEATABLE (42)").fetchall() if row[0] is not None)
    if not sample:
        return []
    bounds = sorted({sample[len(sample) * k // buckets] for k in range(1, buckets)})
    return [b for b in bounds if b > sample[0]]


def bucket_sql(column: str, bounds: list[str]) -> str:
    """A SQL expression giving the bucket of ``column`` (a user name): the number of
    ``bounds`` at most it, found by a binary search of nested ``CASE``\\ s (as SQL
    compares strings, byte-wise, which is the order of the kernel's user codes).

    >>> bucket_sql("u", ["m"])
    "CASE WHEN u < 'm' THEN 0 ELSE 1 END"
    """
    def search(lo: int, hi: int) -> str:
        if lo == hi:
            return str(lo)
        mid = (lo + hi + 1) // 2  # buckets below mid are the users under bounds[mid - 1]
        bound = "'" + bounds[mid - 1].replace("'", "''") + "'"
        return f"CASE WHEN {column} < {bound} THEN {search(lo, mid - 1)} " \
               f"ELSE {search(mid, hi)} END"

    return search(0, len(bounds))


@dataclasses.dataclass
class Layout:
    """What a bucket file holds and what the kernel makes of it."""

    key_names: list[str]           # the compiled keys stage's columns (kernel input)
    columns: list[tuple[str, str | None]]  # the events table: (name, input column or None)
    inputs: dict[str, str]         # input column -> its name in the bucket files
    message_column: str | None     # the input column that is __sz_msg, unchanged


def unsupported_rule(rules: Rules) -> str | None:
    """The first rule the bucketed plan does not run yet (``None``: it runs them all):
    the session enrichment reads the input's rows by number, which the buckets do not
    keep, and ``user_change`` orders a device's ties by columns the buckets do not
    carry."""
    unsupported = (("enrich", rules.enrich), ("first_last", bool(rules.first_last)),
                   ("user_change", rules.user_change))
    return next((name for name, used in unsupported if used), None)


def partition_sql(keys_riding: str, layout: Layout, bounds: list[str],
                  copies: dict[str, str]) -> str:
    """The select the partition writes: the keys (without ``__sz_ts``, the microseconds
    seen as a time, nor ``__sz_msg`` when it is an input column as it is), the input
    columns the events table shows (from the internal column that holds the same values
    where the keys carry only that one: ``copies``), and the bucket."""
    omit = {f"{P}ts"} | ({f"{P}msg"} if layout.message_column in layout.inputs else set())
    selected = [quote(name) for name in layout.key_names if name not in omit]
    selected += [f"{quote(copies.get(source, source))} AS {quote(name)}"
                 for source, name in layout.inputs.items()]
    selected.append(f"{bucket_sql(quote(P + 'user'), bounds)} AS {BUCKET}")
    return f"SELECT {', '.join(selected)} FROM ({keys_riding})"


#: The bucket files: Arrow IPC, uncompressed. Written and read many times faster than
#: Parquet, and read back as the very Arrow types DuckDB returned. Measured on 10M events
#: (2 cores, loaded): DuckDB's Parquet COPY 19-27 s, partitioned or not; Arrow IPC 1.8 s
#: to write, and read at disk speed; with LZ4 3.7 s to write and 7.1 s to read, for
#: a file only 27 % smaller (1.2 GiB against 1.6).
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


def partition(con: duckdb.DuckDBPyConnection, select: str, directory: str,
              buckets: int) -> tuple[list[str | None], pa.Schema]:
    """Stream ``select``'s rows from DuckDB and append each to its bucket's file in
    ``directory``; returns the files by bucket (``None``: no row) and their schema."""
    reader = con.sql(select).to_arrow_reader(1 << 20)
    schema = reader.schema.remove(reader.schema.get_field_index(BUCKET))
    paths: list[str | None] = [None] * buckets
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    try:
        for batch in reader:
            if not batch.num_rows:
                continue
            bucket = np.asarray(batch.column(BUCKET).to_numpy(zero_copy_only=False), np.int64)
            batch = batch.drop_columns([BUCKET])
            counts = np.bincount(bucket, minlength=buckets)
            if np.count_nonzero(counts) > 1:
                batch = batch.take(pa.array(np.argsort(bucket, kind="stable")))
            start = 0
            for b in np.flatnonzero(counts):
                if b not in writers:
                    paths[b] = os.path.join(directory, f"bucket-{b:05d}.arrow")
                    writers[b] = pa.ipc.new_file(paths[b], schema, options=IPC_OPTIONS)
                writers[b].write_batch(batch.slice(start, counts[b]))
                start += counts[b]
    finally:
        for writer in writers.values():
            writer.close()
    return paths, schema


def _read_ipc(path: str) -> pa.Table:
    # read, not memory-mapped: the mapped pages of every file read would count in the
    # process's resident memory until unmapped (a 100M-event run peaked at 15 GiB RSS)
    with pa.OSFile(path) as source:
        return pa.ipc.open_file(source).read_all()


def _bucket_keys(table: pa.Table, layout: Layout) -> pa.Table:
    """The kernel's keys (the compiled stage's columns, in its order, then the carried
    input columns) from a bucket file's columns."""
    same = {f"{P}ts": pa.chunked_array([c.view(TS) for c in table.column(f"{P}ts_us").chunks],
                                       TS)}
    if layout.message_column in layout.inputs:
        same[f"{P}msg"] = table.column(layout.inputs[layout.message_column])
    return pa.table({name: same[name] if name in same else table.column(name)
                     for name in [*layout.key_names, *layout.inputs.values()]})


@dataclasses.dataclass
class Written:
    """The bucketed plan's tables, as finished Parquet files."""

    events: str
    sessions: str
    users: str
    rows: int      # valid events


def run_buckets(con: duckdb.DuckDBPyConnection, select: str, buckets: int, directory: str,
                layout: Layout, rules: Rules, *, events_order: str, threads: int | None,
                progress: Callable[[str, float | None], None]) -> Written:
    """Partition ``select`` into buckets under ``directory`` and sessionize them one
    bucket in memory per worker; returns the tables' files (module docstring)."""
    os.makedirs(directory, exist_ok=True)
    progress("partitioning", None)
    found, schema = partition(con, select, directory, buckets)
    sources: list[str | pa.Table] = [path for path in found if path is not None]
    if not sources:  # no valid event: one empty bucket gives the tables' columns
        sources = [schema.empty_table()]
    tables = os.path.join(directory, "tables")
    os.makedirs(tables, exist_ok=True)
    written = Written(*(os.path.join(tables, f"{name}.parquet")
                        for name in ("events", "sessions", "users")), rows=0)
    total = workers(threads)
    in_flight = max(1, min(total, len(sources)))
    kernel_threads = max(1, total // in_flight)
    time_order = events_order == "time"
    event_parts: list[str] = []
    writers: dict[str, pq.ParquetWriter] = {}

    def one(index: int, source: str | pa.Table) -> tuple[pa.Table, pa.Table, pa.Table | str,
                                                         int]:
        cursor = con.cursor()
        try:
            cursor.execute("SET TimeZone = 'UTC'")
            if isinstance(source, pa.Table):
                keys = _bucket_keys(source, layout)
            else:
                keys = _bucket_keys(_read_ipc(source), layout)
                os.remove(source)  # read: its disk space is the events' now
            result = assign(keys, gap_us=rules.gap_us, per_event_gap=bool(rules.gaps_us),
                            con=cursor, time_order=time_order, inputs=layout.inputs,
                            threads=kernel_threads, rules=rules)
            try:
                events = result.events(cursor, layout.columns, events_order)
            finally:
                result.close()
            rows = keys.num_rows
            del keys
            if time_order and len(sources) > 1:  # written now, in time order, for the merge
                path = os.path.join(directory, f"events-{index:05d}.arrow")
                with pa.ipc.new_file(path, events.schema, options=IPC_OPTIONS) as writer:
                    writer.write_table(events, max_chunksize=max(4096, MERGE_ROWS // len(sources)))
                return result.sessions, result.users, path, rows
            return result.sessions, result.users, events, rows
        finally:
            cursor.close()

    def append(name: str, table: pa.Table, path: str) -> None:
        writer = writers.get(name)
        if writer is None:
            writer = writers[name] = pq.ParquetWriter(path, table.schema,
                                                      compression=COMPRESSION)
        elif table.schema != writer.schema:
            table = table.cast(writer.schema)
        writer.write_table(table)

    progress("sessionizing", 0.0)
    with ThreadPoolExecutor(in_flight, thread_name_prefix="sessionize-bucket") as pool:
        pending: deque[Future] = deque()
        queued = iter(enumerate(sources))
        try:
            for index, source in queued:
                pending.append(pool.submit(one, index, source))
                if len(pending) >= in_flight:
                    break
            done = 0
            while pending:
                sessions, users, events, rows = pending.popleft().result()
                following = next(queued, None)
                if following is not None:
                    pending.append(pool.submit(one, *following))
                append("sessions", sessions, written.sessions)
                append("users", users, written.users)
                if isinstance(events, str):
                    event_parts.append(events)
                else:
                    append("events", events, written.events)
                written.rows += rows
                done += 1
                progress("sessionizing", done / len(sources))
                del sessions, users, events
        except BaseException:
            for job in pending:
                job.cancel()
            raise
        finally:
            for writer in writers.values():
                writer.close()
    if event_parts:
        progress("merging", None)
        time_column = next(name for name, source in layout.columns if source is None)
        merge_by_time(event_parts, written.events, time_column)
        for path in event_parts:
            os.remove(path)
    return written


def merge_by_time(parts: list[str], path: str, time_column: str) -> None:
    """Merge the buckets' events tables (each in (time, user, messageId, row) order, users
    disjoint, buckets in user order) into one table in that order at ``path``.

    At each step every bucket holds the next rows of its file; the earliest of their last
    times is the cutoff: every row before it is final, and those rows of all buckets,
    put side by side in bucket order and sorted stably by time, are the next rows of the
    table (rows at the same instant in different buckets are in user order, the buckets'
    order; within a bucket they are in order already). ``time_column``: the events
    table's column holding the parsed time."""
    maps = [pa.OSFile(p) for p in parts]  # read as merged, not mapped (see _read_ipc)
    files = [pa.ipc.open_file(m) for m in maps]
    schema = files[0].schema
    batch = max(4096, MERGE_ROWS // len(files))
    readers = [_batches(f) for f in files]
    held: list[pa.Table | None] = [None] * len(files)
    times: list[np.ndarray] = [np.zeros(0, np.int64)] * len(files)
    live = [True] * len(files)

    def refill(i: int) -> None:
        """Read bucket i's next batch, if it has one."""
        try:
            more = pa.Table.from_batches([next(readers[i])], schema)
        except StopIteration:
            live[i] = False
            return
        held[i] = more if held[i] is None else pa.concat_tables([held[i], more])
        times[i] = np.concatenate([times[i], _micros(more.column(time_column))])

    with pq.ParquetWriter(path, schema, compression=COMPRESSION) as file, \
            ThreadPoolExecutor(1, thread_name_prefix="sessionize-write") as writer:
        written: Future | None = None  # the previous chunk's write, beside the next merge
        while True:
            for i in range(len(files)):
                while live[i] and len(times[i]) < batch:
                    refill(i)
            open_ = [i for i in range(len(files)) if live[i]]
            if not open_ and not any(len(t) for t in times):
                break
            cutoff = min(int(times[i][-1]) for i in open_) if open_ else None
            pieces, order_of = [], []
            for i in range(len(files)):
                cut = len(times[i]) if cutoff is None else int(
                    np.searchsorted(times[i], cutoff, side="left"))
                if cut:
                    pieces.append(held[i].slice(0, cut))
                    order_of.append(times[i][:cut])
                    held[i] = held[i].slice(cut)
                    times[i] = times[i][cut:]
            if not pieces:  # every held row is at the cutoff: read on where it ends
                for i in open_:
                    if int(times[i][-1]) == cutoff:
                        refill(i)
                continue
            # one chunk per column first: a take across many small chunks is slow
            merged = pa.concat_tables(pieces).combine_chunks()
            order = np.argsort(np.concatenate(order_of), kind="stable")
            chunk = merged.take(pa.array(order))
            del merged, pieces
            if written is not None:
                written.result()
            written = writer.submit(file.write_table, chunk)
        if written is not None:
            written.result()
    for source in maps:
        source.close()


def _batches(file: pa.ipc.RecordBatchFileReader) -> Iterator[pa.RecordBatch]:
    for i in range(file.num_record_batches):
        yield file.get_batch(i)


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return np.concatenate([np.asarray(c.cast(pa.int64()).to_numpy(zero_copy_only=False),
                                      np.int64) for c in column.chunks]) \
        if column.num_chunks else np.zeros(0, np.int64)


class ParquetTable(Table):
    """A table the bucketed plan wrote as one Parquet file: read with pyarrow as written,
    queried in DuckDB as ``relation`` (a view over the file), and linked into place by a
    Parquet write (:attr:`parquet_file`)."""

    def __init__(self, engine: Any, name: str, relation: str, path: str):
        self._engine = engine  # its ``con`` holds the view; CSV and NDJSON writes COPY it
        self._con = con = engine.con
        self.name = name
        self._relation = relation
        self.parquet_file = path
        target = path.replace("'", "''")
        # Parquet keeps Arrow's durations as plain integers (microseconds): intervals again
        durations = [f"to_microseconds({quote(f.name)}) AS {quote(f.name)}"
                     for f in pq.ParquetFile(path).schema_arrow if pa.types.is_duration(f.type)]
        replace = f" REPLACE ({', '.join(durations)})" if durations else ""
        con.execute(f"CREATE OR REPLACE VIEW {relation} AS SELECT *{replace} "
                    f"FROM read_parquet('{target}')")

    @property
    def relation(self) -> Any:
        """The table as a DuckDB relation, for further SQL."""
        return self._con.table(self._relation)

    @property
    def columns(self) -> list[str]:
        return pq.ParquetFile(self.parquet_file).schema_arrow.names

    def __len__(self) -> int:
        return pq.ParquetFile(self.parquet_file).metadata.num_rows

    def to_arrow(self, *, limit: int | None = None) -> pa.Table:
        """The table as a ``pyarrow.Table``."""
        if limit is None:
            return pq.read_table(self.parquet_file)
        batches = pq.ParquetFile(self.parquet_file).iter_batches(batch_size=max(limit, 1))
        first = next(batches, None)
        schema = pq.ParquetFile(self.parquet_file).schema_arrow
        return pa.Table.from_batches([] if first is None else [first], schema).slice(0, limit)

    def to_arrow_batches(self, batch_size: int = 1_000_000) -> pa.RecordBatchReader:
        """Stream the table as Arrow record batches (bounded memory, for writing)."""
        file = pq.ParquetFile(self.parquet_file)
        return pa.RecordBatchReader.from_batches(file.schema_arrow,
                                                 file.iter_batches(batch_size=batch_size))

