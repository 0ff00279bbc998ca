"""Run the compiled rules as Spark SQL on a SparkSession (a cluster, or ``local[N]``).

The rules are the same syntax trees the DuckDB engine runs
(:func:`sessionize.sql.compiler.compile_rules`), rendered in Spark's dialect with the
rewrites of :mod:`sessionize.sql.dialects`. Event data never travels to the driver:
files are read by Spark's own readers on the executors, every stage is a temporary
view, and results are written by Spark's writers. Only metadata reaches the driver:
the input's schema and file list, one row count per file split (to number rows in
input order), counts, and the first few invalid rows for an error message.

Input order (the last tie-breaker) is the DuckDB engine's: files in the order given
(directories and globs sorted by name), grouped by format as DuckDB groups them, rows
in file order. Spark has no row number, so each row gets (file, split start,
``monotonically_increasing_id``), which is in file order within a split, and the
per-split counts turn that into the same ``__sz_row`` DuckDB computes.

The session time zone is pinned to UTC (``spark.sql.session.timeZone``) while results
are in use, because Spark evaluates lazily; :meth:`SparkEngine.close` restores it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import sqlglot
from sqlglot import exp

from ..errors import InputError, MalformedJSONError, OptionError
from ..io.inputs import (
    ROW,
    LoadedInput,
    Part,
    _check_reserved,
    _frame_to_arrow,
    _json_layout,
    _with_row_numbers,
    expand_paths,
    file_format,
)
from ..io.scan import MalformedLine, malformed_csv_error, malformed_error, scan_csv, scan_json
from ..result import Table
from ..rules import Rules
from ..sql.compiler import Field, quote
from ..sql.dialects import rewrite
from ..sql.identity import SparkRunner, build_identities
from .base import Engine
from .spark_output import write_tables

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Spark", "SparkEngine", "SparkTable", "spark_session"]

DIALECT = "spark"
CORRUPT = "_corrupt_record"  # Spark's column for JSON lines that do not parse
_TEXT_FIELDS = {  # read as text whatever they look like, as the DuckDB engine does
    "type", "event", "name", "userId", "anonymousId", "messageId", "previousId", "groupId",
    "timestamp", "originalTimestamp", "sentAt", "receivedAt", "channel", "category",
}
_HELPERS = ("__sz_group", "__sz_file", "__sz_block", "__sz_mono")


def spark_session(master: str | None = None, *, progress: bool = False) -> Any:
    """A SparkSession for the CLI: ``master`` (``local[2]``, ``spark://host:7077``,
    ``yarn``...), else whatever ``spark-submit`` configured, else ``local[*]``."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("sessionize")
    if master:
        builder = builder.master(master)
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    builder = builder.config("spark.ui.showConsoleProgress", "true" if progress else "false")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "engine='spark' needs pyspark; install it with: pip install 'sessionize[spark]'"
        ) from exc


@dataclasses.dataclass(frozen=True)
class Spark:
    """Run the compiled rules as Spark SQL on ``session`` (a SparkSession; default: the
    active one). ``stop_on_close``: stop the session when the result is closed (for a
    session made just for this run, as the CLI's ``--engine spark`` does). Tune Spark
    through the session's own configuration."""

    session: Any = None
    stop_on_close: bool = False

    def open(self, *, progress: Callable[[str, float | None], None] | None = None,
             events_order: str = "time", events_table: bool = True) -> SparkEngine:
        require_pyspark()
        from pyspark.sql import SparkSession

        spark = self.session if self.session is not None else SparkSession.getActiveSession()
        if spark is None:
            raise OptionError(
                "engine='spark' needs a SparkSession (got spark=None and no active session)\n"
                "Hint: pass spark=SparkSession.builder.getOrCreate(), or use the CLI's "
                "--engine spark --master URL.")
        if not hasattr(spark, "sql") or not hasattr(spark, "read"):
            raise OptionError(f"'spark' must be a SparkSession (got {type(spark).__name__})")
        return SparkEngine(spark, progress=progress, events_order=events_order,
                           owns_session=self.stop_on_close)


