"""The command line: a thin layer over :func:`sessionize.run`.

Exit codes: 0 success, 1 bad data (unreadable input, invalid events), 2 bad
usage (unknown flag, bad option value) or an unexpected crash.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import IO

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2

RUN_EXAMPLES = """\
examples:
  sessionize run --sample --out out/               the notebook's six events
  sessionize run events.json --out out/            a JSON array, as in the notebook
  sessionize run 'segment-logs/**/*.gz' --out out/ --format csv
  sessionize run events.parquet --out out/ --gap 1h30m
  cat events.ndjson | sessionize run - --out out/  NDJSON on stdin
  sessionize run events.ndjson --out out/ --on-invalid quarantine

writes OUT/events.<fmt>, OUT/sessions.<fmt>, OUT/users.<fmt> (and OUT/quarantine.<fmt>
when rows were set aside); every file appears complete or not at all.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its wording
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="sessionize", description="Turn product-analytics events into sessions.")
    parser.add_argument("--version", action="version", version=f"sessionize {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser(
        "run", help="sessionize events and write events, sessions and users",
        description="Sessionize events: every event with its user and session, plus a "
                    "sessions table and a users table.",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="files, directories or globs (JSON array, NDJSON[.gz], Parquet, CSV); "
                          "'-' reads NDJSON from stdin")
    run.add_argument("--sample", action="store_true",
                     help="use the bundled sample (the notebook's six events) as input")
    run.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    run.add_argument("--format", default="parquet", choices=["parquet", "csv", "ndjson"],
                     help="output format (default: parquet)")
    run.add_argument("--gap", default="30m",
                     help="inactivity that ends a session, e.g. 30m, 1h30m, 90s (default: 30m)")
    run.add_argument("--on-invalid", default="raise", choices=["raise", "quarantine"],
                     help="rows with a bad timestamp or no user id: fail (default) or set them "
                          "aside in a quarantine file with a reason each")
    run.add_argument("--timestamp-unit", default="auto", choices=["auto", "s", "ms", "us"],
                     help="unit of numeric timestamps (default: auto, by magnitude)")
    columns = run.add_argument_group("column names (defaults follow the Segment spec)")
    for flag, default in [("user-id", "userId"), ("anonymous-id", "anonymousId"),
                          ("timestamp", "timestamp"), ("message-id", "messageId"),
                          ("event", "event"), ("type", "type")]:
        columns.add_argument(f"--{flag}", default=default, metavar="COL",
                             help=f"(default: {default})")
    engine = run.add_argument_group("engine")
    engine.add_argument("--database", metavar="FILE",
                        help="keep DuckDB's tables in this file instead of memory")
    engine.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit, e.g. 4GB")
    engine.add_argument("--threads", type=int, metavar="N", help="DuckDB threads")
    engine.add_argument("--temp-directory", metavar="DIR", help="where DuckDB spills")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show progress on stderr (default: when stderr is a terminal)")
    shown.add_argument("--no-progress", dest="progress", action="store_false")
    run.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    return parser


def _run(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    import sessionize
    from sessionize.progress import Progress

    if args.sample == bool(args.inputs):
        stderr.write("sessionize run: error: give INPUT files or --sample (not both)\n")
        return EXIT_USAGE
    source = sessionize.sample_path() if args.sample else args.inputs
    interactive = stderr.isatty()
    show = interactive if args.progress is None else args.progress
    progress = Progress(stderr, interactive=interactive) if show else None
    result = sessionize.run(
        source, gap=args.gap, on_invalid=args.on_invalid, timestamp_unit=args.timestamp_unit,
        user_id=args.user_id, anonymous_id=args.anonymous_id, timestamp=args.timestamp,
        message_id=args.message_id, event=args.event, type=args.type,
        database=args.database, memory_limit=args.memory_limit, threads=args.threads,
        temp_directory=args.temp_directory, progress=progress)
    with result:
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


def _timeline(result) -> str:
    """The notebook's "View User Timelines" table, as text."""
    rows = result.events.relation.query(
        "t", "SELECT resolved_user, session_id, type, coalesce(event, '') AS event, "
             "strftime(timestamp, '%Y-%m-%d %H:%M:%S') AS timestamp, start_reason "
             "FROM t ORDER BY resolved_user, timestamp").fetchall()
    header = ("resolved_user", "session_id", "type", "event", "timestamp", "start_reason")
    table = [header] + [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    from .errors import DataError, OptionError

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
