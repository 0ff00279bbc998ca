"""Where the floor lies: the three steps no design for this problem avoids, timed alone.

Every sessionizer of a Parquet file must (1) read the events' columns (the events table
carries them all), (2) tell users apart (here: the kernel's encoding of the resolved
user ids to integers) and (3) bring each user's events together in time order (here: the
kernel's sort by time, then stably by user, as a run does it). This script times each
step alone, each in a fresh process whose clock covers only that step (its inputs are
prepared before the clock starts), interleaved with full
runs of the idiomatic polars peer and of sessionize, and prints median seconds.

The sum of the three steps is a lower bound for any run that uses them, before the scan,
the sessions and users tables and the new columns' memory; compare it with half of
polars' time to judge a "2x polars" target.

    python bench/floor.py [--events 10000000] [--seed 42] [--repeats 5] [--json FILE]

The input is the suite's cached Parquet file (``bench/generate.py`` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import run as suite  # bench/run.py: the worker, the machine description, the data path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"

#: One step, timed alone in a fresh process: prints one JSON line.
CHILD = """
import json, resource, sys, time
sys.path.append(sys.argv[3])
step, path = sys.argv[1], sys.argv[2]

def clock(function):
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    function()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"step": step, "seconds": seconds,
                      "system": after.ru_stime - before.ru_stime,
                      "peak_rss_mib": after.ru_maxrss / 1024}))

if step == "read_polars":
    import polars as pl
    clock(lambda: pl.read_parquet(path))
    raise SystemExit
import duckdb
import numpy as np
con = duckdb.connect()
if step == "read_duckdb":
    clock(lambda: con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table())
    raise SystemExit
from sessionize.columnar import kernel
keys = con.sql(f"SELECT coalesce(userId, anonymousId) AS u, epoch_us(timestamp) AS t, "
               f"messageId AS m FROM read_parquet('{path}')").to_arrow_table()
if step == "encode_users":
    clock(lambda: kernel._encode_users(keys.column("u")))
    raise SystemExit
codes, names = kernel._encode_users(keys.column("u"))
ts = kernel.numpy(keys.column("t"))
msg = keys.column("m")
assert step == "sort_by_user", step


def sort():  # the (user, time) order as a run sorts it: by time, then stably by user
    by_time, _ = kernel._time_order(ts, codes, msg, None)
    return by_time[kernel._by_code(codes[by_time], len(names))]


clock(sort)
"""

STEPS = ("read_duckdb", "encode_users", "sort_by_user", "read_polars")
#: Full runs in the same interleaved rounds (bench/peers.py tools).
TOOLS = ("idiomatic_polars", "sessionize_unordered")


def run_step(step: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, step, str(path), str(SRC)],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"step": step, "error": f"exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=BENCH / "data")
    parser.add_argument("--json", type=Path, help="write every run's record here")
    args = parser.parse_args(argv)

    from generate import events_file

    path = events_file(args.events, args.seed, "parquet", args.data_dir)
    suite.warm_page_cache(path)
    load_before = os.getloadavg()
    names = list(STEPS) + list(TOOLS)
    runs = []
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            record = (run_step(name, path) if name in STEPS
                      else suite.run_worker(name, path))
            runs.append({**record, "name": name, "repeat": repeat})
            if "error" in record or "unavailable" in record:
                print(f"{name}: {record.get('error') or record.get('unavailable')}",
                      file=sys.stderr)
                return 1

    def median(name: str, key: str = "seconds") -> float:
        return statistics.median(r[key] for r in runs if r["name"] == name)

    info = suite.machine()
    print(f"{args.events:,} events, {path.name}; {args.repeats} interleaved repeats, fresh "
          f"process each; {info['date']}; {info['cpu']}, {info['cores']} cores; load "
          f"before {suite.format_load(load_before)}, "
          f"after {suite.format_load(os.getloadavg())}")
    print(f"{'':24} {'median s':>9} {'min s':>7} {'max s':>7} {'system s':>9} {'peak MiB':>9}")
    for name in names:
        seconds = [r["seconds"] for r in runs if r["name"] == name]
        system = (f"{median(name, 'system'):9.2f}" if name in STEPS else f"{'':>9}")
        peak = max(r["peak_rss_mib"] for r in runs if r["name"] == name)
        print(f"{name:24} {statistics.median(seconds):9.2f} {min(seconds):7.2f} "
              f"{max(seconds):7.2f} {system} {peak:9,.0f}")
    floor = sum(median(step) for step in ("read_duckdb", "encode_users", "sort_by_user"))
    half = median("idiomatic_polars") / 2
    print(f"read + encode + sort (a lower bound before the scan and the tables): "
          f"{floor:.2f} s; half of idiomatic polars: {half:.2f} s -> a 2x-polars run "
          + ("has no time left for the rest" if floor >= half
             else f"has {half - floor:.2f} s left for the scan, the tables and their memory"))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
