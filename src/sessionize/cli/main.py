"""The command line: a thin layer over :func:`sessionize.run`.

Exit codes: 0 success, 1 bad data (unreadable input, invalid events) or outputs that
cannot be written, 2 bad usage (unknown flag, bad option value) or an unexpected crash.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import IO

from .._version import __version__
from ..analysis.thresholds import thresholds
from ..api import execute, make_rules, to_sql
from ..engines.duckdb import PLANS, DuckDB
from ..engines.postgres import Postgres
from ..engines.spark import Spark, require_pyspark, spark_session
from ..errors import DataError, OptionError, OutputError
from ..io.dbt import write_project
from ..reporting import report
from ..sample import sample_path
from ..sql.standalone import DIALECTS, TABLES
from .options import add_option_arguments, rule_options
from .progress import Progress

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2

RUN_EXAMPLES = """\
examples:
  sessionize run --sample --out out/               the notebook's six events
  sessionize run events.json --out out/            a JSON array, as in the notebook
  sessionize run 'segment-logs/**/*.gz' --out out/ --format csv
  sessionize run events.parquet --out out/ --gap 1h30m
  cat events.ndjson | sessionize run - --out out/  NDJSON on stdin
  sessionize run events.ndjson --out out/ --on-invalid quarantine
  sessionize run events.json --out out/ --profile saas --identity stitch
  sessionize run events.json --out out/ --identity graph --identity-cap 2 --user-change
  sessionize run events.json --out out/ --gap-by platform --gaps web=30m mobile=5m
  sessionize run events.json --out out/ --config rules.toml   (docs/rules.md)
  sessionize run 'day-2/*.gz' --state state.duckdb     add a batch to a state (docs/incremental.md)
  sessionize run 'day-3/*.gz' --state state.duckdb --max-lateness 3d --out out/

writes OUT/events.<fmt>, OUT/sessions.<fmt>, OUT/users.<fmt> (and OUT/quarantine.<fmt>
when rows were set aside); every file appears complete or not at all.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its wording
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


THRESHOLDS_EXAMPLES = """\
examples:
  sessionize thresholds events.json                  recommendation per platform + curve
  sessionize thresholds 'logs/**/*.gz' --platform context.device.type
  sessionize thresholds events.parquet --json > thresholds.json
"""

SQL_EXAMPLES = """\
examples:
  sessionize sql --dialect postgres --source segment.tracks            the events table
  sessionize sql --dialect bigquery --source proj.segment.tracks --table sessions
  sessionize sql --dialect snowflake --source raw.tracks --profile saas --table users
  sessionize sql --dialect duckdb --source tracks --column userId=text \\
      --column timestamp=text --column context=json --gap-by platform --gaps web=30m mobile=5m

the query reads the source's Segment columns (userId, anonymousId, messageId, event, type,
timestamp as a timestamp with a time zone) unless --column declares them; docs/warehouse.md.
"""

