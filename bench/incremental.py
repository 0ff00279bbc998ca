"""Incremental runs against full runs (issue 25): a batch into a state of N events.

For each state size N (bench/generate.py's events, cached), a state is built once with
``sessionize run EVENTS --state STATE`` (kept beside the events, reused by later runs).
A batch of ``--batch`` new events is drawn from the state's own users (Zipf, like the
events): ``--late`` of them late by up to 3 days (before their user's last event), the
rest after each user's last event, every one with a new messageId. Each measured batch
run starts from a fresh copy of the state (the copy is not timed). Full runs of the N
events (``sessionize run EVENTS --out DIR``) and batch runs (``sessionize run BATCH
--state COPY``) are interleaved, ``--repeats`` times; wall seconds and the process's
peak RSS are measured from outside (``os.wait4``), and the medians are printed as
Markdown.

    python bench/incremental.py --sizes 1000000 10000000 --batch 100000 --repeats 3
    python bench/incremental.py --sizes 1000000 --full-for 1000000 --identity stitch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import generate
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SESSIONIZE = str(Path(sys.executable).with_name("sessionize"))
DAY_US = 86_400_000_000


def timed(args: list[str]) -> dict:
    """Wall seconds and peak RSS of one command, run as a fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{' '.join(args)} failed ({code}):\n{err}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
            "line": next((line for line in out.splitlines() if line.startswith("run ")), "")}


def make_batch(events: Path, size: int, late_share: float, seed: int, path: Path) -> Path:
    """``size`` new events of the state's users (drawn like the events: by activity)."""
    if path.exists():
        return path
    table = pq.read_table(events)
    rng = np.random.default_rng(seed)
    picked = table.take(pa.array(np.sort(rng.choice(table.num_rows, size, replace=False))))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("picked", picked)
    con.register("events", table.select(["userId", "anonymousId", "timestamp"]))
    late = rng.random(size) < late_share
    # late: up to 3 days before the user's last event; new: up to a day after it
    offsets = np.where(late, -rng.integers(1, 3 * DAY_US, size),
                       rng.integers(1, DAY_US, size))
    con.register("offsets", pa.table({"i": np.arange(size), "offset_us": offsets}))
    batch = con.sql("""
        WITH last AS (SELECT coalesce(userId, anonymousId) AS u, max(timestamp) AS last_seen
                      FROM events GROUP BY 1),
        p AS (SELECT *, ROW_NUMBER() OVER () - 1 AS i FROM picked)
        SELECT 'bench-new-' || CAST(p.i AS VARCHAR) AS messageId, p.type, p.event, p.userId,
            p.anonymousId,
            last.last_seen + to_microseconds(o.offset_us) AS timestamp, p.context
        FROM p JOIN last ON last.u = coalesce(p.userId, p.anonymousId)
        JOIN offsets AS o ON o.i = p.i
        ORDER BY timestamp""").to_arrow_table()
    pq.write_table(batch, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--late", type=float, default=0.10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-for", type=int, nargs="*", default=[10_000_000],
                        help="state sizes whose full run is measured beside the batch")
    parser.add_argument("--data", type=Path, default=Path("/tmp/szbench"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--identity", default="event",
                        help="identity policy of every run (event, stitch, first, graph)")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sz-incremental-bench-", dir=args.data))
    rows, records = [], []
    try:
        for n in args.sizes:
            events = generate.events_file(n, args.seed, "parquet", args.data)
            batch = make_batch(events, args.batch, args.late, args.seed + 1,
                               args.data / f"batch-n{n}-b{args.batch}-s{args.seed + 1}.parquet")
            # the state is built once per (n, seed) and kept beside the events
            suffix = "" if args.identity == "event" else f"-{args.identity}"
            state = args.data / f"state-v1-n{n}-s{args.seed}{suffix}.duckdb"
            rules = ["--identity", args.identity]
            build = {"seconds": float("nan"), "peak_rss_mib": float("nan")}
            if not state.exists():
                building = state.with_suffix(".building")
                building.unlink(missing_ok=True)
                build = timed([SESSIONIZE, "run", str(events), "--state", str(building),
                               *rules])
                building.rename(state)
            print(f"state of {n:,} events: built in {build['seconds']:.1f} s "
                  f"({build['peak_rss_mib']:.0f} MiB); {state.stat().st_size / 2**20:.0f} MiB",
                  file=sys.stderr)
            batch_runs, full_runs = [], []
            for repeat in range(args.repeats):
                copy = work / "copy.duckdb"
                shutil.copyfile(state, copy)
                order = ["batch", "full"] if repeat % 2 == 0 else ["full", "batch"]
                for what in order:
                    if what == "batch":
                        result = timed([SESSIONIZE, "run", str(batch), "--state", str(copy),
                                        *rules])
                        batch_runs.append(result)
                    elif n in args.full_for:
                        out = work / "full-out"
                        result = timed([SESSIONIZE, "run", str(events), "--out", str(out), *rules])
                        shutil.rmtree(out, ignore_errors=True)
                        full_runs.append(result)
                    else:
                        continue
                    records.append({"n": n, "what": what, **result})
                    print(f"  {n:,} {what}: {result['seconds']:.2f} s, "
                          f"{result['peak_rss_mib']:.0f} MiB {result['line']}", file=sys.stderr)
                copy.unlink()
            median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
            row = {"n": n, "build_s": build["seconds"],
                   "batch_s": median(batch_runs, "seconds"),
                   "batch_rss": median(batch_runs, "peak_rss_mib"),
                   "line": batch_runs[-1]["line"]}
            if full_runs:
                row["full_s"] = median(full_runs, "seconds")
                row["full_rss"] = median(full_runs, "peak_rss_mib")
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| events in the state | state built (s) | batch of {args.batch:,} (s) | "
          "batch peak RSS (MiB) | full run (s) | batch / full |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        full = (f"{r['full_s']:.2f} | {r['batch_s'] / r['full_s']:.1%}" if "full_s" in r
                else "- | -")
        print(f"| {r['n']:,} | {r['build_s']:.1f} | {r['batch_s']:.2f} | {r['batch_rss']:.0f} "
              f"| {full} |")
    for r in rows:
        print(f"\n{r['n']:,}: {r['line']}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