def _duckdb_type(kind: Any) -> str:
    """A Spark type named as DuckDB names it: the compiler decides by DuckDB type names.

    Spark's ``TIMESTAMP`` is an instant (DuckDB's ``TIMESTAMP WITH TIME ZONE``);
    ``TIMESTAMP_NTZ`` is a wall-clock time (DuckDB's ``TIMESTAMP``).
    """
    from pyspark.sql import types as T

    simple = {
        T.StringType: "VARCHAR", T.VarcharType: "VARCHAR", T.CharType: "VARCHAR",
        T.TimestampType: "TIMESTAMP WITH TIME ZONE", T.TimestampNTZType: "TIMESTAMP",
        T.DateType: "DATE", T.ByteType: "TINYINT", T.ShortType: "SMALLINT",
        T.IntegerType: "INTEGER", T.LongType: "BIGINT", T.FloatType: "FLOAT",
        T.DoubleType: "DOUBLE", T.DecimalType: "DECIMAL", T.BooleanType: "BOOLEAN",
        T.BinaryType: "BLOB", T.StructType: "STRUCT", T.MapType: "MAP",
    }
    for cls, name in simple.items():
        if isinstance(kind, cls):
            return name
    if isinstance(kind, T.ArrayType):
        return _duckdb_type(kind.elementType) + "[]"
    return kind.simpleString().upper()


_SCHEME = re.compile("^file:(//)?")  # Spark spells local files file:/x and file:///x


