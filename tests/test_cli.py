"""The command line: outputs, formats, stdin, exit codes, progress and atomic writes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import sessionize
import sessionize.io.outputs
from sessionize.cli.main import main

SESSIONIZE = str(Path(sys.executable).parent / "sessionize")
EVENT_OUTPUTS = ["resolved_user", "prev_timestamp", "time_since_last_event", "new_session",
                 "session_id", "session_key", "start_reason"]
SESSION_COLUMNS = ["resolved_user", "session_id", "session_key", "session_start", "session_end",
                   "duration_seconds", "event_count", "start_reason", "first_event",
                   "last_event"]
USER_COLUMNS = ["resolved_user", "session_count", "event_count", "first_seen", "last_seen"]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def sample_ndjson() -> bytes:
    with open(sessionize.sample_path()) as fh:
        return "".join(json.dumps(e) + "\n" for e in json.load(fh)).encode()


def write_bad_file(tmp_path: Path) -> str:
    path = tmp_path / "bad.ndjson"
    path.write_text(
        json.dumps({"messageId": "m1", "userId": "u1", "timestamp": "2024-01-01T09:00:00Z"})
        + "\n"
        + json.dumps({"messageId": "m2", "userId": "u1", "timestamp": "yesterday"}) + "\n")
    return str(path)


# --- success --------------------------------------------------------------------------------
def test_sample_writes_parquet_tables(tmp_path):
    code, out, err = cli("run", "--sample", "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["events.parquet", "sessions.parquet", "users.parquet"]
    events = pq.read_table(tmp_path / "events.parquet")
    sessions = pq.read_table(tmp_path / "sessions.parquet")
    users = pq.read_table(tmp_path / "users.parquet")
    assert (events.num_rows, sessions.num_rows, users.num_rows) == (6, 4, 3)
    assert events.column_names[-7:] == EVENT_OUTPUTS
    assert sessions.column_names == SESSION_COLUMNS
    assert users.column_names == USER_COLUMNS
    assert str(events.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(events.schema.field("time_since_last_event").type) == "duration[us]"
    assert users.to_pylist()[1]["resolved_user"] == "user_001"
    assert users.column("session_count").to_pylist() == [1, 2, 1]
    # The summary and the notebook's timeline are on stdout.
    assert "6 events, 3 users, 4 sessions" in out
    assert "events.parquet" in out and "start_reason" in out


def test_csv_format(tmp_path):
    code, _, err = cli("run", "--sample", "--out", str(tmp_path), "--format", "csv", "-q")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["events.csv", "sessions.csv", "users.csv"]
    convert = pacsv.ConvertOptions(strings_can_be_null=True,
                                   column_types={"timestamp": "string", "session_start": "string"})
    events = pacsv.read_csv(tmp_path / "events.csv", convert_options=convert).to_pylist()
    assert len(events) == 6
    assert events[0]["timestamp"] == "2024-01-01T09:00:00.000000Z"
    assert [e["time_since_last_event"] for e in events][:3] == [None, 120.0, 84480.0]
    assert json.loads(events[0]["context"])["library"]["name"] == "analytics.js"
    sessions = pacsv.read_csv(tmp_path / "sessions.csv", convert_options=convert)
    assert sessions.column_names == SESSION_COLUMNS
    assert sessions.column("session_start").to_pylist()[0] == "2024-01-02T10:00:00.000000Z"


def test_ndjson_format(tmp_path):
    code, _, err = cli("run", "--sample", "--out", str(tmp_path), "--format", "ndjson", "-q")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["events.ndjson", "sessions.ndjson", "users.ndjson"]
    lines = (tmp_path / "sessions.ndjson").read_text().splitlines()
    sessions = [json.loads(line) for line in lines]
    assert [(s["resolved_user"], s["session_id"], s["event_count"]) for s in sessions] == [
        ("anon_456", 1, 1), ("user_001", 1, 2), ("user_001", 2, 2), ("user_002", 1, 1)]
    assert list(sessions[0]) == SESSION_COLUMNS
    events = [json.loads(x) for x in (tmp_path / "events.ndjson").read_text().splitlines()]
    assert events[1]["time_since_last_event"] == 120.0
    assert events[0]["context"]["library"]["name"] == "analytics.js"  # nested stays nested


def test_gap_flag_changes_sessions(tmp_path):
    code, _, err = cli("run", "--sample", "--out", str(tmp_path), "--gap", "1d", "-q")
    assert code == 0, err
    # With a one-day gap, user_001's 23h28m pause no longer starts a new session.
    assert pq.read_table(tmp_path / "sessions.parquet").num_rows == 3


def test_stdin_through_the_installed_command(tmp_path):
    done = subprocess.run([SESSIONIZE, "run", "-", "--out", str(tmp_path)], input=sample_ndjson(),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert pq.read_table(tmp_path / "sessions.parquet").num_rows == 4
    assert "6 events, 3 users, 4 sessions" in done.stdout.decode()
    assert "<stdin>" in done.stdout.decode()


def test_stdin_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(sample_ndjson())))
    code, out, err = cli("run", "-", "--out", str(tmp_path), "--format", "csv")
    assert code == 0, err
    assert pacsv.read_csv(tmp_path / "users.csv").num_rows == 3


def test_column_flags(tmp_path):
    path = tmp_path / "custom.ndjson"
    path.write_text(json.dumps({"uid": "u", "ts": 1704099600, "name": "Open"}) + "\n"
                    + json.dumps({"uid": "u", "ts": 1704103200, "name": "Close"}) + "\n")
    code, _, err = cli("run", str(path), "--out", str(tmp_path / "out"), "--user-id", "uid",
                       "--timestamp", "ts", "--event", "name", "-q")
    assert code == 0, err
    sessions = pq.read_table(tmp_path / "out" / "sessions.parquet").to_pylist()
    assert [(s["resolved_user"], s["first_event"]) for s in sessions] == [
        ("u", "Open"), ("u", "Close")]


def test_python_dash_m(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sessionize", "run", "--sample", "--out",
                           str(tmp_path)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "events.parquet").exists()
    assert "4 sessions" in done.stdout.decode()


# --- bad data: exit 1 -------------------------------------------------------------------------
def test_invalid_timestamp_exits_1_with_the_message_on_stderr(tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = cli("run", write_bad_file(tmp_path), "--out", str(out_dir))
    assert code == 1
    assert out == ""
    assert "row 2 (messageId 'm2')" in err and "'yesterday'" in err
    assert "Traceback" not in err
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_invalid_timestamp_exits_1_through_the_installed_command(tmp_path):
    done = subprocess.run([SESSIONIZE, "run", write_bad_file(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"'yesterday'" in done.stderr


def test_malformed_json_exits_1_naming_the_line(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"userId": "u", "timestamp": "2024-01-01"}\n{broken\n')
    code, out, err = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert code == 1 and out == ""
    assert "line 2" in err


def test_missing_input_exits_1(tmp_path):
    code, out, err = cli("run", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out"))
    assert code == 1 and out == ""
    assert "does not exist" in err


def test_quarantine_writes_a_quarantine_file(tmp_path):
    for fmt in ("parquet", "csv", "ndjson"):
        out_dir = tmp_path / fmt
        code, out, err = cli("run", write_bad_file(tmp_path), "--out", str(out_dir),
                             "--on-invalid", "quarantine", "--format", fmt)
        assert code == 0, err
        assert sorted(os.listdir(out_dir)) == sorted(
            f"{name}.{fmt}" for name in ("events", "sessions", "users", "quarantine"))
        assert "quarantined rows: invalid_timestamp 1" in out
    quarantine = pq.read_table(tmp_path / "parquet" / "quarantine.parquet").to_pylist()
    assert [(q["messageId"], q["timestamp"], q["quarantine_reason"]) for q in quarantine] == [
        ("m2", "yesterday", "invalid_timestamp")]


# --- bad usage: exit 2 ------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "0", "-1m", "30 parsecs"])
def test_bad_gap_exits_2(tmp_path, value):
    code, out, err = cli("run", "--sample", "--out", str(tmp_path), f"--gap={value}")
    assert code == 2
    assert out == ""
    assert repr(value) in err or value in err
    assert "gap" in err
    assert os.listdir(tmp_path) == []


def test_unknown_flag_exits_2(tmp_path):
    code, out, err = cli("run", "--sample", "--out", str(tmp_path), "--bogus")
    assert code == 2
    assert out == ""
    assert "unrecognized arguments: --bogus" in err
    assert os.listdir(tmp_path) == []


def test_unknown_flag_exits_2_through_the_installed_command(tmp_path):
    done = subprocess.run([SESSIONIZE, "run", "--sample", "--out", str(tmp_path), "--bogus"],
                          capture_output=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"--bogus" in done.stderr


@pytest.mark.parametrize("argv", [
    ["run", "--sample"],                                   # no --out
    ["run", "--out", "x"],                                 # neither INPUT nor --sample
    ["run", "--sample", "--out", "x", "--format", "xlsx"],  # not a format
    ["run", "--sample", "--out", "x", "--on-invalid", "drop"],
    [],                                                    # no command
])
def test_other_usage_errors_exit_2(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    assert err
    assert not (tmp_path / "x").exists()


def test_run_help_shows_examples():
    code, out, err = cli("run", "--help")
    assert code == 0
    assert "examples:" in out
    assert "sessionize run --sample --out out/" in out
    assert "--on-invalid" in out and "--gap" in out
    assert err == ""


def test_version():
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"sessionize {sessionize.__version__}"


# --- progress ---------------------------------------------------------------------------------
def test_progress_goes_to_stderr_only(tmp_path):
    code, plain_out, plain_err = cli("run", "--sample", "--out", str(tmp_path))
    assert code == 0
    assert plain_err == ""  # stderr is not a terminal: no progress unless asked
    code, out, err = cli("run", "--sample", "--out", str(tmp_path), "--progress")
    assert code == 0
    assert out == plain_out  # stdout holds just the summary, the same with or without progress
    for stage in ("reading", "sessionizing", "writing events.parquet"):
        assert stage in err
        assert stage not in out


def test_progress_through_the_installed_command(tmp_path):
    done = subprocess.run([SESSIONIZE, "run", "--sample", "--out", str(tmp_path), "--progress",
                           "-q"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    assert b"sessionizing" in done.stderr


# --- atomic writes ----------------------------------------------------------------------------
class DiskFull(OSError):
    pass


def fail_after_first_table(monkeypatch) -> list[str]:
    written = []
    real = sessionize.io.outputs._write_one

    def write_one(table, path, fmt):
        if written:
            # Leave a half-written file behind, as a crash mid-write would.
            Path(path).write_bytes(b"PAR1 half a file")
            raise DiskFull("No space left on device")
        real(table, path, fmt)
        written.append(path)

    monkeypatch.setattr(sessionize.io.outputs, "_write_one", write_one)
    return written


def test_failed_write_leaves_no_partial_files_and_keeps_old_ones(tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "users.parquet").write_bytes(b"from an earlier run")
    (out_dir / "notes.txt").write_text("mine")
    written = fail_after_first_table(monkeypatch)
    code, out, err = cli("run", "--sample", "--out", str(out_dir))
    assert written  # the first table was written (to the staging area) before the failure
    assert code == 1  # an output that cannot be written is exit 1, with no traceback
    assert "No space left on device" in err and "Traceback" not in err
    assert sorted(os.listdir(out_dir)) == ["notes.txt", "users.parquet"]
    assert (out_dir / "users.parquet").read_bytes() == b"from an earlier run"
    assert (out_dir / "notes.txt").read_text() == "mine"


def test_failed_write_through_the_api(tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "events.parquet").write_bytes(b"old events")
    fail_after_first_table(monkeypatch)
    with sessionize.run(sessionize.sample_path()) as result, \
            pytest.raises(sessionize.OutputError, match="No space left on device") as info:
        result.write(out_dir)
    assert isinstance(info.value.__cause__, DiskFull)
    assert os.listdir(out_dir) == ["events.parquet"]
    assert (out_dir / "events.parquet").read_bytes() == b"old events"


def test_successful_write_replaces_old_files_and_leaves_no_temporaries(tmp_path):
    (tmp_path / "events.parquet").write_bytes(b"old events")
    code, _, err = cli("run", "--sample", "--out", str(tmp_path), "-q")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["events.parquet", "sessions.parquet", "users.parquet"]
    assert pq.read_table(tmp_path / "events.parquet").num_rows == 6


def test_out_that_is_a_file_exits_2(tmp_path):
    target = tmp_path / "taken"
    target.write_text("a file")
    code, out, err = cli("run", "--sample", "--out", str(target))
    assert code == 2 and out == ""
    assert "not a directory" in err
    assert target.read_text() == "a file"
