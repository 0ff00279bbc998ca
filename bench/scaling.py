"""How sessionize scales past memory: events/s, peak RSS and wall time at 1M, 10M, 50M
and 100M events, the three Parquet tables written, beside DuckDB SQL and polars.

Every run is a fresh process, timed and measured (peak RSS, ``os.wait4``) from outside,
the tools interleaved per size; medians of ``--repeats``. Up to 10M events the input is
one generated file (``generate.py``); above, a directory of 10M-event files with
consecutive seeds (42, 43, ...), so no process ever generates more than 10M events. The
same user ids recur in every file, so users in the bigger inputs have more events.

Tools, each writing events, sessions and users as Parquet (zstd) under the same
``--memory-limit`` (default 4GB):

- ``sessionize``: ``sessionize run INPUT --memory-limit LIMIT --out DIR`` (``plan="auto"``
  picks the bucketed plan under a memory limit: docs/guide.md, section 8);
- ``sessionize_no_limit``: the same without a memory limit (the in-memory columnar plan
  while the input fits in half the machine's memory);
- ``duckdb_sql``: idiomatic DuckDB SQL (``LAG`` and a running ``SUM`` over per-user
  windows, ``GROUP BY``; bench/peers.py's queries), ``memory_limit`` set, tables
  ``COPY``'d to Parquet;
- ``polars_streaming``: polars' lazy API with the streaming engine, the same
  expressions as bench/peers.py's ``idiomatic_polars``, each table ``sink_parquet``'d
  (polars has no memory limit: its peak RSS says what it took).

    python bench/scaling.py --sizes 1000000,10000000,50000000,100000000 --repeats 1 \\
        --data-dir /tmp/szbench --tools sessionize,duckdb_sql,polars_streaming
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import generate

CHUNK = 10_000_000
HERE = Path(__file__).resolve().parent
SESSIONIZE = str(Path(sys.executable).with_name("sessionize"))


def input_for(n: int, seed: int, data_dir: Path) -> Path:
    """One file up to CHUNK events, else a directory of CHUNK-sized files."""
    if n <= CHUNK:
        return generate.events_file(n, seed, "parquet", data_dir)
    if n % CHUNK:
        raise SystemExit(f"sizes above {CHUNK:,} must be multiples of it (got {n:,})")
    folder = data_dir / f"scale-v{generate.GENERATOR_VERSION}-n{n}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n // CHUNK):
        part = generate.events_file(CHUNK, seed + i, "parquet", data_dir)
        link = folder / part.name
        if not link.exists():
            os.symlink(part.resolve(), link)
    return folder


def _parquet_glob(path: Path) -> str:
    return str(path / "*.parquet") if path.is_dir() else str(path)


def duckdb_sql(path: Path, out: Path, memory_limit: str) -> None:
    """The DuckDB SQL peer: bench/peers.py's window queries under ``memory_limit``,
    spilling to a temporary directory, the three tables COPY'd to Parquet."""
    import duckdb
    import peers

    out.mkdir(parents=True, exist_ok=True)
    spill = tempfile.mkdtemp(prefix="scaling-duckdb-")
    try:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        source = "read_parquet('" + _parquet_glob(path).replace("'", "''") + "')"
        con.execute(peers.DUCKDB_EVENTS.format(source=source, minutes=peers.THRESHOLD_MINUTES))
        con.execute(peers.DUCKDB_SESSIONS)
        for name, query in (("events", "SELECT * FROM events"),
                            ("sessions", "SELECT * FROM sessions"), ("users", peers.DUCKDB_USERS)):
            con.execute(f"COPY ({query}) TO '{out / name}.parquet' "
                        "(FORMAT parquet, COMPRESSION zstd)")
        con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def polars_streaming(path: Path, out: Path) -> None:
    """The polars peer: bench/peers.py's expressions on a lazy scan, run by the streaming
    engine, each table sunk to Parquet (sessions and users read back the table before)."""
    import peers
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    gap = pl.col("time_since_last_event")
    events = (
        pl.scan_parquet(_parquet_glob(path))
        .sort("timestamp", "messageId")
        .with_columns(resolved_user=pl.coalesce("userId", "anonymousId"))
        .with_columns(prev_timestamp=pl.col("timestamp").shift(1).over("resolved_user"))
        .with_columns(time_since_last_event=pl.col("timestamp") - pl.col("prev_timestamp"))
        .with_columns(new_session=gap.is_null()
                      | (gap > pl.duration(minutes=peers.THRESHOLD_MINUTES)))
        .with_columns(session_id=pl.col("new_session").cum_sum().over("resolved_user"))
    )
    events.sink_parquet(out / "events.parquet", compression="zstd", engine="streaming")
    label = pl.coalesce("event", "type")
    sessions = (
        pl.scan_parquet(out / "events.parquet")
        .group_by("resolved_user", "session_id")
        .agg(session_start=pl.col("timestamp").min(), session_end=pl.col("timestamp").max(),
             event_count=pl.len(), first_event=label.first(), last_event=label.last())
        .with_columns(duration_seconds=(pl.col("session_end") - pl.col("session_start"))
                      .dt.total_seconds(fractional=True))
    )
    sessions.sink_parquet(out / "sessions.parquet", compression="zstd", engine="streaming")
    (pl.scan_parquet(out / "sessions.parquet").group_by("resolved_user")
     .agg(session_count=pl.len(), event_count=pl.col("event_count").sum(),
          first_seen=pl.col("session_start").min(), last_seen=pl.col("session_end").max())
     .sink_parquet(out / "users.parquet", compression="zstd", engine="streaming"))