def _local_key(uri: str) -> str:
    """A Spark file URI as the local path it names (other schemes unchanged)."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


class SparkEngine(Engine):
    """The compiled stages as temporary views of one SparkSession."""

    name = "spark"
    dialect = DIALECT

    def __init__(self, spark: Any, *, progress: Callable[[str, float | None], None] | None = None,
                 owns_session: bool = False, events_order: str = "time"):
        super().__init__(progress=progress, events_order=events_order)
        self.spark = spark
        self._owns = owns_session
        self._token = uuid.uuid4().hex[:12]
        self._views: list[str] = []
        self._persisted: list[Any] = []
        self._zone_before = spark.conf.get("spark.sql.session.timeZone", None)
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        self.frames: dict[str, Any] = {}
        self._workdir: str | None = None  # clean copies of local JSON (the careful pass)
        self._ids: tuple[str, ...] = ()  # the id columns, read as variants from JSON
        self._names: dict[str, str] = {}  # local files' absolute paths -> as the user named them
        # Local files by format group, in row order: LoadedInput.locate names the file and
        # line of a row from them, as for the DuckDB engine (empty for cluster storage).
        self._parts: list[Part] = []

    # -- SQL ------------------------------------------------------------------------------
    def view(self, stage: str) -> str:
        """This run's name of a stage's temporary view (runs never see each other's)."""
        return f"sz_{stage}_{self._token}"

    def _render(self, tree: exp.Expression) -> str:
        names = {f"sz_{s}": self.view(s) for s in ("input", "prepared", "identities", "assign",
                                                   "sessions", "users", "quarantine")}

        def rename(node: exp.Expression) -> exp.Expression:
            if not isinstance(node, exp.Table):
                return node
            if node.name in names:
                return exp.to_table(names[node.name], alias=node.alias or None)
            if node.name.startswith("sz_graph_"):  # the identity graph's tables
                return exp.to_table(self.view(node.name[3:]), alias=node.alias or None)
            return node

        return rewrite(tree.transform(rename), DIALECT).sql(dialect=DIALECT)

    def sql(self, duckdb_sql: str) -> Any:
        """Run DuckDB-flavoured SQL (as the compiler writes it) on Spark: a DataFrame."""
        return self.spark.sql(self._render(sqlglot.parse_one(duckdb_sql, read="duckdb")))

    def _register(self, stage: str, frame: Any, *, persist: bool = False) -> Any:
        if persist:
            from pyspark import StorageLevel

            frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
            self._persisted.append(frame)
        frame.createOrReplaceTempView(self.view(stage))
        self._views.append(self.view(stage))
        self.frames[stage] = frame
        return frame

    # -- running --------------------------------------------------------------------------
    def read(self, source: Any, rules: Rules, *, on_invalid: str, stdin: Any = None
             ) -> LoadedInput:
        self._parts = []
        frame, description, malformed = self._read(source, rules, on_invalid)
        schema = {f.name: _duckdb_type(f.dataType) for f in frame.schema.fields if f.name != ROW}
        self._register("input", frame)
        return LoadedInput(table="sz_input", schema=schema, description=description,
                           malformed=malformed, parts=self._parts, workdir=self._workdir)

    def assign(self, compiled: Any, loaded: LoadedInput, fields: dict[str, Field | None],
               on_invalid: str) -> int:
        self._register("prepared", self.spark.sql(self._render(compiled.prepared)))
        self._progress("checking", None)
        invalid = self.check(loaded, fields, on_invalid)
        self._progress("sessionizing", None)
        if compiled.identities is not None:  # the graph's rounds run first (sql/identity.py)
            build_identities(SparkRunner(self), compiled)
        self._register("assign", self.spark.sql(self._render(compiled.assign)), persist=True)
        self._register("sessions", self.spark.sql(self._render(compiled.sessions)), persist=True)
        self._register("users", self.spark.sql(self._render(compiled.users)))
        stage = "events" if self.events_order == "time" else "events_unordered"
        self._register("events", self.spark.sql(self._render(getattr(compiled, stage))))
        return invalid

    def create_quarantine(self, sql: str, loaded: LoadedInput) -> None:
        self._register("quarantine", self._quarantine(sql, loaded))

    def tables(self, compiled: Any) -> dict[str, Table | None]:
        return {name: SparkTable(self, name) for name in ("events", "sessions", "users",
                                                           "quarantine")} | {
            "identities": (SparkTable(self, "identities")
                           if compiled.identities is not None else None)}

    def rows(self, sql: str) -> list[tuple]:
        """Rows of a small query over the run's stages, rendered as Spark SQL."""
        return [tuple(row) for row in self.sql(sql).collect()]

    def write(self, tables: Sequence[Table], out_dir: Any, *, format: str,
              on_file: Callable[[str], None] | None) -> list[str]:
        """Write every table on the cluster as ``out_dir/<table>.<format>/`` (a directory of
        part files, Spark's layout), staged then renamed into place: see docs/spark.md."""
        return write_tables(self.spark, tables, os.fspath(out_dir), format=format,  # type: ignore[arg-type]
                            on_file=on_file)

    # -- reading --------------------------------------------------------------------------
    def _read(self, source: Any, rules: Rules, on_invalid: str) -> tuple[Any, str, Any]:
        """The input as a DataFrame with ``__sz_row``, a description, and malformed rows."""
        from pyspark.sql import DataFrame

        c = rules.columns
        text = {getattr(c, name, None) for name in (
            "timestamp", "user_id", "anonymous_id", "message_id", "received_at", "sent_at",
            "original_timestamp")} | _TEXT_FIELDS
        if isinstance(source, DataFrame):
            _check_reserved(source.columns)
            marked = source.selectExpr("*", "0 AS __sz_group", "0 AS __sz_file",
                                       "spark_partition_id() AS __sz_block")
            return self._number(marked, parquet_only=False), "a Spark DataFrame", None
        arrow = _frame_to_arrow(source)
        if arrow is not None:
            table = _microsecond_times(_with_row_numbers(arrow))
            frame = self.spark.createDataFrame(table)
            return frame, f"a {type(source).__module__.split('.')[0]} {type(source).__name__}", \
                None
        sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        if not sources:
            raise OptionError("no input given (got an empty list)")
        paths: list[str] = []
        shown: list[str] = []  # as the user named them, for messages
        for s in sources:
            if not isinstance(s, (str, os.PathLike)):
                raise OptionError(
                    "source must be a path or URI, a list of them, a Spark DataFrame, or a "
                    f"pandas/polars/pyarrow/DuckDB table (got {type(s).__name__})")
            s = os.fspath(s)
            if s == "-":
                raise OptionError(
                    "engine='spark' cannot read stdin ('-') (got '-')\n"
                    "Hint: write the events to storage the cluster can read and pass its path.")
            if "://" in s or not (os.path.exists(s) or any(c in s for c in "*?[")):
                paths.append(s)  # cluster storage: Spark resolves it
                shown.append(s)
            else:
                local = expand_paths([s])
                shown.extend(local)
                self._names.update((os.path.abspath(p), p) for p in local)
                paths.extend("file://" + os.path.abspath(p) for p in local)
        groups: dict[str, list[str]] = {}
        for path in paths:
            fmt = file_format(path)
            if fmt == "csv" and path.lower().removesuffix(".gz").endswith(".tsv"):
                fmt = "tsv"
            if fmt == "json" and path.startswith("file://"):  # sniffed as the DuckDB engine does
                fmt = "ndjson" if _json_layout([path[7:]]) == "newline_delimited" else "json"
            groups.setdefault(fmt, []).append(path)
        careful: list[MalformedLine] = []
        frames = []
        ids = self._ids = (c.user_id, c.anonymous_id)
        everywhere_local = all(p.startswith("file://") for p in paths)
        for index, (fmt, files) in enumerate(groups.items()):
            if everywhere_local:
                self._parts.append(Part("csv" if fmt == "tsv" else fmt, [
                    (_local_key(f), self._shown(f))
                    for f in files]))
            frame, origin = self._read_group(fmt, files, text, on_invalid, careful)
            frame = self._mark(frame, index, files if origin is None else list(origin), origin)
            frames.append(_ids_as_text(frame, ids) if fmt in ("json", "ndjson") else frame)
        _check_reserved(c for frame in frames for c in frame.columns
                        if c not in (*_HELPERS, "__sz_path", CORRUPT))
        union = frames[0]
        for other in frames[1:]:
            union = union.unionByName(other, allowMissingColumns=True)
        numbered = self._number(union, parquet_only=list(groups) == ["parquet"])
        description = shown[0] if len(shown) == 1 else f"{len(shown)} files"
        malformed = None
        if CORRUPT in numbered.columns:
            from pyspark.sql import functions as F

            bad = numbered.filter(f"{CORRUPT} IS NOT NULL").withColumn(
                "__sz_reason", F.when(F.lower(F.col("__sz_path")).rlike(r"\.[ct]sv(\.gz)?$"),
                                      F.lit("malformed_csv")).otherwise(F.lit("malformed_json")))
            if bad.take(1):
                if on_invalid == "raise" or "json" in groups:  # an array cannot be split
                    raise self._malformed_error(bad)
                malformed = bad
            numbered = numbered.filter(f"{CORRUPT} IS NULL").drop(CORRUPT)
        if careful:
            import pyarrow as pa

            lines = self.spark.createDataFrame(pa.table({
                ROW: pa.array(range(len(careful)), pa.int64()),
                "__sz_path": [bad.path for bad in careful],
                "__sz_line": pa.array([bad.line for bad in careful], pa.int64()),
                CORRUPT: [bad.text for bad in careful],
                "__sz_reason": [bad.reason for bad in careful]}))
            malformed = lines if malformed is None else malformed.select(
                ROW, "__sz_path", "__sz_line", CORRUPT, "__sz_reason").unionByName(lines)
        return numbered.drop("__sz_path", "__sz_line"), description, malformed

    def _read_group(self, fmt: str, files: list[str], text: set[str], on_invalid: str,
                    careful: list[MalformedLine]) -> tuple[Any, dict[str, str] | None]:
        """One format's files as a DataFrame. Local JSON that Spark cannot read whole (a
        line that does not parse, keys differing only in case, no object at all, invalid
        UTF-8) takes the DuckDB engine's careful pass (:func:`sessionize.io.scan.scan_json`):
        each object it refuses is set aside with its line (added to ``careful``), the others
        are written unchanged to clean NDJSON files Spark reads. Returns the frame and, for
        the careful pass, {clean file: input file} in input order."""
        local = all(f.startswith("file:") for f in files) and \
            self.spark.sparkContext.master.startswith("local")
        if fmt == "parquet" or not local:
            return self._read_files(fmt, files, text), None
        try:
            frame = self._read_files(fmt, files, text)
        except InputError:
            frame = None
        if frame is not None and CORRUPT not in frame.columns:
            return frame, None
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="sessionize-spark-")
        spellings: dict[str, str] = {}
        origin: dict[str, str] = {}
        for uri in files:
            path = self._shown(uri)
            if fmt in ("csv", "tsv"):
                found = scan_csv(path, "\t" if fmt == "tsv" else ",", self._workdir,
                                 stop_at_first=on_invalid == "raise", shown=path)
                if found.malformed and on_invalid == "raise":
                    raise malformed_csv_error(found.malformed[0])
            else:
                found = scan_json(path, fmt, self._workdir, spellings,
                                  stop_at_first=on_invalid == "raise", shown=path)
                if found.malformed and on_invalid == "raise":
                    raise malformed_error(found.malformed[0])
            careful.extend(found.malformed)
            if self._parts:
                self._parts[-1].lines[_local_key(uri)] = found.lines
            if found.clean is not None:
                origin["file://" + found.clean] = path
        clean = "csv" if fmt in ("csv", "tsv") else "ndjson"
        if not origin:  # every record refused: zero events from these files
            empty = os.path.join(self._workdir, f"empty-{uuid.uuid4().hex[:8]}.{clean}")
            open(empty, "wb").close()
            origin["file://" + empty] = self._shown(files[0])
        return self._read_files(clean, list(origin), text), origin

    def _read_files(self, fmt: str, files: list[str], text: set[str]) -> Any:
        reader = self.spark.read
        try:
            if fmt == "parquet":
                return reader.option("mergeSchema", "true").parquet(*files)
            if fmt in ("csv", "tsv"):  # RFC 4180, as the DuckDB engine reads it
                reader = reader.options(header=True, multiLine=True, escape='"',
                                        sep="\t" if fmt == "tsv" else ",")
                inferred = reader.csv(files, inferSchema=True).schema
                return reader.csv(files, schema=_as_text(inferred, text, corrupt=True),
                                  columnNameOfCorruptRecord=CORRUPT)
            multiline = fmt == "json"
            inferred = reader.json(files, multiLine=multiline).schema
            return reader.json(files, multiLine=multiline,
                               schema=_as_text(inferred, text, ids=self._ids),
                               columnNameOfCorruptRecord=CORRUPT)
        except Exception as exc:  # Spark raises its own types for missing/unreadable files
            if type(exc).__module__.startswith(("pyspark", "py4j")):
                raise InputError(f"cannot read {files[0] if len(files) == 1 else files}: "
                                 f"{str(exc).splitlines()[0]}") from exc
            raise

    def _shown(self, uri: str) -> str:
        """A file as the user named it (a local path as given), else as Spark names it."""
        path = _local_key(uri)
        return self._names.get(path, path)

    def _mark(self, frame: Any, group: int, files: list[str],
              origin: dict[str, str] | None = None) -> Any:
        """Add (format group, file index, split start) and the file's name (the input file
        a clean copy was made from, by ``origin``): the coarse input order. Files are
        matched by Spark's own (URL-encoded) names."""
        from pyspark.sql import functions as F

        given = {_local_key(p): i for i, p in enumerate(files)}
        found = sorted(frame.inputFiles(), key=lambda f: (given.get(_local_key(f), len(given)),
                                                           f))
        index = F.create_map(*[x for i, f in enumerate(found)
                               for x in (F.lit(_SCHEME.sub("", f)), F.lit(i))])
        file = index[F.regexp_replace(F.col("_metadata.file_path"), _SCHEME.pattern, "")]
        renamed = {_local_key(clean): path for clean, path in (origin or {}).items()}
        names = F.array(*[F.lit(renamed.get(_local_key(f), self._shown(f))) for f in found])
        return frame.select(
            "*", F.lit(group).alias("__sz_group"), file.alias("__sz_file"),
            F.col("_metadata.file_block_start").alias("__sz_block"),
            F.element_at(names, file + 1).alias("__sz_path"))

    def _number(self, frame: Any, *, parquet_only: bool) -> Any:
        """``__sz_row``: the DuckDB engine's input order, from per-split counts.

        Within one split Spark reads rows in file order, so ``monotonically_increasing_id``
        minus its smallest value in the split is the row's position in it; the splits'
        counts, ordered, give each split's first row number. Parquet rows are numbered
        (file << 40) + row in file, as DuckDB numbers them; other inputs densely.
        """
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        marked = frame.withColumn("__sz_mono", F.monotonically_increasing_id())
        marked = marked.persist(StorageLevel.MEMORY_AND_DISK)  # one parse; stable ids
        self._persisted.append(marked)
        splits = marked.groupBy("__sz_group", "__sz_file", "__sz_block").agg(
            F.count(F.lit(1)).alias("n"), F.min("__sz_mono").alias("first")).collect()
        if any(s["__sz_file"] is None for s in splits):  # never drop rows silently
            raise InputError(
                "Spark read files it did not list in inputFiles(), so their input order is "
                f"unknown (files: {frame.inputFiles()[:3]}...); please report this")
        rows, offset, in_file, last_file = [], 0, 0, None
        for s in sorted(splits, key=lambda r: (r["__sz_group"], r["__sz_file"], r["__sz_block"])):
            key = (s["__sz_group"], s["__sz_file"])
            in_file = in_file if key == last_file else 0
            base = (s["__sz_file"] << 40) + in_file if parquet_only else offset
            rows.append((s["__sz_group"], s["__sz_file"], s["__sz_block"], base - s["first"],
                         in_file + 1 - s["first"]))
            offset += s["n"]
            in_file += s["n"]
            last_file = key
        # Inline VALUES, not createDataFrame(list): that would need Python on the executors.
        values = ", ".join(f"({g}, {f}, {b}, {shift}, {lshift})"
                           for g, f, b, shift, lshift in rows) or "(0, 0, 0, 0, 0)"
        starts = self.spark.sql(
            f"SELECT * FROM VALUES {values} AS t(__sz_group, __sz_file, __sz_block, "
            f"__sz_shift, __sz_lshift){'' if rows else ' WHERE false'}")
        joined = marked.join(F.broadcast(starts), ["__sz_group", "__sz_file", "__sz_block"])
        numbered = joined.withColumn(ROW, F.col("__sz_mono") + F.col("__sz_shift"))
        if "__sz_path" in frame.columns:  # the record's number in its file, for messages
            numbered = numbered.withColumn("__sz_line", F.col("__sz_mono") + F.col("__sz_lshift"))
        return numbered.drop(*_HELPERS, "__sz_shift", "__sz_lshift")

    @staticmethod
    def _malformed_error(bad: Any) -> InputError:
        path, line, text, reason = bad.select("__sz_path", "__sz_line", CORRUPT,
                                              "__sz_reason").orderBy(ROW).first()
        snippet = (text or "").rstrip()
        snippet = snippet if len(snippet) <= 80 else snippet[:77] + "..."
        if reason == "malformed_csv":
            return InputError(
                f"malformed CSV in {path!r} at record {line}: {snippet!r}\n"
                "Hint: every row of a CSV file needs as many fields as its header; use "
                "on_invalid='quarantine' (--on-invalid quarantine) to set such rows aside "
                "and process the rest.")
        return MalformedJSONError(
            f"malformed JSON in {path!r} at record {line} (blank lines not counted): "
            f"{snippet!r}\n"
            "Hint: every line of NDJSON must be one JSON object; use on_invalid='quarantine' "
            "(--on-invalid quarantine) to set such lines aside and process the rest.",
            path=path, line=line)

    # -- fields ---------------------------------------------------------------------------
    def resolve(self, loaded: LoadedInput, path: str) -> Field | None:
        """Where a configured column lives: a top-level name, else a dotted struct path."""
        from pyspark.sql import types as T

        frame = self.frames["input"]
        by_name = {f.name: f for f in frame.schema.fields}
        if path in by_name:
            return Field(quote(path), _duckdb_type(by_name[path].dataType), top_level=path)
        head, _, rest = path.partition(".")
        if not rest or head not in by_name:
            return None
        kind = by_name[head].dataType
        sql = quote(head)
        for part in rest.split("."):
            if isinstance(kind, T.StructType) and part in kind.fieldNames():
                kind = kind[part].dataType
            elif isinstance(kind, T.MapType):
                kind = kind.valueType
            else:
                return None
            sql += "['" + part.replace("'", "''") + "']"
        return Field(sql, _duckdb_type(kind))

    def _quarantine(self, sql: str, loaded: LoadedInput) -> Any:
        from pyspark.sql import functions as F

        invalid, malformed = self.sql(sql), loaded.malformed
        if loaded.parts:  # name the file and line of every row set aside, as DuckDB does
            import pyarrow as pa

            rows = [r[0] - 1 for r in invalid.select("source_row").collect()]
            origins = loaded.locate(rows)
            if origins:
                where = self.spark.createDataFrame(pa.table({
                    "__sz_at": pa.array([row + 1 for row in origins], pa.int64()),
                    "__sz_f": [o[0] for o in origins.values()],
                    "__sz_l": pa.array([o[1] for o in origins.values()], pa.int64()),
                    "__sz_n": pa.array([o[2] for o in origins.values()], pa.int64())}))
                renamed = {"source_file": "__sz_f", "source_line": "__sz_l",
                           "source_row": "__sz_n"}
                joined = invalid.join(F.broadcast(where),
                                      invalid["source_row"] == where["__sz_at"], "left")
                invalid = joined.orderBy(invalid["source_row"]).select(*[
                    F.coalesce(F.col(renamed[c]), invalid[c]).alias(c) if c in renamed
                    else F.col(f"`{c.replace('`', '``')}`") for c in invalid.columns])
        if malformed is None:
            return invalid

        bad = malformed.orderBy(ROW).select(
            F.col("__sz_reason").alias("quarantine_reason"),
            F.lit(None).cast("bigint").alias("source_row"),
            F.col("__sz_path").alias("source_file"),
            F.col("__sz_line").alias("source_line"),
            F.rtrim(F.col(CORRUPT)).alias("raw_line"))
        return invalid.unionByName(bad, allowMissingColumns=True)

    def close(self) -> None:
        """Drop this run's views and cached data; restore the session's time zone."""
        catalog = self.spark.catalog
        for name in self._views:
            catalog.dropTempView(name)
        for frame in self._persisted:
            frame.unpersist()
        self._views, self._persisted = [], []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._owns:
            self.spark.stop()
        elif self._zone_before not in (None, "UTC"):
            self.spark.conf.set("spark.sql.session.timeZone", self._zone_before)