REPORT_EXAMPLES = """\
examples:
  sessionize report events.json -o report.html       one self-contained page, opens offline
  sessionize report events.parquet -o report.html --gap 15m --show-user-ids
"""


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Input, rule, column and engine flags, the same for every command that sessionizes."""
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="files, directories or globs (JSON array, NDJSON[.gz], Parquet, "
                             "CSV); '-' reads NDJSON from stdin")
    parser.add_argument("--sample", action="store_true",
                        help="use the bundled sample (the notebook's six events) as input")
    parser.add_argument("--on-invalid", default="raise", choices=["raise", "quarantine"],
                        help="rows with a bad timestamp or no user id: fail (default) or set "
                             "them aside in a quarantine file with a reason each")
    add_option_arguments(parser)
    engine = parser.add_argument_group("engine")
    engine.add_argument("--database", metavar="FILE",
                        help="keep DuckDB's tables in this file instead of memory")
    engine.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit, e.g. 4GB")
    engine.add_argument("--threads", type=int, metavar="N", help="DuckDB threads")
    engine.add_argument("--temp-directory", metavar="DIR", help="where DuckDB spills")
    engine.add_argument("--plan", default="auto", choices=list(PLANS),
                        help="how DuckDB assigns sessions: the compiled SQL, the columnar "
                             "plan (faster, in memory), or the columnar plan per bucket of "
                             "users (bucketed: inputs larger than memory); auto picks "
                             "(default; docs/guide.md)")
    engine.add_argument("--buckets", type=int, metavar="N",
                        help="the bucketed plan's number of buckets (default: from the "
                             "input's size and the memory limit)")
    engine.add_argument("--events-order", default="time", choices=["time", "none"],
                        help="run: the events table's row order, by time (default) or none "
                             "(no sort: faster when writing files or loading a warehouse)")
    engine.add_argument("--engine", default="duckdb", choices=["duckdb", "spark", "postgres"],
                        help="duckdb (embedded, default), spark (run only; docs/spark.md) or "
                             "postgres (run only, inside the database; docs/warehouse.md)")
    engine.add_argument("--dsn", metavar="URL",
                        help="--engine postgres: the database, postgresql://user@host/db")
    engine.add_argument("--source", metavar="TABLE",
                        help="--engine postgres: the table holding the events, SCHEMA.TABLE")
    engine.add_argument("--master", metavar="URL",
                        help="Spark master for --engine spark: local[2], spark://host:7077, "
                             "yarn, ... (default: spark-submit's, else local[*])")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show progress on stderr (default: when stderr is a terminal)")
    shown.add_argument("--no-progress", dest="progress", action="store_false")


def _add_platform_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", default="auto", metavar="COL",
                        help="column or dotted path giving each event's platform (default: "
                             "auto, from context.library.name: web / mobile / server); "
                             "'none' for no split")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sessionize", description="Turn product-analytics events into sessions.")
    parser.add_argument("--version", action="version", version=f"sessionize {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser(
        "run", help="sessionize events and write events, sessions and users",
        description="Sessionize events: every event with its user and session, plus a "
                    "sessions table and a users table.",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source_flags(run)
    run.add_argument("--out", "-o", metavar="DIR", help="output directory (required, except "
                     "with --engine postgres)")
    run.add_argument("--into", metavar="SCHEMA",
                     help="--engine postgres: create the tables in this schema "
                          "(sessionize_events, _sessions, _users, _quarantine)")
    run.add_argument("--format", default="parquet", choices=["parquet", "csv", "ndjson"],
                     help="output format (default: parquet)")
    run.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    state = run.add_argument_group("incremental runs (docs/incremental.md)")
    state.add_argument("--state", metavar="FILE",
                       help="a DuckDB file keeping every run's tables (created on the first "
                            "run): the inputs are a new batch; only its users are recomputed; "
                            "--out is then optional and also writes the run's changes")
    state.add_argument("--max-lateness", metavar="DURATION",
                       help="with --state: quarantine events older than the newest event in "
                            "the state minus this (e.g. 3d) as too_late")
    thresholds = commands.add_parser(
        "thresholds", help="how sessions depend on the gap, and the gap the data suggests",
        description="Gap distribution, sessions / median duration / one-event share for "
                    "thresholds from 1 second to 30 days, and a recommended threshold per "
                    "platform (a log-normal mixture fitted to the gaps) with how confident it "
                    "is and why, printed also as a rules file and as Python options. Prints "
                    "to stdout.",
        epilog=THRESHOLDS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source_flags(thresholds)
    _add_platform_flag(thresholds)
    thresholds.add_argument("--json", action="store_true",
                            help="print everything (curve, histogram, recommendations) as JSON")
    report = commands.add_parser(
        "report", help="write a self-contained HTML report answering the notebook's questions",
        description="One HTML file that opens offline: headline numbers, sessions per user, "
                    "starts by reason, gap histogram and sensitivity curves, web vs mobile, "
                    "durations, example timelines and data quality.",
        epilog=REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source_flags(report)
    _add_platform_flag(report)
    report.add_argument("--output", "-o", required=True, metavar="FILE",
                        help="where to write the report (e.g. report.html)")
    report.add_argument("--show-user-ids", action="store_true",
                        help="show real user ids (default: 'user 1', 'user 2', ...)")
    report.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    sql = commands.add_parser(
        "sql", help="print one standalone SQL query per table, for a warehouse",
        description="Print one standalone SQL query (CTEs only) that returns the events, "
                    "sessions or users table for the events in a warehouse table, with the "
                    "columns and values 'sessionize run' gives.",
        epilog=SQL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_query_flags(sql)
    sql.add_argument("--table", default="events", choices=TABLES,
                     help="which table the query returns (default: events; quarantine: the "
                          "rows left out, with a reason each)")


    dbt = commands.add_parser(
        "dbt", help="write a dbt package: source, models, schema tests, README",
        description="Write a dbt package that builds sessionize_events, sessionize_sessions "
                    "and sessionize_users from the raw events with 'dbt build', as "
                    "'sessionize run' would.",
        epilog="example:\n  sessionize dbt models/sessionize --dialect postgres --source "
               "segment.tracks --profile saas",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    dbt.add_argument("directory", metavar="DIR", help="where to write the package")
    _add_query_flags(dbt, dialect="duckdb", source="segment.tracks")
    return parser


def _add_query_flags(parser: argparse.ArgumentParser, *, dialect: str | None = None,
                     source: str | None = None) -> None:
    """What a standalone query needs: the dialect, the source table, its columns, the rules."""
    parser.add_argument("--dialect", required=dialect is None, default=dialect,
                        choices=DIALECTS, help="the SQL dialect of the warehouse"
                        + (f" (default: {dialect})" if dialect else ""))
    parser.add_argument("--source", required=source is None, default=source, metavar="TABLE",
                        help="the table holding the events, e.g. segment.tracks"
                        + (f" (default: {source})" if source else ""))
    parser.add_argument("--column", dest="schema", action="append", type=_column_type,
                        metavar="NAME=TYPE",
                        help="declare a column of the source and its type (text, bigint, "
                             "double, timestamptz, timestamp, json); repeatable; replaces "
                             "the default Segment columns")
    parser.add_argument("--order-by", metavar="COL",
                        help="a column ordering rows that tie on time and messageId (a load "
                             "sequence); default: each row's content decides")
    add_option_arguments(parser)


def _column_type(text: str) -> tuple[str, str]:
    name, sep, kind = text.rpartition("=")
    if not sep or not name or not kind:
        raise argparse.ArgumentTypeError(f"must be NAME=TYPE such as userId=text (got {text!r})")
    return name, kind


def _sql(args: argparse.Namespace, stdout: IO[str]) -> int:
    stdout.write(to_sql(dialect=args.dialect, source=args.source, table=args.table,
                        schema=dict(args.schema) if args.schema else None,
                        order_by=args.order_by, **rule_options(args)))
    return EXIT_OK


def _dbt(args: argparse.Namespace, stdout: IO[str]) -> int:
    schema, _, table = args.source.rpartition(".")
    if not schema:
        raise OptionError(f"--source must be SCHEMA.TABLE for a dbt source (got {args.source!r})")
    rules = make_rules(None, None, rule_options(args))
    files = write_project(rules, args.directory, dialect=args.dialect, source_schema=schema,
                          source_table=table, schema=dict(args.schema) if args.schema else None,
                          order_by=args.order_by, version=__version__)
    stdout.write("wrote " + ", ".join(files) + f"\nrun it: dbt build --project-dir "
                 f"{args.directory} (with a profile named 'sessionize')\n")
    return EXIT_OK


def _run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    if args.command == "sql":
        return _sql(args, stdout)
    if args.command == "dbt":
        return _dbt(args, stdout)
    result, progress = _sessionize(args, stderr)
    if result is None:
        return EXIT_USAGE
    if args.engine == "postgres":
        with result:
            if progress:
                progress.done()
            if not getattr(args, "quiet", False):
                stdout.write(result.summary() + "\n")
                created = [t.relation for t in (result.events, result.sessions, result.users,
                                                result.quarantine) if "." in t.relation]
                stdout.write("created " + ", ".join(created) + "\n")
        return EXIT_OK
    if getattr(args, "state", None):
        with result:
            paths = result.write(args.out, format=args.format) if args.out else []
            if progress:
                progress.done()
            if not args.quiet:
                stdout.write(result.summary() + "\n")
                if paths:
                    stdout.write("wrote " + ", ".join(paths) + "\n")
        return EXIT_OK
    with result:
        if args.command == "thresholds":
            return _thresholds(args, result, progress, stdout)
        if args.command == "report":
            return _report(args, result, progress, stdout)
        paths = result.write(args.out, format=args.format,
                             on_file=(lambda name: progress(f"writing {name}", None))
                             if progress else None)
        if progress:
            progress.done()
        if not args.quiet:
            stdout.write(result.summary() + "\n")
            stdout.write("wrote " + ", ".join(paths) + "\n")
            if args.sample:
                stdout.write("\n" + _timeline(result) + "\n")
    return EXIT_OK


def _sessionize(args: argparse.Namespace, stderr: IO[str]):
    """Run the shared input/rule/engine flags through the API (sessionize.run)."""
    if args.engine == "postgres":
        return _in_postgres(args, stderr)
    if getattr(args, "into", None) or args.dsn or args.source:
        stderr.write(f"sessionize {args.command}: error: --dsn, --source and --into need "
                     "--engine postgres\n")
        return None, None
    state = getattr(args, "state", None)
    if args.command == "run" and args.max_lateness and not state:
        stderr.write("sessionize run: error: --max-lateness needs --state\n")
        return None, None
    if state and (args.database or args.engine != "duckdb"):
        stderr.write("sessionize run: error: --state runs on DuckDB and is itself the "
                     "database (drop --database / --engine)\n")
        return None, None
    if args.command == "run" and not args.out and not state:
        stderr.write("sessionize run: error: the following arguments are required: --out\n")
        return None, None
    if args.sample == bool(args.inputs):
        stderr.write(f"sessionize {args.command}: error: give INPUT files or --sample "
                     "(not both)\n")
        return None, None
    source = sample_path() if args.sample else args.inputs
    interactive = stderr.isatty()
    show = interactive if args.progress is None else args.progress
    progress = Progress(stderr, interactive=interactive) if show else None
    if args.master and args.engine != "spark" or args.engine == "spark" and args.command != "run":
        stderr.write(f"sessionize {args.command}: error: --master needs --engine spark, which "
                     "works with 'run' only\n")
        return None, None
    if args.engine == "spark":
        duckdb_only = [flag for flag, value in (
            ("--database", args.database), ("--memory-limit", args.memory_limit),
            ("--threads", args.threads), ("--temp-directory", args.temp_directory),
            ("--plan", None if args.plan in ("auto", "sql") else args.plan),
            ("--buckets", args.buckets)) if value]
        if duckdb_only:
            raise OptionError(f"{duckdb_only[0]} tunes DuckDB and does not apply to "
                              "--engine spark\nHint: tune Spark through its own "
                              "configuration (spark-submit --conf ...)")
        engine: DuckDB | Spark = _spark_engine(args.master, show)
    else:
        engine = DuckDB(database=args.database, memory_limit=args.memory_limit,
                        threads=args.threads, temp_directory=args.temp_directory, plan=args.plan,
                        buckets=args.buckets)
    result = execute(
        source, on_invalid=args.on_invalid, engine=engine, progress=progress,
        # thresholds and report never show the events table: no time order for them
        events_order=args.events_order if args.command == "run" else "none",
        events_table=args.command == "run", **rule_options(args),
        **({"state": state, "max_lateness": args.max_lateness} if state else {}))
    return result, progress


def _in_postgres(args: argparse.Namespace, stderr: IO[str]):
    """--engine postgres: the rules run inside the database, on a table already there."""
    problem = None
    if args.command != "run":
        problem = "--engine postgres works with 'run' only"
    elif not args.dsn:
        problem = "--engine postgres needs --dsn postgresql://user@host/db"
    elif bool(args.source) == bool(args.inputs) or args.sample or len(args.inputs) > 1:
        problem = "--engine postgres reads one table: give --source SCHEMA.TABLE"
    elif not args.into:
        problem = ("--engine postgres creates the tables in the database: give --into SCHEMA "
                   "(--out writes files, which this engine does not)")
    if problem:
        stderr.write(f"sessionize {args.command}: error: {problem}\n")
        return None, None
    interactive = stderr.isatty()
    show = interactive if args.progress is None else args.progress
    progress = Progress(stderr, interactive=interactive) if show else None
    result = execute(args.source or args.inputs[0], on_invalid=args.on_invalid,
                     engine=Postgres(dsn=args.dsn, into=args.into), progress=progress,
                     events_order=args.events_order, **rule_options(args))
    return result, progress


def _spark_engine(master: str | None, progress: bool) -> Spark:
    """The Spark engine for --engine spark, stopping the session on close if it made it."""
    try:
        require_pyspark()
    except ImportError as exc:
        raise OptionError(f"--engine spark: {exc}") from exc
    from pyspark.sql import SparkSession

    owned = SparkSession.getActiveSession() is None
    return Spark(spark_session(master, progress=progress), stop_on_close=owned)


def _platform(args: argparse.Namespace) -> str | None:
    return None if args.platform.lower() == "none" else args.platform


def _thresholds(args, result, progress, stdout: IO[str]) -> int:
    import json

    if progress:
        progress("analysing thresholds", None)
    analysis = thresholds(result, platform=_platform(args))
    if progress:
        progress.done()
    if args.json:
        stdout.write(json.dumps(analysis.to_dict(), indent=2) + "\n")
    else:
        stdout.write(analysis.summary() + "\n")
    return EXIT_OK


def _report(args, result, progress, stdout: IO[str]) -> int:
    if progress:
        progress("building the report", None)
    built = report(result, show_user_ids=args.show_user_ids, platform=_platform(args))
    path = built.write(args.output)
    if progress:
        progress.done()
    if not args.quiet:
        stdout.write(result.summary() + "\n")
        rec = built.analysis.recommendations["all"]
        if rec.threshold:
            stdout.write(f"recommended threshold: {rec.threshold} ({rec.confidence} "
                         "confidence)\n")
        stdout.write(f"wrote {path}\n")
    return EXIT_OK


def _timeline(result) -> str:
    """The notebook's "View User Timelines" table, as text."""
    relation = result.events.relation if result.engine.name == "duckdb" else \
        _utc_duckdb().from_arrow(result.events.to_arrow())  # a Spark result: a small sample
    rows = relation.query(
        "t", "SELECT resolved_user, session_id, type, coalesce(event, '') AS event, "
             "strftime(timestamp, '%Y-%m-%d %H:%M:%S') AS timestamp, start_reason "
             "FROM t ORDER BY resolved_user, timestamp").fetchall()
    header = ("resolved_user", "session_id", "type", "event", "timestamp", "start_reason")
    table = [header] + [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def _utc_duckdb():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    # argparse prints to sys.stdout/sys.stderr and raises SystemExit (usage errors, --help,
    # --version); send its text to the given streams and return its exit code, so that
    # main() called in-process honours stdout=/stderr= and returns 2 on an unknown flag.
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(stderr)
        return EXIT_USAGE
    try:
        return _run(args, stdout, stderr)
    except OptionError as exc:
        stderr.write(f"sessionize {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except DataError as exc:
        stderr.write(f"sessionize {args.command}: bad data: {exc}\n")
        return EXIT_DATA
    except OutputError as exc:
        stderr.write(f"sessionize {args.command}: cannot write: {exc}\n")
        return EXIT_DATA
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # a crash is a bug: say so, keep the traceback, exit 2
        import traceback

        traceback.print_exc(file=stderr)
        stderr.write(f"sessionize {args.command}: internal error: {exc!r}\n"
                     "This is a bug in sessionize; please report it with the traceback above.\n")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
