"""One tool, one run, one fresh interpreter; the result is a single JSON line on stdout.

A fresh process per run is the only way to get an honest peak RSS per tool and to stop
one tool's imports, caches and allocator state from helping or hurting the next. The
clock covers read + compute + materialise of all three tables; imports are timed
separately, before it starts. Only the standard library is imported at module level so
the process holds nothing but the tool being measured.

    python bench/worker.py TOOL PATH [--summary OUT.parquet]
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.append(str(SRC))  # an installed sessionize wins; otherwise measure the checkout

import peers  # noqa: E402  (stdlib-only module; its heavy imports are inside the functions)


def run(tool: str, path: str, summary: str | None = None) -> dict:
    record = {"tool": tool}
    started = time.perf_counter()
    try:
        for module in peers.MODULES[tool]:
            importlib.import_module(module)
        module = sys.modules.get("sessionize")
        if tool.startswith("sessionize") and not callable(getattr(module, "run", None)):
            raise ImportError("sessionize has no run() yet")
    except ImportError as exc:
        return {**record, "unavailable": f"{type(exc).__name__}: {exc}"}
    record["import_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    try:
        events, sessions, users = peers.PEERS[tool](path)
    except Exception as exc:  # a failing tool is a result to report, not a crash
        return {**record, "error": f"{type(exc).__name__}: {exc}"}
    record["seconds"] = time.perf_counter() - started
    record["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["rows"] = {"events": len(events), "sessions": len(sessions), "users": len(users)}
    if tool.startswith("sessionize"):
        record["sessionize_file"] = getattr(sys.modules["sessionize"], "__file__", None)
    if summary:
        try:
            record["summary"] = write_summary(sessions, users, summary)
        except Exception as exc:  # e.g. a tool whose tables lack the documented columns
            record["error"] = f"summary: {type(exc).__name__}: {exc}"
    return record


def write_summary(sessions, users, out: str) -> dict:
    """Per-user session counts (from the users table) for the cross-tool ``--check``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sessions, users = _to_arrow(sessions), _to_arrow(users)
    per_user = users.select(["resolved_user", "session_count"]).cast(
        pa.schema([("resolved_user", pa.string()), ("session_count", pa.int64())])
    )
    pq.write_table(per_user.sort_by("resolved_user"), out)
    from_sessions = sessions.group_by("resolved_user").aggregate([([], "count_all")])
    return {
        "users_session_count_sum": pc.sum(per_user["session_count"]).as_py(),
        "sessions_event_count_sum": pc.sum(sessions["event_count"]).as_py(),
        "users_in_sessions_table": from_sessions.num_rows,
    }


def _to_arrow(table):
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table
    if hasattr(table, "to_arrow"):  # polars
        return table.to_arrow()
    return pa.Table.from_pandas(table, preserve_index=False)


def main(argv: list[str]) -> None:
    tool, path = argv[0], argv[1]
    summary = argv[argv.index("--summary") + 1] if "--summary" in argv else None
    sys.stdout.write(json.dumps(run(tool, path, summary)) + "\n")
    sys.stdout.flush()
    os._exit(0)  # freeing gigabytes of frames is not part of any tool's cost


if __name__ == "__main__":
    main(sys.argv[1:])