def _as_text(schema: Any, text: set[str], *, corrupt: bool = False,
             ids: Sequence[str] = ()) -> Any:
    """The inferred schema with Segment's text fields (and the configured ones) as strings
    (and, with ``corrupt``, the column for records that do not parse); the top-level
    ``ids`` as variants, which :func:`_ids_as_text` turns into text.

    Spark's JSON reader keeps a number given for a string field as its JSON text, so an
    epoch timestamp arrives as ``'1704099600'``, which the compiler parses by magnitude.
    """
    from pyspark.sql import types as T

    fields = [T.StructField(f.name, T.VariantType(), True) if f.name in ids else
              T.StructField(f.name, T.StringType(), True) if f.name in text else f
              for f in schema.fields]
    if corrupt and CORRUPT not in schema.fieldNames() and fields:
        fields.append(T.StructField(CORRUPT, T.StringType(), True))
    return T.StructType(fields)


def _ids_as_text(frame: Any, ids: Sequence[str]) -> Any:
    """The id columns read as variants, as text: strings and numbers as the DuckDB engine
    reads them; true/false, arrays and objects missing (an id that is not text is no user;
    read as text, Spark would turn ``true`` into ``'true'``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kinds = {f.name: f.dataType for f in frame.schema.fields}
    for name in dict.fromkeys(ids):
        if not isinstance(kinds.get(name), T.VariantType):
            continue
        column = f"`{name.replace('`', '``')}`"
        kind = f"schema_of_variant({column})"
        frame = frame.withColumn(name, F.expr(
            f"CASE WHEN {kind} = 'BOOLEAN' OR {kind} LIKE 'ARRAY%' OR {kind} LIKE 'OBJECT%' "
            f"THEN NULL ELSE variant_get({column}, '$', 'string') END"))
    return frame


def _microsecond_times(table: pa.Table) -> pa.Table:
    """Nanosecond timestamps floored to microseconds (Spark's precision; DuckDB's rule)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = pc.floor_temporal(table.column(i), unit="microsecond")
            table = table.set_column(i, field.name, column.cast(pa.timestamp("us", field.type.tz)))
    return table


