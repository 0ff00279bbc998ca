"""Time whole commands side by side: two checkouts' CLIs, or a CLI against a peer script.

Each ``--tool NAME=COMMAND`` is run as a fresh process (``{file}`` and ``{out}`` in the
command stand for the input and a fresh output directory), interleaved with the others
in the order of bench/run.py's Williams design, ``--repeats`` times; wall seconds and
the process's peak RSS are measured from outside (``os.wait4``), and the medians and
their ratios against the first tool are printed as Markdown.

    python bench/ab.py FILE --repeats 3 \\
        --tool "new=.venv/bin/sessionize run {file} --out {out}" \\
        --tool "old=../base/.venv/bin/sessionize run {file} --out {out}" \\
        --tool "polars=.venv/bin/python bench/ab.py --polars {file} {out}"

``--polars FILE OUT``, ``--pandas FILE OUT`` and ``--duckdb FILE OUT`` are the peers of
bench/peers.py (idiomatic polars, the notebook's pandas, idiomatic DuckDB SQL) writing
their three tables as Parquet (zstd), as the CLI does (DuckDB with ``COPY``):

    python bench/ab.py FILE --repeats 3 \\
        --tool "sessionize=.venv/bin/sessionize run {file} --out {out}" \\
        --tool "duckdb=.venv/bin/python bench/ab.py --duckdb {file} {out}" \\
        --tool "pandas=.venv/bin/python bench/ab.py --pandas {file} {out}"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as suite  # bench/run.py: the Williams order, the machine, the page cache


def polars_tables(path: str, out: str) -> None:
    import peers

    events, sessions, users = peers.idiomatic_polars(path)
    os.makedirs(out, exist_ok=True)
    for name, table in (("events", events), ("sessions", sessions), ("users", users)):
        table.write_parquet(os.path.join(out, f"{name}.parquet"), compression="zstd")


def pandas_tables(path: str, out: str) -> None:
    import peers

    events, sessions, users = peers.notebook_pandas(path)
    os.makedirs(out, exist_ok=True)
    for name, table in (("events", events), ("sessions", sessions), ("users", users)):
        table.to_parquet(os.path.join(out, f"{name}.parquet"), compression="zstd")


def duckdb_tables(path: str, out: str) -> None:
    import duckdb
    import peers

    quoted = "'" + str(path).replace("'", "''") + "'"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(peers.DUCKDB_EVENTS.format(source=f"read_parquet({quoted})",
                                           minutes=peers.THRESHOLD_MINUTES))
    con.execute(peers.DUCKDB_SESSIONS)
    os.makedirs(out, exist_ok=True)
    for name, query in (("events", "events"), ("sessions", "sessions"),
                        ("users", f"({peers.DUCKDB_USERS})")):
        target = os.path.join(out, f"{name}.parquet").replace("'", "''")
        con.execute(f"COPY {query} TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    con.close()


PEERS = {"--polars": polars_tables, "--pandas": pandas_tables, "--duckdb": duckdb_tables}


def run_once(command: str, path: Path) -> dict:
    out = tempfile.mkdtemp(prefix="sessionize-ab-")
    try:
        args = shlex.split(command.format(file=path, out=os.path.join(out, "tables")))
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        error = proc.stderr.read().decode().strip().splitlines()[-1:] if proc.returncode else []
        proc.stderr.close()
        return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
                "user": usage.ru_utime, "system": usage.ru_stime,
                **({"error": error[0] if error else f"exit {proc.returncode}"}
                   if proc.returncode else {})}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in PEERS:
        PEERS[argv[0]](argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--tool", action="append", required=True, metavar="NAME=COMMAND")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also save every run's record here")
    args = parser.parse_args(argv)
    tools = dict(spec.split("=", 1) for spec in args.tool)
    suite.warm_page_cache(args.file)
    load_before = os.getloadavg()
    runs = []
    for repeat in range(args.repeats):
        for name in suite.repeat_order(list(tools), repeat):
            record = {"tool": name, "repeat": repeat, **run_once(tools[name], args.file)}
            print(json.dumps(record), file=sys.stderr, flush=True)
            if "error" in record:
                print(f"{name}: {record['error']}", file=sys.stderr)
                return 1
            runs.append(record)
    info = suite.machine()
    print(f"{args.file.name}; {args.repeats} interleaved repeats, fresh process each; "
          f"{info['date']}; {info['cpu']}, {info['cores']} cores; load before "
          f"{suite.format_load(load_before)}, after {suite.format_load(os.getloadavg())}\n")
    first = statistics.median(r["seconds"] for r in runs if r["tool"] == next(iter(tools)))
    print(f"| tool | median s | min s | max s | user s | system s | peak RSS MiB | "
          f"vs {next(iter(tools))} |")
    print("|---|---|---|---|---|---|---|---|")
    for name in tools:
        mine = [r for r in runs if r["tool"] == name]
        median = statistics.median(r["seconds"] for r in mine)
        print(f"| {name} | {median:.2f} | {min(r['seconds'] for r in mine):.2f} | "
              f"{max(r['seconds'] for r in mine):.2f} | "
              f"{statistics.median(r['user'] for r in mine):.1f} | "
              f"{statistics.median(r['system'] for r in mine):.1f} | "
              f"{max(r['peak_rss_mib'] for r in mine):,.0f} | {median / first:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "tools": tools, "runs": runs},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
