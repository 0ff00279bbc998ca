"""Local throughput of ``engine="spark"`` against the embedded DuckDB engine.

Not a test: run it on purpose. Both engines sessionize the same cached Parquet file
(bench/generate.py) and write all three tables as Parquet, interleaved, ``--repeats``
times; the medians are printed with events/s and the ratio. Spark runs on one
SparkSession (``--master``, default ``local[2]``) started once before timing, as a
cluster's session would be; its start-up time is printed separately.

    .venv/bin/python bench/spark_throughput.py --events 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import events_file  # noqa: E402

import sessionize  # noqa: E402


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

    path = str(events_file(args.events, args.seed, "parquet"))
    started = time.perf_counter()
    from sessionize.engines.spark import spark_session

    spark = spark_session(args.master)
    spark.range(1).count()
    startup = time.perf_counter() - started
    out = tempfile.mkdtemp(prefix="sessionize-bench-")

    def duckdb_run() -> None:
        with sessionize.run(path) as result:
            result.write(os.path.join(out, "duckdb"))

    def spark_run() -> None:
        with sessionize.run(path, engine="spark", spark=spark) as result:
            result.write(os.path.join(out, "spark"))

    times: dict[str, list[float]] = {"duckdb": [], "spark": []}
    try:
        for _ in range(args.repeats):
            times["duckdb"].append(timed(duckdb_run))
            times["spark"].append(timed(spark_run))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        spark.stop()
    load = os.getloadavg()
    print(f"{args.events:,} events from {path}; {os.cpu_count()} cores, load "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; Spark {args.master}, session start "
          f"{startup:.1f} s (not timed below)")
    print(f"{'engine':<8} {'median s':>9} {'events/s':>12} {'runs':>24}")
    medians = {}
    for engine, runs in times.items():
        medians[engine] = statistics.median(runs)
        print(f"{engine:<8} {medians[engine]:>9.2f} {args.events / medians[engine]:>12,.0f} "
              f"{', '.join(f'{t:.2f}' for t in runs):>24}")
    print(f"spark / duckdb: {medians['spark'] / medians['duckdb']:.1f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