# -- results ---------------------------------------------------------------------------------
class SparkTable(Table):
    """One output table, living on the cluster as a Spark DataFrame (``spark_df``).

    ``to_arrow()`` / ``to_pandas()`` / ``to_polars()`` collect it to the driver (only
    when asked); ``len()`` counts on the cluster.
    """

    def __init__(self, engine: SparkEngine, name: str):
        self._engine = engine
        self.name = name

    @property
    def spark_df(self) -> Any:
        """The table as a Spark DataFrame, for further Spark work on the cluster."""
        return self._engine.frames[self.name]

    @property
    def relation(self) -> Any:  # pragma: no cover - DuckDB only
        raise AttributeError("a Spark result has no DuckDB relation; use .spark_df")

    @property
    def columns(self) -> list[str]:
        return list(self.spark_df.columns)

    def __len__(self) -> int:
        return self.spark_df.count()

    def to_arrow(self, *, limit: int | None = None) -> pa.Table:
        """The table as a ``pyarrow.Table`` (collected to the driver)."""
        frame = self.spark_df if limit is None else self.spark_df.limit(limit)
        return _normalise_arrow(frame.toArrow())

    def to_arrow_batches(self, batch_size: int = 1_000_000) -> pa.RecordBatchReader:
        import pyarrow as pa

        table = self.to_arrow()
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(batch_size))


def _normalise_arrow(table: pa.Table) -> pa.Table:
    """Spark's Arrow as the DuckDB engine's: UTC ``timestamp[us]``, ``duration[us]``."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            table = table.set_column(i, field.name,
                                     table.column(i).cast(pa.timestamp("us", "UTC")))
        elif pa.types.is_duration(field.type) and field.type.unit != "us":
            table = table.set_column(i, field.name, table.column(i).cast(pa.duration("us")))
    return table
