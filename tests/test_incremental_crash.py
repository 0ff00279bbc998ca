"""Crash safety of incremental runs: real ``sessionize run --state`` processes killed with
SIGKILL at random moments leave the state exactly as before the run or as after it, and
the next run proceeds (docs/incremental.md)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SESSIONIZE = str(Path(sys.executable).with_name("sessionize"))
BASE_US = 1_704_067_200_000_000
TABLES = ("events", "sessions", "users", "quarantine", "changes", "_sz_raw", "_sz_meta")


def events(rnd: random.Random, n: int, prefix: str, start_us: int, users: int = 40) -> pa.Table:
    times = sorted(start_us + rnd.randrange(0, 3 * 86_400_000_000) for _ in range(n))
    return pa.table({
        "messageId": [f"{prefix}{i}" for i in range(n)],
        "userId": [f"u{rnd.randrange(users)}" if rnd.random() < 0.9 else None
                   for _ in range(n)],
        "anonymousId": [f"a{rnd.randrange(users)}" for _ in range(n)],
        "event": [rnd.choice(["Page", "Click", None]) for _ in range(n)],
        "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
    })


def snapshot(path: Path) -> dict | None:
    """Every table of the state, sorted; None for no state at all."""
    if not path.exists():
        return None
    con = duckdb.connect(str(path))
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if not names:
            return None
        out = {name: sorted(map(repr, con.execute(f"SELECT * FROM {name}").fetchall()))
               for name in TABLES if name in names}
        out["runs"] = sorted(con.execute(
            "SELECT * EXCLUDE (finished_at, seconds) FROM runs").fetchall())
        out["names"] = sorted(names)
        return out
    finally:
        con.close()


def data(tables: dict | None) -> dict | None:
    """The tables a run makes, without the run log (a run after a finished one logs
    itself and reports no changes)."""
    return None if tables is None else {
        k: v for k, v in tables.items() if k in ("events", "sessions", "users", "quarantine",
                                                 "_sz_raw")}


def sessionize_run(batch: Path, state: Path) -> subprocess.Popen:
    return subprocess.Popen([SESSIONIZE, "run", str(batch), "--state", str(state), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(batch: Path, state: Path) -> None:
    proc = sessionize_run(batch, state)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_killed_run_leaves_the_state_before_or_after(tmp_path, seed):
    rnd = random.Random(seed)
    first = tmp_path / "first.parquet"
    batch = tmp_path / "batch.parquet"
    pq.write_table(events(rnd, 5_000, "old-", BASE_US), first)
    # new events, late ones and re-deliveries of the first batch
    pq.write_table(pa.concat_tables([
        events(rnd, 3_000, "new-", BASE_US + 2 * 86_400_000_000),
        pq.read_table(first).slice(0, 500)]), batch)
    before_path = tmp_path / "before.duckdb"
    finish(first, before_path)
    after_path = tmp_path / "after.duckdb"
    shutil.copyfile(before_path, after_path)
    started = time.perf_counter()
    finish(batch, after_path)
    whole = time.perf_counter() - started
    before, after = snapshot(before_path), snapshot(after_path)
    assert before != after
    outcomes = {"before": 0, "after": 0}
    for trial in range(int(os.environ.get("SESSIONIZE_KILL_TRIALS", "6"))):
        state = tmp_path / f"trial-{trial}.duckdb"
        shutil.copyfile(before_path, state)
        proc = sessionize_run(batch, state)
        time.sleep(rnd.uniform(0.2, whole * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        got = snapshot(state)
        assert got in (before, after), f"trial {trial}: the state is neither before nor after"
        outcomes["before" if got == before else "after"] += 1
        finish(batch, state)  # the next run proceeds, and ends where one run would
        assert data(snapshot(state)) == data(after)
    assert sum(outcomes.values()) >= 1


def test_a_killed_first_run_leaves_no_state_or_a_whole_one(tmp_path):
    rnd = random.Random(7)
    batch = tmp_path / "batch.parquet"
    pq.write_table(events(rnd, 5_000, "m-", BASE_US), batch)
    reference = tmp_path / "reference.duckdb"
    started = time.perf_counter()
    finish(batch, reference)
    whole = time.perf_counter() - started
    after = snapshot(reference)
    for trial in range(3):
        state = tmp_path / f"trial-{trial}.duckdb"
        proc = sessionize_run(batch, state)
        time.sleep(rnd.uniform(0.2, whole * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert snapshot(state) in (None, after)
        finish(batch, state)
        assert data(snapshot(state)) == data(after)