def command(tool: str, path: Path, out: Path, memory_limit: str) -> list[str]:
    if tool == "sessionize":
        return [SESSIONIZE, "run", str(path), "--memory-limit", memory_limit, "--out", str(out),
                "-q"]
    if tool == "sessionize_no_limit":  # no memory limit: the columnar plan while it fits
        return [SESSIONIZE, "run", str(path), "--out", str(out), "-q"]
    if tool in ("duckdb_sql", "polars_streaming"):
        return [sys.executable, __file__, f"--{tool.replace('_', '-')}", str(path), str(out),
                "--memory-limit", memory_limit]
    raise SystemExit(f"unknown tool {tool!r} (sessionize, sessionize_no_limit, duckdb_sql, "
                     "polars_streaming)")


def run_once(tool: str, path: Path, memory_limit: str, timeout: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="scaling-", dir=os.environ.get("BENCH_OUT_DIR")))
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(command(tool, path, out / "tables", memory_limit),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.stderr.close()
                return {"error": f"stopped at {timeout:.0f} s",
                        "peak_rss_mib": usage.ru_maxrss / 1024}
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode().strip().splitlines()
        proc.stderr.close()
        record = {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime}
        if code:
            record["error"] = (err[-1] if err else f"exit {code}")[:120]
        return record
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000,50000000,100000000")
    parser.add_argument("--tools", default="sessionize,duckdb_sql,polars_streaming")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="stop a run after this many seconds (reported as stopped)")
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    parser.add_argument("--duckdb-sql", nargs=2, metavar=("INPUT", "OUT"), type=Path,
                        help=argparse.SUPPRESS)
    parser.add_argument("--polars-streaming", nargs=2, metavar=("INPUT", "OUT"), type=Path,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duckdb_sql:
        duckdb_sql(*args.duckdb_sql, args.memory_limit)
        return 0
    if args.polars_streaming:
        polars_streaming(*args.polars_streaming)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    tools = args.tools.split(",")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cores {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}, memory limit {args.memory_limit}\n")
    print("| events | tool | median s | events/s | peak RSS MiB | vs sessionize | load | runs |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    failed = False
    for n in sizes:
        path = input_for(n, args.seed, args.data_dir)
        runs: dict[str, list[dict]] = {tool: [] for tool in tools}
        loads: dict[str, list[float]] = {tool: [] for tool in tools}
        for repeat in range(args.repeats):
            for tool in tools[repeat % len(tools):] + tools[:repeat % len(tools)]:
                loads[tool].append(os.getloadavg()[0])
                runs[tool].append(run_once(tool, path, args.memory_limit, args.timeout))
        base = None
        for tool in tools:
            done = [r for r in runs[tool] if "error" not in r]
            rss = max(r["peak_rss_mib"] for r in runs[tool])
            load = statistics.median(loads[tool])
            if not done:
                print(f"| {n:,} | {tool} | {runs[tool][0]['error']} | | {rss:,.0f} | | "
                      f"{load:.1f} | |", flush=True)
                failed = failed or tool == "sessionize"
                continue
            median = statistics.median(r["seconds"] for r in done)
            base = median if tool == "sessionize" else base
            ratio = f"{median / base:.2f}x" if base else ""
            each = ", ".join(f"{r['seconds']:.1f}" for r in done)
            print(f"| {n:,} | {tool} | {median:.1f} | {n / median:,.0f} | {rss:,.0f} | {ratio} | "
                  f"{load:.1f} | {each} |", flush=True)
    print(f"\nload after {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
