"""Write a Spark result's tables on the cluster, staged and then renamed into place.

Each table is written by Spark's own writer (so the executors write, in parallel, and
nothing passes through the driver) into ``OUT/.sessionize-tmp-<id>/<table>.<format>/``.
Only when every table has been written completely (Spark's commit protocol, ending in
``_SUCCESS``) are the directories renamed to ``OUT/<table>.<format>/`` through the
Hadoop FileSystem API. What that guarantees is spelled out in docs/spark.md.

Representations follow the DuckDB engine's outputs where Spark allows: CSV and NDJSON
write instants as ISO-8601 UTC text with ``Z`` and nested values (CSV) as JSON text.
Spark cannot write interval columns to any of these formats, so
``time_since_last_event`` is written as seconds (a double) in every format.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..io.outputs import write_staged

if TYPE_CHECKING:
    from .spark import SparkTable

__all__ = ["write_tables"]


def _for_format(frame: Any, fmt: str) -> Any:
    """The columns as the format can hold them (see the module docstring)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = []
    for field in frame.schema.fields:
        col, kind = F.col(f"`{field.name}`"), field.dataType
        if isinstance(kind, T.DayTimeIntervalType):
            # timestamp + interval is exact to the microsecond; the interval itself is not
            # castable to a number in every Spark version.
            col = F.unix_micros(F.timestamp_micros(F.lit(0)) + col) / 1_000_000
        elif fmt != "parquet" and isinstance(kind, T.TimestampType):
            col = F.date_format(col, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
        elif fmt == "csv" and isinstance(kind, (T.StructType, T.MapType, T.ArrayType)):
            col = F.to_json(col)
        columns.append(col.alias(field.name))
    return frame.select(*columns)


def _write(spark: Any, frame: Any, path: str, fmt: str) -> None:
    writer = _for_format(frame, fmt).write.mode("errorifexists")
    if fmt == "parquet":
        # Spark's default (INT96) is a legacy encoding other readers mistake for local time.
        key = "spark.sql.parquet.outputTimestampType"
        before = spark.conf.get(key, None)
        spark.conf.set(key, "TIMESTAMP_MICROS")
        try:
            writer.option("compression", "zstd").parquet(path)
        finally:
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)
    elif fmt == "csv":
        # RFC 4180, as the DuckDB engine writes: a quote inside a field is doubled (Spark's
        # default escapes it with a backslash, which pandas and DuckDB misread)
        writer.option("header", "true").option("escape", '"').csv(path)
    else:
        writer.option("ignoreNullFields", "false").json(path)


def _filesystem(spark: Any, path: str) -> tuple[Any, Callable[[str], Any]]:
    jvm = spark.sparkContext._jvm
    make = jvm.org.apache.hadoop.fs.Path
    return make(path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), make


class HadoopFileSystem:
    """The cluster's storage, through Hadoop's FileSystem API (what Spark writes with)."""

    def __init__(self, spark: Any, out: str):
        self.fs, self.make = _filesystem(spark, out)

    def is_file(self, path: str) -> bool:
        return self.fs.exists(self.make(path)) and \
            not self.fs.getFileStatus(self.make(path)).isDirectory()

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self.make(path)))

    def check_target(self, path: str) -> None:
        """Spark writes each table as a directory, so any existing one is replaceable."""

    def staging(self, out: str) -> str:
        return f"{out}/.sessionize-tmp-{uuid.uuid4().hex[:12]}"

    def stale(self, out: str) -> list[str]:
        """None: on shared storage a staging directory's owner cannot be told, so a live
        run's cannot be told from a dead one's (readers skip hidden directories)."""
        return []

    def write_text(self, path: str, text: str) -> None:
        part = self.make(f"{path}.part")
        stream = self.fs.create(part, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        if not self.fs.rename(part, self.make(path)):
            raise OSError(f"could not move {path}.part to {path!r}")

    def read_text(self, path: str) -> str:
        raise OSError("publish journals are not read on Hadoop file systems (see stale)")

    def make_dir(self, path: str) -> None:
        self.fs.mkdirs(self.make(path))

    def replace(self, tmp: str, final: str) -> None:
        if self.fs.exists(self.make(final)):
            self.fs.delete(self.make(final), True)
        if not self.fs.rename(self.make(tmp), self.make(final)):
            raise OSError(f"could not move {tmp!r} to {final!r}")

    def remove(self, path: str) -> None:
        self.fs.delete(self.make(path), True)


def write_tables(spark: Any, tables: Sequence[SparkTable], out_dir: str, *,
                 format: str = "parquet",
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write ``tables`` as ``out_dir/<name>.<format>/`` directories; returns their paths."""
    out = out_dir.rstrip("/") or "/"
    return write_staged(tables, out, format=format, fs=HadoopFileSystem(spark, out),
                        write_one=lambda table, path, fmt: _write(spark, table.spark_df, path,
                                                                  fmt), on_file=on_file)
