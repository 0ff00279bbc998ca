"""Cost of the optional session rules against the notebook's plain rule (issue 3).

Runs sessionize on one generated Parquet file with no rule and with every rule
the data supports (per-platform gaps, midnight in Europe/Berlin, campaign change,
start and end events, passive events, a 24 h cap), interleaved, several repeats,
each run in this process materialising all three tables. Prints medians and the
ratio. Run on purpose, not as a test:

    python bench/rules_overhead.py --events 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "src"))

import generate  # noqa: E402

import sessionize  # noqa: E402

ALL_RULES = {
    "gap_by": "platform", "gaps": {"web": "30m", "mobile": "5m", "server": "30m"},
    "midnight": "Europe/Berlin", "campaign": True, "start_events": ["Application Opened"],
    "end_events": ["Application Backgrounded"], "passive_events": ["identify"],
    "max_duration": "24h",
}


def once(path: str, options: dict) -> float:
    start = time.perf_counter()
    with sessionize.run(path, **options) as result:
        result.events.to_arrow()
        result.sessions.to_arrow()
        result.users.to_arrow()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = str(generate.events_file(args.events, args.seed, "parquet"))
    times: dict[str, list[float]] = {"plain": [], "all rules": []}
    print(f"{args.events:,} events from {Path(path).name}; cores {os.cpu_count()}, "
          f"load before {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeats):
        times["plain"].append(once(path, {}))
        times["all rules"].append(once(path, ALL_RULES))
    print("| rules | median s | runs (s) |\n|---|---:|---|")
    for name, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {runs} |")
    ratio = statistics.median(times["all rules"]) / statistics.median(times["plain"])
    print(f"\nall rules / plain = {ratio:.2f}x (target <= 1.5x); load after "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
