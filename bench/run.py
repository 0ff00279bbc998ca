"""Benchmark sessionize against its peers on one generated file, and print a Markdown report.

Numbers on a shared 2-core machine are noisy, so the runner is built to keep the
comparison fair rather than the numbers pretty: every run is a fresh process (own
imports, own peak RSS), tools are interleaved, each repeat in its own order (a Williams
design), so load spikes and the previous run's freed memory hit all of them alike, the
input is pre-read into the page cache, the median is the headline, and the load average
before and after is printed next to the table.
``--check`` first proves the tools produce the same events, sessions, users and
per-user session counts, so the timings compare like with like.

    python bench/run.py --events 1000000 --format parquet --repeats 5 --check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import generate
import peers

WORKER = Path(__file__).resolve().parent / "worker.py"
LIBRARIES = ("sessionize", "duckdb", "pandas", "polars", "pyarrow", "numpy", "sqlglot")


def run_worker(tool: str, path: Path, summary: Path | None = None) -> dict:
    command = [sys.executable, str(WORKER), tool, str(path)]
    if summary:
        command += ["--summary", str(summary)]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"tool": tool, "error": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def repeat_order(tools: list[str], repeat: int) -> list[str]:
    """The tools' order in repeat ``repeat``: row ``repeat`` of a Williams design (rows
    that shift 0, 1, n-1, 2, n-2, ... by the row number; for an odd number of tools
    followed by the same rows reversed). Every tool starts one repeat in n, and over n
    repeats (2n for an odd n) every tool runs right after every other equally often. A
    plain rotation kept every tool's neighbours, so one tool always ran right after the
    same peer, and on this VM the memory a large process has just freed is dear to
    touch again (BENCHMARKS.md, 2026-12-06)."""
    n = len(tools)
    if not n:
        return []
    base, low, high = [0], 1, n - 1
    while len(base) < n:
        base.append(low)
        low += 1
        if len(base) < n:
            base.append(high)
            high -= 1
    rows = [[(b + r) % n for b in base] for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [tools[i] for i in rows[repeat % len(rows)]]


def benchmark(tools: list[str], path: Path, repeats: int) -> list[dict]:
    runs, active = [], list(tools)
    for repeat in range(repeats):
        for tool in repeat_order(active, repeat):
            record = run_worker(tool, path)
            runs.append({**record, "repeat": repeat})
        active = [t for t in active if not _failed(runs, t)]
    return runs


def check(tools: list[str], path: Path) -> tuple[list[dict], bool]:
    """Run each tool once and compare counts and per-user session counts across tools."""
    import pyarrow.parquet as pq

    rows, reference, ok = [], None, True
    with tempfile.TemporaryDirectory() as tmp:
        for tool in tools:
            out = Path(tmp) / f"{tool}.parquet"
            record = run_worker(tool, path, out)
            if "seconds" not in record or "error" in record:
                rows.append({"tool": tool, "verdict": _status(record)})
                ok = ok and "unavailable" in record
                continue
            counts = record["rows"]
            summary = record["summary"]
            problems = []
            if summary["users_session_count_sum"] != counts["sessions"]:
                problems.append("users.session_count does not sum to the sessions")
            if summary["sessions_event_count_sum"] != counts["events"]:
                problems.append("sessions.event_count does not sum to the events")
            if summary["users_in_sessions_table"] != counts["users"]:
                problems.append("sessions and users tables disagree on the users")
            per_user = pq.read_table(out)
            if reference is None:
                reference = (tool, counts, per_user)
            else:
                ref_tool, ref_counts, ref_per_user = reference
                if counts != ref_counts:
                    problems.append(f"counts differ from {ref_tool}: {ref_counts}")
                if not per_user.equals(ref_per_user):
                    problems.append(f"per-user session counts differ from {ref_tool}")
            ok = ok and not problems
            verdict = "; ".join(problems) or (
                "reference" if reference[0] == tool else f"agrees with {reference[0]}"
            )
            rows.append({"tool": tool, **counts, "verdict": verdict})
    return rows, ok


def _failed(runs: list[dict], tool: str) -> bool:
    return any(r["tool"] == tool and ("error" in r or "unavailable" in r) for r in runs)


def _status(record: dict) -> str:
    if "unavailable" in record:
        return f"unavailable ({record['unavailable']})"
    return f"error ({record.get('error')})"


def summarise(tools: list[str], runs: list[dict], n_events: int) -> list[dict]:
    rows = []
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        ok = [r for r in mine if "seconds" in r and "error" not in r]
        if not ok:
            rows.append({"tool": tool, "status": _status(mine[-1]) if mine else "not run"})
            continue
        seconds = [r["seconds"] for r in ok]
        rows.append(
            {
                "tool": tool,
                "runs": len(ok),
                "median": statistics.median(seconds),
                "min": min(seconds),
                "max": max(seconds),
                "events_per_second": n_events / statistics.median(seconds),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
                "import_seconds": statistics.median(r["import_seconds"] for r in ok),
                "status": "" if len(ok) == len(mine) else _status(mine[-1]),
            }
        )
    for base_tool, key in (("sessionize", "vs_sessionize"),
                           ("sessionize_unordered", "vs_unordered")):
        base = next((r for r in rows if r["tool"] == base_tool and "median" in r), None)
        for row in rows:
            if "median" in row and base:
                row[key] = row["median"] / base["median"]
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The summary as Markdown; "vs unordered" (time over sessionize_unordered's) only
    when that tool ran."""
    unordered = any("vs_unordered" in row for row in rows)
    extra = " vs unordered |" if unordered else ""
    lines = [
        "| tool | median s | min s | max s | events/s | peak RSS MiB | import s | vs sessionize |"
        + extra,
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if unordered else ""),
    ]
    for row in rows:
        if "median" not in row:
            lines.append(f"| {row['tool']} | {row['status']} | | | | | | |"
                         + (" |" if unordered else ""))
            continue
        ratios = [f"{row[key]:.2f}x" if key in row else "n/a"
                  for key in ("vs_sessionize", "vs_unordered")[:2 if unordered else 1]]
        lines.append(
            f"| {row['tool']} | {row['median']:.2f} | {row['min']:.2f} | {row['max']:.2f} "
            f"| {row['events_per_second']:,.0f} | {row['peak_rss_mib']:,.0f} "
            f"| {row['import_seconds']:.2f} | {' | '.join(ratios)} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed (checkout)" if name == "sessionize" else "missing"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def memory_state(meminfo: str | None = None) -> dict:
    """Free memory and page cache now, in GiB (from /proc/meminfo; empty where it is
    missing). On this VM a tool's first touch of memory costs more when the RAM is full
    of page cache (every allocation first reclaims it), so the report prints both."""
    fields = {}
    for line in (_read("/proc/meminfo") if meminfo is None else meminfo).splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value:
            fields[name] = int(value[0])
    if "MemFree" not in fields:
        return {}
    cache = fields.get("Cached", 0) + fields.get("Buffers", 0)
    return {"free_gib": round(fields["MemFree"] / 2**20, 1),
            "page_cache_gib": round(cache / 2**20, 1)}


def format_memory(state: dict) -> str:
    if not state:
        return "unknown"
    return f"{state['free_gib']} GiB free, {state['page_cache_gib']} GiB page cache"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=generate.FORMATS, default="parquet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tools",
        default=",".join(peers.PEERS),
        help=f"comma-separated, from: {', '.join(peers.PEERS)}",
    )
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    parser.add_argument(
        "--check",
        action="store_true",
        help="first verify the tools agree on events, sessions, users",
    )
    parser.add_argument("--json", type=Path, help="also save the raw timings here")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(peers.PEERS))
    if unknown:
        parser.error(f"unknown tool(s) {unknown}; choose from {list(peers.PEERS)}")

    path = generate.events_file(args.events, args.seed, args.format, args.data_dir)
    warm_page_cache(path)
    info = machine()
    load_before = os.getloadavg()
    memory_before = memory_state()
    check_rows, check_ok = check(tools, path) if args.check else ([], True)
    runs = benchmark(tools, path, args.repeats)
    load_after = os.getloadavg()
    memory_after = memory_state()
    rows = summarise(tools, runs, args.events)

    print(f"## {args.events:,} events, {args.format}, {args.repeats} repeats\n")
    print(f"- date: {info['date']}")
    print(
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['memory_gib']} GiB RAM, {info['platform']}"
    )
    print(f"- load average (1/5/15 min) before: {format_load(load_before)}, "
          f"after: {format_load(load_after)}")
    print(f"- memory before: {format_memory(memory_before)}; after: "
          f"{format_memory(memory_after)}")
    print(
        f"- Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    print(f"- input: `{path.name}` ({path.stat().st_size / 2**20:,.0f} MiB), seed {args.seed}")
    print(
        "- time: median of read + compute + materialise (events, sessions, users), each run "
        "in a fresh process; imports excluded (import s column); peak RSS is the max over "
        "runs of the process's ru_maxrss, imports included\n"
    )
    if args.check:
        print("Check (fresh process per tool; per-user session counts from the users table):\n")
        print("| tool | events | sessions | users | verdict |\n|---|---:|---:|---:|---|")
        for row in check_rows:
            print(
                f"| {row['tool']} | {row.get('events', '')} | {row.get('sessions', '')} "
                f"| {row.get('users', '')} | {row['verdict']} |"
            )
        print()
    print(markdown_table(rows))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "events": args.events,
                    "seed": args.seed,
                    "format": args.format,
                    "repeats": args.repeats,
                    "file": str(path),
                    "machine": info,
                    "load_before": load_before,
                    "load_after": load_after,
                    "memory_before": memory_before,
                    "memory_after": memory_after,
                    "check": check_rows,
                    "summary": rows,
                    "runs": runs,
                },
                indent=2,
            )
        )
    return 0 if check_ok else 1


def format_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
