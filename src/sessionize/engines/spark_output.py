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

from ..errors import OptionError
from ..io.outputs import FORMATS

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
        writer.option("header", "true").csv(path)
    else:
        writer.option("ignoreNullFields", "false").json(path)


def _filesystem(spark: Any, path: str) -> tuple[Any, Callable[[str], Any]]:
    jvm = spark.sparkContext._jvm
    make = jvm.org.apache.hadoop.fs.Path
    return make(path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), make


def write_tables(spark: Any, tables: Sequence[SparkTable], out_dir: str, *,
                 format: str = "parquet",
                 on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write ``tables`` as ``out_dir/<name>.<format>/`` directories; returns their paths."""
    if format not in FORMATS:
        raise OptionError(f"'format' must be one of {', '.join(FORMATS)} (got {format!r})")
    out = out_dir.rstrip("/") or "/"
    fs, make = _filesystem(spark, out)
    if fs.exists(make(out)) and not fs.getFileStatus(make(out)).isDirectory():
        raise OptionError(f"output {out!r} exists and is not a directory")
    staging = f"{out}/.sessionize-tmp-{uuid.uuid4().hex[:12]}"
    try:
        staged = []
        for table in tables:
            name = f"{table.name}.{FORMATS[format]}"
            if on_file:
                on_file(name)
            _write(spark, table.spark_df, f"{staging}/{name}", format)
            staged.append((f"{staging}/{name}", f"{out}/{name}"))
        for tmp, final in staged:
            if fs.exists(make(final)):
                fs.delete(make(final), True)
            if not fs.rename(make(tmp), make(final)):
                raise OSError(f"could not move {tmp!r} to {final!r}")
        return [final for _, final in staged]
    finally:
        fs.delete(make(staging), True)
