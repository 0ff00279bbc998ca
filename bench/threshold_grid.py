"""The threshold recommendation on 24 known visit structures, separated to overlapping.

For each structure (bench/visit_structures.py) and platform: the range of thresholds
that recovers the true visits exactly, the recommendation and its confidence, how far
inside the exact range it sits (decades, on the log scale), and the share of events
assigned to their true visit when the recommended rules (``analysis.rules()``, pasted
as they are into ``sessionize.run``) are applied, beside the best share any single
threshold of the usual values reaches on that platform.

    python bench/threshold_grid.py            # the table in docs/report.md
    python bench/threshold_grid.py --only sep-day over-5m
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from visit_structures import Structure, agreement, exact_range, generate, grid, sessions_at  # noqa: E402

import sessionize  # noqa: E402
from sessionize.analysis.thresholds import NICE_SECONDS  # noqa: E402
from sessionize.durations import short  # noqa: E402

PLATFORMS = ("web", "mobile")


def evaluate(s: Structure, seed: int = 0) -> list[dict]:
    """One row per platform present in the structure."""
    table, visit, platform = generate(s, seed)
    analysis = sessionize.thresholds(table)
    options = analysis.rules()
    with sessionize.run(table, **options) as result:
        events = result.events.to_arrow().select(["messageId", "resolved_user", "session_id"])
    row = np.array([int(m[1:]) for m in events.column("messageId").to_pylist()])
    order = np.argsort(row)
    users = np.array(events.column("resolved_user").to_pylist(), dtype=object)[order]
    ids = np.asarray(events.column("session_id").to_numpy())[order]
    session = np.unique(np.stack((np.unique(users, return_inverse=True)[1], ids)), axis=1,
                        return_inverse=True)[1].ravel()
    rows = []
    for p, name in enumerate(PLATFORMS):
        mask = platform == p
        if not mask.any():
            continue
        rec = analysis.recommendations[name]
        exact = exact_range(table, visit, mask)
        threshold = rec.threshold_seconds
        margin = None
        if exact and threshold:
            low, high = exact
            margin = (min(math.log10(threshold / max(low, 1e-3)), math.log10(high / threshold))
                      if low < threshold <= high else -1.0)
        best = max(agreement(visit[mask], sessions_at(table, np.full(len(visit), t))[mask])
                   for t in NICE_SECONDS)
        rows.append({
            "structure": s.name, "platform": name, "gaps": rec.gaps,
            "within": s.scaled(name)[0], "between": s.scaled(name)[1], "sigma": s.sigma,
            "noise": ", ".join(filter(None, (
                f"ping {short(s.ping)}" if s.ping else "",
                f"beat {short(s.heartbeat)}" if s.heartbeat else ""))) or "-",
            "exact": exact, "threshold": threshold, "confidence": rec.confidence,
            "overlap": rec.overlap, "margin": margin,
            "agreement": agreement(visit[mask], session[mask]), "best": best,
        })
    return rows


def fmt_range(exact) -> str:
    if exact is None:
        return "none"
    low, high = exact
    return f"{short(low)} – {short(high) if math.isfinite(high) else '∞'}"


def table(rows: list[dict]) -> str:
    head = ("| structure | platform | gaps | within / between (median, σ) | noise | "
            "exact range | recommended | confidence | overlap | inside by (decades) | "
            "agreement | best single threshold |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        rec = short(r["threshold"]) if r["threshold"] else "none"
        margin = "-" if r["margin"] is None else f"{r['margin']:.2f}"
        overlap = "-" if r["overlap"] is None else f"{r['overlap']:.1%}"
        lines.append(
            f"| {r['structure']} | {r['platform']} | {r['gaps']:,} | "
            f"{short(r['within'])} / {short(r['between'])}, {r['sigma']} | {r['noise']} | "
            f"{fmt_range(r['exact'])} | {rec} | {r['confidence']} | {overlap} | {margin} | "
            f"{r['agreement']:.1%} | {r['best']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="structure names to run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    structures = [s for s in grid() if not args.only or s.name in args.only]
    started = time.perf_counter()
    rows = [row for s in structures for row in evaluate(s, args.seed)]
    print(table(rows))
    print(f"\n{len(structures)} structures, {len(rows)} rows, "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
