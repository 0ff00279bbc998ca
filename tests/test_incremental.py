"""Incremental runs (docs/incremental.md): one case per behaviour, each also checked
against one full run over the distinct events."""

from __future__ import annotations

import pytest

import sessionize
from sessionize.cli.main import main

DAY = "2024-01-0{}T{}:00Z"


def ev(mid, at, user="u1", anon=None, event="Page", **extra):
    row = {"messageId": mid, "timestamp": at, "userId": user, "anonymousId": anon,
           "type": "track", "event": event}
    row.update(extra)
    return row


def tables(result) -> dict:
    events = sorted((e["messageId"], e["resolved_user"], e["session_id"], e["session_key"],
                     e["start_reason"], e["prev_timestamp"], e["time_since_last_event"])
                    for e in result.events.to_arrow().to_pylist())
    sessions = sorted(result.sessions.to_arrow().to_pylist(),
                      key=lambda s: (s["resolved_user"], s["session_id"]))
    users = sorted(result.users.to_arrow().to_pylist(), key=lambda u: u["resolved_user"])
    return {"events": events, "sessions": sessions, "users": users}


def run_batches(tmp_path, batches, **options):
    """Run the batches into a new state; return the last result's tables, its changes
    (session_key -> change) and counts, after checking the tables equal a full run."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "state.duckdb"
    for batch in batches:
        with sessionize.run(batch, state=state, **options) as result:
            got = tables(result)
            changes = {c["session_key"]: c["change"]
                       for c in result.changes.to_arrow().to_pylist()}
            counts = result.counts
    seen, distinct = set(), []
    for batch in batches:
        for row in batch:
            if row["messageId"] not in seen:
                seen.add(row["messageId"])
                distinct.append(row)
    options.pop("max_lateness", None)
    with sessionize.run(distinct, **options) as full:
        assert got == tables(full)
    return got, changes, counts


def keys(got, user="u1"):
    return [s["session_key"] for s in got["sessions"] if s["resolved_user"] == user]


def test_late_event_inside_a_session(tmp_path):
    day1 = [ev("a", "2024-01-01T10:00:00Z"), ev("b", "2024-01-01T10:20:00Z"),
            ev("c", "2024-01-01T12:00:00Z"), ev("d", "2024-01-01T12:20:00Z"),
            ev("e", "2024-01-01T14:00:00Z")]
    before, _, _ = run_batches(tmp_path / "1", [day1])
    got, changes, counts = run_batches(tmp_path / "2", [day1, [ev("f", "2024-01-01T12:10:00Z")]])
    assert keys(got) == keys(before)  # no key moves
    assert changes == {keys(got)[1]: "changed"}
    assert (counts.new_events, counts.late_events, counts.users_affected) == (1, 1, 1)
    assert [s["event_count"] for s in got["sessions"]] == [2, 3, 1]


def test_late_event_bridging_two_sessions(tmp_path):
    day1 = [ev("a", "2024-01-01T10:00:00Z"), ev("b", "2024-01-01T10:50:00Z"),
            ev("c", "2024-01-01T13:00:00Z")]
    before, _, _ = run_batches(tmp_path / "1", [day1])
    got, changes, _ = run_batches(tmp_path / "2", [day1, [ev("x", "2024-01-01T10:25:00Z")]])
    assert len(got["sessions"]) == 2
    first, bridged, last = keys(before)
    assert changes == {first: "changed", bridged: "removed", last: "changed"}  # 3 -> 2
    assert [s["session_id"] for s in got["sessions"]] == [1, 2]


def test_late_event_before_the_first_session_renumbers(tmp_path):
    day1 = [ev("a", "2024-01-02T10:00:00Z"), ev("b", "2024-01-02T12:00:00Z")]
    got, changes, _ = run_batches(tmp_path, [day1, [ev("x", "2024-01-01T08:00:00Z")]])
    reasons = [(s["session_id"], s["start_reason"]) for s in got["sessions"]]
    assert reasons == [(1, "first_event"), (2, "inactivity"), (3, "inactivity")]
    assert sorted(changes.values()) == ["changed", "changed", "inserted"]


def test_new_events_after_history_recompute_only_the_last_session(tmp_path):
    history = [ev(f"h{i}", f"2024-01-01T{10 + i:02d}:00:00Z") for i in range(8)]
    got, changes, _ = run_batches(tmp_path, [history, [ev("n1", "2024-01-01T17:10:00Z"),
                                                       ev("n2", "2024-01-01T19:00:00Z")]])
    assert [s["start_reason"] for s in got["sessions"]] == ["first_event"] + ["inactivity"] * 8
    assert sorted(changes.values()) == ["changed", "inserted"]


def test_late_identify_reattributes_earlier_anonymous_events(tmp_path):
    day1 = [ev("a", "2024-01-01T10:00:00Z", user=None, anon="dev1"),
            ev("b", "2024-01-01T10:05:00Z", user=None, anon="dev1")]
    # other users, identified and not, that the identification must leave alone
    day1 += [ev(f"o{i}", f"2024-01-01T{8 + i % 8:02d}:00:00Z", user=f"other{i % 3}",
                anon=f"dev{2 + i % 2}") for i in range(12)]
    day2 = [ev("i", "2024-01-01T10:10:00Z", user="u9", anon="dev1", event=None,
               **{"type": "identify"})]
    for identity in ("stitch", "first", "graph"):
        got, changes, counts = run_batches(tmp_path / identity, [day1, day2],
                                           identity=identity)
        assert {e[1] for e in got["events"] if e[0] in "abi"} == {"u9"}
        assert sorted(changes.values()) == ["inserted", "removed"]
        # stitch / first recompute the two users the identification moves events
        # between; the graph recomputes everyone (docs/incremental.md)
        assert counts.full_recompute == (identity == "graph")
        if identity != "graph":
            assert counts.users_affected == 2


def test_redelivered_batch_changes_nothing(tmp_path):
    day1 = [ev("a", "2024-01-01T10:00:00Z"), ev("b", "2024-01-01T11:00:00Z")]
    got, changes, counts = run_batches(tmp_path, [day1, day1])
    assert changes == {}
    assert (counts.new_events, counts.already_seen, counts.users_affected) == (0, 2, 0)
    assert "2 already seen" in counts.line()


def test_events_without_message_id_are_told_apart_by_content(tmp_path):
    a = ev(None, "2024-01-01T10:00:00Z")
    b = ev(None, "2024-01-01T10:01:00Z")
    state = tmp_path / "s.duckdb"
    with sessionize.run([a, a, b], state=state) as result:
        assert (result.counts.new_events, result.counts.already_seen) == (2, 1)
    with sessionize.run([b, ev(None, "2024-01-01T10:02:00Z")], state=state) as result:
        assert (result.counts.new_events, result.counts.already_seen) == (1, 1)
        assert len(result.events) == 3


def test_too_late_events_are_quarantined(tmp_path):
    state = tmp_path / "s.duckdb"
    day = [ev("a", "2024-01-10T10:00:00Z")]
    with sessionize.run(day, state=state, max_lateness="3d"):
        pass
    late = [ev("old", "2024-01-05T10:00:00Z"), ev("ok", "2024-01-08T10:00:00Z")]
    with sessionize.run(late, state=state, max_lateness="3d") as result:
        assert (result.counts.too_late, result.counts.new_events) == (1, 1)
        quarantine = result.quarantine.to_arrow().to_pylist()
        assert [(q["messageId"], q["quarantine_reason"], q["quarantine_run"])
                for q in quarantine] == [("old", "too_late", 2)]
        assert sorted(e["messageId"] for e in result.events.to_arrow().to_pylist()) == [
            "a", "ok"]
    with sessionize.run(late, state=state, max_lateness="3d") as result:  # seen, not again
        assert (result.counts.already_seen, len(result.quarantine)) == (2, 1)


def test_max_lateness_needs_a_state():
    with pytest.raises(sessionize.OptionError, match="max_lateness"):
        sessionize.run(sessionize.sample_path(), max_lateness="3d")


def test_other_rules_are_refused(tmp_path):
    state = tmp_path / "s.duckdb"
    with sessionize.run(sessionize.sample_path(), state=state):
        pass
    with pytest.raises(sessionize.StateError) as error:
        sessionize.run(sessionize.sample_path(), state=state, gap="1h", midnight="UTC")
    text = str(error.value)
    assert "gap: the default in the state, '1h' now" in text
    assert "midnight: the default in the state, 'UTC' now" in text
    assert "rebuild" in text
    assert isinstance(error.value, sessionize.OptionError)


def test_cli_state_summary_out_and_refusal(tmp_path, capsys):
    state, out = str(tmp_path / "s.duckdb"), str(tmp_path / "out")
    assert main(["run", "--sample", "--state", state]) == 0
    assert "run 1: 6 new events (0 late), 0 already seen" in capsys.readouterr().out
    assert main(["run", "--sample", "--state", state, "--out", out, "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert "run 2: 0 new events (0 late), 6 already seen" in printed
    assert "changes.csv" in printed and "events.csv" in printed
    assert main(["run", "--sample", "--state", state, "--gap", "1h"]) == 2
    assert "other rules" in capsys.readouterr().err
    assert main(["run", "--sample", "--max-lateness", "3d", "--out", out]) == 2
    assert "--max-lateness needs --state" in capsys.readouterr().err


def test_a_state_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(sessionize.StateError, match="does not exist"):
        sessionize.run(sessionize.sample_path(), state=tmp_path / "nowhere" / "s.duckdb")


def test_not_a_state_is_refused(tmp_path):
    import duckdb

    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    with pytest.raises(sessionize.StateError, match="not a sessionize state"):
        sessionize.run(sessionize.sample_path(), state=path)


def test_a_state_in_use_is_refused(tmp_path):
    import subprocess
    import sys

    state = tmp_path / "s.duckdb"
    with sessionize.run(sessionize.sample_path(), state=state):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(state)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(sessionize.StateError, match="in use by another process"):
            sessionize.run(sessionize.sample_path(), state=state)
    finally:
        holder.kill()
        holder.communicate()


def test_an_input_column_named_like_a_state_column_is_kept(tmp_path):
    rows = [dict(ev("a", "2024-01-01T10:00:00Z"), run=1, change="x"),
            dict(ev("b", None), run=2, change="y")]
    with sessionize.run(rows, state=tmp_path / "s.duckdb", on_invalid="quarantine") as result:
        assert result.events.to_arrow().column("run").to_pylist() == [1]
        assert result.quarantine.to_arrow().column("run").to_pylist() == [2]


def test_identification_touching_most_of_the_state_rebuilds_everyone(tmp_path):
    # under stitch, when the users to recompute hold more than half the stored events,
    # the run rebuilds every user (cheaper than rewriting most rows); same tables
    day1 = [ev("a", "2024-01-01T10:00:00Z", user=None, anon="dev1"),
            ev("b", "2024-01-01T10:05:00Z", user=None, anon="dev1"),
            ev("c", "2024-01-01T09:00:00Z", user="u2")]
    day2 = [ev("i", "2024-01-01T10:10:00Z", user="u9", anon="dev1", event=None,
               **{"type": "identify"})]
    got, changes, counts = run_batches(tmp_path, [day1, day2], identity="stitch")
    assert counts.full_recompute and "(all recomputed)" in counts.line()
    assert {e[0]: e[1] for e in got["events"]} == {"a": "u9", "b": "u9", "c": "u2",
                                                   "i": "u9"}
    assert sorted(changes.values()) == ["inserted", "removed"]
