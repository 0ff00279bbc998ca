"""What the report costs next to the plain run it is built on.

The issue's budget: building the report (threshold analysis + figures + HTML) on 10M
events costs at most 1.5x the plain sessionize run. Three commands are timed on the
same generated file, each in a fresh process, interleaved round-robin so load spikes
on a shared machine hit all alike; the median of the repeats is the headline:

``run``      ``sessionize.run(path)`` and materialising the three tables' counts
             (what a Python user pays before asking for anything);
``run+out``  ``sessionize run PATH --out DIR`` (the plain CLI run, writing Parquet);
``report``   ``sessionize report PATH -o report.html`` (run + analysis + page).

    python bench/report_overhead.py --events 1000000 --repeats 3
    python bench/report_overhead.py --events 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import generate

HERE = Path(__file__).resolve().parent
PYTHON_RUN = ("import sys, sessionize\n"
              "with sessionize.run(sys.argv[1]) as r:\n"
              "    len(r.events), len(r.sessions), len(r.users)\n")


def commands(path: Path, out: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "sessionize"]
    return {
        "run": [sys.executable, "-c", PYTHON_RUN, str(path)],
        "run+out": [*cli, "run", str(path), "--out", str(out / "tables"), "-q", "--no-progress"],
        "report": [*cli, "report", str(path), "-o", str(out / "report.html"), "-q",
                   "--no-progress"],
    }


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    path = generate.events_file(args.events, args.seed, "parquet")
    with tempfile.TemporaryDirectory(prefix="sessionize-bench-") as tmp:
        cmds = commands(path, Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timed(cmds[name]))
                print(f"  repeat {repeat + 1} {name:8} {times[name][-1]:7.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    load = os.getloadavg()[0]
    print(f"\n{args.events:,} events (Parquet), median of {args.repeats}, load {load:.1f}, "
          f"{os.cpu_count()} cores")
    print(f"{'command':10} {'median s':>9}  runs")
    for name, value in median.items():
        print(f"{name:10} {value:9.2f}  {', '.join(f'{v:.2f}' for v in times[name])}")
    print(f"report / run      = {median['report'] / median['run']:.2f}x")
    print(f"report / run+out  = {median['report'] / median['run+out']:.2f}x")


if __name__ == "__main__":
    main()
