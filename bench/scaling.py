"""How sessionize scales: events/s and peak RSS at 1M, 10M, 50M and 100M events.

Each size runs in fresh processes (``worker.py``), ``--repeats`` times, median reported.
Up to 10M events the input is one generated file (``generate.py``); above, it is a
directory of 10M-event files with consecutive seeds (42, 43, ...), so no single process
ever has to generate more than 10M events (generating 100M at once needs about 30 GB).
The same user ids recur in every file, so users in the bigger inputs have more events.

Tools: ``sessionize`` (``plan="auto"``: the columnar plan while three copies of the
input fit in half the memory, else the SQL plan; all three tables materialised as
Arrow) and ``sessionize_out_of_core`` (the SQL plan under ``memory_limit``, tables
written to Parquet as the CLI does; ``BENCH_MEMORY_LIMIT``, default 4GB).

    python bench/scaling.py --sizes 1000000,10000000,50000000,100000000 --repeats 3 \\
        --tools sessionize,sessionize_out_of_core
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import generate
from run import run_worker

CHUNK = 10_000_000


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000,50000000,100000000")
    parser.add_argument("--tools", default="sessionize")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tools = args.tools.split(",")
    print(f"cores {os.cpu_count()}, load before {os.getloadavg()[0]:.2f}, "
          f"BENCH_MEMORY_LIMIT={os.environ.get('BENCH_MEMORY_LIMIT', '4GB')}\n")
    print("| events | tool | median s | events/s | peak RSS MiB | runs |")
    print("|---:|---|---:|---:|---:|---|")
    failed = False
    for n in sizes:
        path = input_for(n, args.seed, args.data_dir)
        for tool in tools:
            runs = [run_worker(tool, path) for _ in range(args.repeats)]
            done = [r for r in runs if "seconds" in r]
            if not done:
                print(f"| {n:,} | {tool} | failed: {runs[0].get('error') or runs[0]} | | | |")
                failed = True
                continue
            median = statistics.median(r["seconds"] for r in done)
            rss = max(r["peak_rss_mib"] for r in done)
            each = ", ".join(f"{r['seconds']:.2f}" for r in done)
            print(f"| {n:,} | {tool} | {median:.2f} | {n / median:,.0f} | {rss:,.0f} | "
                  f"{each} |", flush=True)
    print(f"\nload after {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
