"""Property tests of incremental runs: any sequence of batches equals one full run.

Streams from the generators of test_properties.py (every rule set and identity policy
they draw) are cut into random batches, delivered in random order, with whole batches
re-delivered, overlapping batches and (by the order) late events. After the last batch
the state's tables must equal one full run over the distinct events in delivery order
(the first copy of each messageId, or of each identical row without one).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st
from test_properties import examples, rule_options, rule_streams, streams, to_table

import sessionize
from sessionize.state import incremental


def rule_table(events) -> pa.Table:
    return to_table(events).append_column(
        "plat", pa.array([e.gap_key for e in events], pa.string())).append_column(
        "tz", pa.array([e.zone for e in events], pa.string())).append_column(
        "utm", pa.array([e.campaign for e in events], pa.string())).append_column(
        "csid", pa.array([e.client_session for e in events], pa.string()))


def deliveries(table: pa.Table, rnd: random.Random) -> list[pa.Table]:
    """The stream cut into batches, shuffled, with re-delivered and overlapping batches."""
    n = table.num_rows
    cuts = sorted(rnd.sample(range(1, n), k=rnd.randint(0, min(4, n - 1)))) if n > 1 else []
    parts = [table.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, n])]
    rnd.shuffle(parts)
    batches: list[pa.Table] = []
    for part in parts:
        batches.append(part)
        if rnd.random() < 0.3:
            batches.append(rnd.choice(batches))  # a batch delivered again
        if rnd.random() < 0.3 and n:  # an overlap: rows of any batch, again
            rows = sorted(rnd.sample(range(n), k=rnd.randint(1, n)))
            batches.append(table.take(rows))
    return batches


def distinct(batches: list[pa.Table]) -> pa.Table:
    """The batches concatenated in delivery order, each event's first copy only."""
    whole = pa.concat_tables(batches)
    seen, keep = set(), []
    for i, row in enumerate(whole.to_pylist()):
        key = row["messageId"] if row["messageId"] is not None else tuple(sorted(
            (k, repr(v)) for k, v in row.items()))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return whole.take(pa.array(keep, pa.int64()))


EVENT_COLUMNS = ("row", "resolved_user", "session_id", "session_key", "start_reason",
                 "new_session", "prev_timestamp", "time_since_last_event")


def snapshot(result) -> dict:
    events = sorted(tuple(e[c] for c in EVENT_COLUMNS) for e in result.events.to_arrow()
                    .to_pylist())
    tables = {"events": events}
    for name in ("sessions", "users"):
        tables[name] = sorted(getattr(result, name).to_arrow().to_pylist(),
                              key=lambda r: (r["resolved_user"], r.get("session_id", 0)))
    tables["quarantine"] = sorted((q["row"], q["quarantine_reason"])
                                  for q in result.quarantine.to_arrow().to_pylist())
    if result.identities is not None:
        tables["identities"] = sorted(result.identities.to_arrow().to_pylist(),
                                      key=lambda r: tuple(map(str, r.values())))
    return tables


def check_incremental(table: pa.Table, options: dict, rnd: random.Random) -> None:
    batches = deliveries(table, rnd)
    directory = Path(tempfile.mkdtemp(prefix="sz-incremental-"))
    try:
        state = directory / "state.duckdb"
        for batch in batches:
            with sessionize.run(batch, state=state, **options) as result:
                pass
        with sessionize.run(batch.slice(0, 0), state=state, **options) as result:
            got = snapshot(result)
            assert result.counts.new_events == 0
        with sessionize.run(distinct(batches), **options) as full:
            want = snapshot(full)
        assert got == want
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@examples(20)
@given(rule_streams(), st.randoms(use_true_random=False))
def test_batches_equal_one_full_run_under_every_rule(case, rnd):
    gap, options, events = case
    check_incremental(rule_table(events), rule_options(gap, options), rnd)


@examples(20)
@given(streams(min_size=1), st.randoms(use_true_random=False))
def test_batches_equal_one_full_run_with_repeated_ids(case, rnd):
    """Repeated and missing messageIds, blank ids: the first delivered copy counts."""
    gap, events = case
    check_incremental(to_table(events), {"gap": f"{gap}us", "on_invalid": "quarantine"}, rnd)


@examples(20)
@given(streams(min_size=1), st.sampled_from(["stitch", "first"]),
       st.randoms(use_true_random=False))
def test_identifications_across_batches_equal_one_full_run(case, identity, rnd):
    """stitch / first recompute only the users an identification moves events between
    (state/incremental.py, _affected_identified): devices shared by several users,
    identified late, in any order, with re-deliveries."""
    gap, events = case
    share = incremental.WHOLE_STATE_SHARE
    incremental.WHOLE_STATE_SHARE = float("inf")  # never the rebuild: these states are small
    try:
        check_incremental(to_table(events), {"gap": f"{gap}us", "identity": identity,
                                             "on_invalid": "quarantine"}, rnd)
    finally:
        incremental.WHOLE_STATE_SHARE = share
