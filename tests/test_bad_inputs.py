"""Bad input never crashes, every row is placed (issue 22).

Each case is a small file in ``tests/bad_inputs/`` (its name starts with the issue's class
number). A run either succeeds, with every input row in ``events`` or ``quarantine``, or
fails with a :class:`~sessionize.DataError` whose message names the problem.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

import sessionize
from sessionize import DataError, InputError, MalformedJSONError
from sessionize.cli.main import main
from sessionize.io import outputs

CASES = Path(__file__).parent / "bad_inputs"


def run_both(path: Path) -> tuple:
    """The run in quarantine mode: events, quarantine (reason, line) pairs."""
    with sessionize.run(str(path), on_invalid="quarantine") as result:
        quarantine = result.quarantine.to_arrow().to_pylist()
        return (len(result.events),
                [(q["quarantine_reason"], q["source_line"]) for q in quarantine])


def cli(*argv: str) -> tuple[int, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, err.getvalue()


# --- 1, 6, 7, 8, 9: JSON that DuckDB refuses is read object by object ---------------------
def test_1_ndjson_without_any_object_is_all_quarantined(tmp_path):
    path = CASES / "01-no-object.ndjson"
    assert run_both(path) == (0, [("malformed_json", 1), ("malformed_json", 2)])
    status, err = cli("run", str(path), "--out", str(tmp_path / "o"), "--on-invalid",
                      "quarantine", "-q")
    assert status == 0, err
    with pytest.raises(MalformedJSONError, match="line 1: not a JSON object"):
        sessionize.run(str(path))


def test_6_whitespace_only_json_is_an_empty_input():
    assert run_both(CASES / "06-whitespace.json") == (0, [])
    with sessionize.run(str(CASES / "06-whitespace.json")) as result:
        assert len(result.events) == len(result.sessions) == 0


@pytest.mark.parametrize("command", ["thresholds", "report"])
def test_6_whitespace_only_json_in_the_other_commands(command, tmp_path):
    target = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    status, err = cli(command, str(CASES / "06-whitespace.json"), *target)
    assert status == 0, err


def test_7_json_array_with_invalid_utf8_sets_the_element_aside():
    path = CASES / "07-invalid-utf8.json"
    assert run_both(path) == (1, [("malformed_json", 2)])
    with pytest.raises(MalformedJSONError, match="line 2: not valid UTF-8"):
        sessionize.run(str(path))


def test_8_deeply_nested_duplicate_key_is_one_malformed_line():
    path = CASES / "08-deep-duplicate.ndjson"
    assert run_both(path) == (1, [("malformed_json", 2)])
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run(str(path))
    assert info.value.line == 2


def test_9_dollar_keys_read_like_any_other():
    with sessionize.run(str(CASES / "09-dollar-keys.ndjson")) as result:
        events = result.events.to_arrow()
    assert events.column("$insert_id").to_pylist() == ["a", "b"]
    assert events.column("$session_id").to_pylist() == ["s1", None]


def test_9_lines_duckdb_refuses_are_quarantined_with_their_line():
    path = CASES / "09-refused-lines.ndjson"
    # 2: a lone surrogate, 3: an empty key, 5: a duplicate key, 6: a key differing only
    # in case from an earlier object's (line 4 is blank)
    assert run_both(path) == (2, [("malformed_json", 2), ("malformed_json", 3),
                                  ("malformed_json", 5), ("malformed_json", 6)])
    with pytest.raises(MalformedJSONError, match="at line 2: not valid UTF-8"):
        sessionize.run(str(path))


def test_9_json_array_elements_are_placed_one_by_one(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('[{"userId": "u", "timestamp": "2024-01-01T00:00:00Z"},\n'
                    ' {"userId": "u", "timestamp": "2024-01-01T00:01:00Z", "a": 1, "a": 2},\n'
                    ' 5, NaN,\n'
                    ' {"userId": "u",\n  "timestamp": "2024-01-01T00:02:00Z"}]\n')
    assert run_both(path) == (2, [("malformed_json", 2), ("malformed_json", 3),
                                  ("malformed_json", 3)])


def test_9_a_pretty_printed_single_object_is_one_event(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{\n  "userId": "u",\n  "timestamp": "2024-01-01T00:00:00Z"\n}\n')
    assert run_both(path) == (1, [])


# --- 5: a truncated gzip file is bad data, in every command ------------------------------
@pytest.mark.parametrize("command", ["run", "thresholds", "report"])
def test_5_truncated_gzip_exits_1(command, tmp_path):
    target = {"run": ["--out", str(tmp_path / "o"), "-q"], "thresholds": [],
              "report": ["-o", str(tmp_path / "r.html")]}[command]
    status, err = cli(command, str(CASES / "05-truncated.ndjson.gz"), *target)
    assert status == 1, err
    assert "not a complete gzip file" in err and "Traceback" not in err


# --- 4: reserved column names --------------------------------------------------------------
@pytest.mark.parametrize("name", ["04-reserved-text.ndjson", "04-reserved-number.ndjson"])
def test_4_a_key_named_like_an_internal_column_is_refused(name):
    with pytest.raises(InputError, match="reserved"):
        sessionize.run(str(CASES / name), on_invalid="quarantine")


def test_4_reserved_names_are_refused_in_parquet_and_frames(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"userId": ["u"], "timestamp": ["2024-01-01T00:00:00Z"],
                      "__sz_ts": [1]})
    pq.write_table(table, tmp_path / "e.parquet")
    with pytest.raises(InputError, match="'__sz_ts'"):
        sessionize.run(str(tmp_path / "e.parquet"))
    with pytest.raises(InputError, match="'__sz_ts'"):
        sessionize.run(table)


# --- 10: empty inputs are zero events, in every format --------------------------------------
EMPTY = ["10-empty.ndjson", "10-blank-lines.ndjson", "10-empty-array.json",
         "10-header-only.csv", "10-empty.csv", "06-whitespace.json"]


@pytest.mark.parametrize("name", EMPTY)
def test_10_an_empty_input_is_zero_events(name, tmp_path):
    with sessionize.run(str(CASES / name)) as result:
        assert (len(result.events), len(result.sessions), len(result.users)) == (0, 0, 0)
    status, err = cli("run", str(CASES / name), "--out", str(tmp_path / "o"), "-q")
    assert status == 0, err


def test_10_an_empty_parquet_file_is_zero_events(tmp_path):
    (tmp_path / "e.parquet").write_bytes(b"")
    with sessionize.run(str(tmp_path / "e.parquet")) as result:
        assert len(result.events) == 0


def test_10_an_empty_hourly_file_does_not_fail_the_directory(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "1704067200.gz").write_bytes(b"")
    shutil.copy(CASES / "09-dollar-keys.ndjson", folder / "1704070800.ndjson")
    with sessionize.run(str(folder)) as result:
        assert len(result.events) == 2


@pytest.mark.parametrize("text", ["{}", "[{}]", "[{}, {}]"])
def test_10_objects_without_keys_are_rows_missing_every_field(text, tmp_path):
    path = tmp_path / "e.json"
    path.write_text(text)
    rows = text.count("{")
    assert run_both(path) == (0, [("missing_timestamp", 1)] * rows)
    with pytest.raises(DataError, match="the timestamp is missing"):
        sessionize.run(str(path))


def test_10_null_in_an_array_is_malformed(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("[null]")
    assert run_both(path) == (0, [("malformed_json", 1)])


# --- 3, 11, 12: one timestamp grammar and one range -------------------------------------
def test_3_a_list_timestamp_column_is_an_input_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"userId": ["u"], "timestamp": [[1704067200]]}),
                   tmp_path / "e.parquet")
    with pytest.raises(InputError, match="type BIGINT\\[\\], which sessionize cannot read"):
        sessionize.run(str(tmp_path / "e.parquet"), on_invalid="quarantine")
    pq.write_table(pa.table({"userId": ["u"], "timestamp": [{"s": 1}]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="cannot read as a time"):
        sessionize.run(str(tmp_path / "s.parquet"))


def test_11_12_the_timestamp_grammar_and_range():
    with sessionize.run(str(CASES / "11-12-timestamps.ndjson"),
                        on_invalid="quarantine") as result:
        kept = result.events.to_arrow().to_pylist()
        refused = result.quarantine.to_arrow().to_pylist()
        frame = result.events.to_pandas()  # every kept instant fits pandas' readers
    assert {e["userId"] for e in kept} == {"ok"} and len(kept) == 8
    assert {q["userId"] for q in refused} == {"bad"} and len(refused) == 12
    assert {q["quarantine_reason"] for q in refused} == {"invalid_timestamp"}
    times = {e["messageId"]: e["timestamp"].isoformat() for e in kept}
    assert times["iso-offset"] == "2024-01-01T10:00:00+00:00"
    assert times["iso-space"] == "2024-01-01T10:00:00.500000+00:00"
    assert times["exponent-text"] == times["exponent-number"] == "2024-01-01T10:00:00+00:00"
    assert times["first-instant"] == "0001-01-01T00:00:00+00:00"
    assert times["last-instant"] == "9999-12-31T23:59:59.999999+00:00"
    assert len(frame) == 8


def test_13_blank_ids_booleans_lists_and_objects_are_missing_users():
    with sessionize.run(str(CASES / "13-blank-and-odd-ids.ndjson"),
                        on_invalid="quarantine") as result:
        users = {e["messageId"]: e["resolved_user"] for e in result.events.to_arrow().to_pylist()}
        missing = [(q["messageId"], q["quarantine_reason"])
                   for q in result.quarantine.to_arrow().to_pylist()]
    assert missing == [(m, "missing_user") for m in
                       ["tab", "nbsp", "ideographic-space", "true", "list", "object"]]
    assert users == {"number": "42", "text": "true", "braced": "{3F2504E0}",
                     "padded": "\u00a0u1"}


def test_13_boolean_and_list_id_columns_are_missing(tmp_path):
    pa = pytest.importorskip("pyarrow")

    table = pa.table({"userId": [True], "anonymousId": [["a"]],
                      "timestamp": ["2024-01-01T00:00:00Z"]})
    with sessionize.run(table, on_invalid="quarantine") as result:
        assert len(result.events) == 0
        assert result.quarantine.to_arrow()["quarantine_reason"].to_pylist() == ["missing_user"]


# --- 2: CSV is read as RFC 4180, not sniffed; malformed rows are placed -----------------
def test_2_ragged_rows_are_quarantined_and_the_header_kept():
    path = CASES / "02-ragged-rows.csv"
    with sessionize.run(str(path), on_invalid="quarantine") as result:
        events = result.events.to_arrow()
        quarantine = result.quarantine.to_arrow().to_pylist()
    assert events.column("event").to_pylist() == ["two\r\nlines", 'say "hi"']
    assert [(q["quarantine_reason"], q["source_line"], q["raw_line"]) for q in quarantine] == [
        ("malformed_csv", 4, "b,"),
        ("malformed_csv", 5, "v,2024-01-01T00:01:00Z,E,extra")]
    with pytest.raises(InputError, match="line 4: expected 3 fields"):
        sessionize.run(str(path))


@pytest.mark.parametrize("name", ["02-ragged-first-row.csv", "02-ragged.tsv"])
def test_2_a_ragged_row_does_not_lose_the_header(name):
    assert run_both(CASES / name) == (1, [("malformed_csv", 2 if "first" in name else 3)])
    with pytest.raises(InputError, match="expected 3 fields") as info:
        sessionize.run(str(CASES / name))
    assert "column0" not in str(info.value)


def test_2_a_quote_that_never_closes_names_its_line(tmp_path):
    status, err = cli("run", str(CASES / "02-unclosed-quote.csv"), "--out", str(tmp_path / "o"),
                      "--on-invalid", "quarantine", "-q")
    assert status == 1
    assert "from line 2" in err and "Traceback" not in err


def test_2_a_field_over_2_mb_is_read(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("userId,timestamp,event\nu,2024-01-01T00:00:00Z," + "x" * 3_000_000
                    + "\nv,2024-01-01T00:00:00Z,E\n")
    with sessionize.run(str(path)) as result:
        assert sorted(map(len, result.events.to_arrow().column("event").to_pylist())) == \
            [1, 3_000_000]


# --- 14, 15, 16: the output directory holds one run's set ------------------------------
def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_14_a_directory_where_a_table_goes_fails_before_anything_changes(tmp_path):
    out = tmp_path / "o"
    assert cli("run", "--sample", "--out", str(out), "-q")[0] == 0
    (out / "sessions.parquet").unlink()
    (out / "sessions.parquet" / "x").mkdir(parents=True)
    before = _bytes(out)
    status, err = cli("run", str(CASES / "09-dollar-keys.ndjson"), "--out", str(out), "-q")
    assert status == 1 and "is a directory" in err and "Traceback" not in err
    assert _bytes(out) == before


class FailingRename(outputs.LocalFileSystem):
    """The local disk, whose ``fail_at``-th renames fail (as a full or read-only disk's)."""

    def __init__(self, *fail_at: int):
        self.renames, self.fail_at = 0, fail_at

    def replace(self, tmp: str, final: str) -> None:
        self.renames += 1
        if self.renames in self.fail_at:
            raise OSError(28, "No space left on device")
        super().replace(tmp, final)


@pytest.mark.parametrize("fail_at", [1, 3, 5, 6])
def test_14_a_failed_rename_puts_the_previous_set_back(tmp_path, fail_at):
    out = tmp_path / "o"
    with sessionize.run(str(CASES / "09-refused-lines.ndjson"), on_invalid="quarantine") as old:
        old.write(out)  # events, sessions, users, quarantine
    before = _bytes(out)
    with sessionize.run(sessionize.sample_path()) as new:
        tables = [new.events, new.sessions, new.users]
        with pytest.raises(sessionize.OutputError, match="No space left on device"):
            outputs.write_staged(tables, str(out), format="parquet", fs=FailingRename(fail_at),
                                 write_one=outputs._write_one)
    assert _bytes(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_14_previous_tables_that_cannot_be_moved_back_are_kept_and_named(tmp_path):
    out = tmp_path / "o"
    with sessionize.run(sessionize.sample_path()) as old:
        old.write(out)
    before = _bytes(out)
    with sessionize.run(sessionize.sample_path()) as new:
        tables = [new.events, new.sessions, new.users]
        # renames 1-3 move the old set aside, 4 fails; the undo's first move back (6) fails
        with pytest.raises(sessionize.OutputError, match="could not all be moved back") as info:
            outputs.write_staged(tables, str(out), format="parquet", fs=FailingRename(4, 6),
                                 write_one=outputs._write_one)
    (kept,) = out.glob(".sessionize-previous-*")
    assert str(kept) in str(info.value)
    assert {**_bytes(out), **_bytes(kept)} == before


_KILLED_WRITER = """
import os, signal, sys
import sessionize

out, kill_at = sys.argv[1], int(sys.argv[2])
with sessionize.run(sessionize.sample_path()) as new:
    renames, rename = [0], os.replace

    def replace(source, target):  # a real SIGKILL of this process, at the chosen rename
        if renames[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        renames[0] += 1
        rename(source, target)

    os.replace = replace
    new.write(out)
"""


@pytest.mark.parametrize("kill_at", range(9))
def test_14_a_run_killed_during_the_renames_leaves_a_set_the_next_write_makes_whole(
        tmp_path, kill_at):
    import subprocess
    import sys

    out = tmp_path / "o"
    with sessionize.run(str(CASES / "09-refused-lines.ndjson"), on_invalid="quarantine") as old:
        old.write(out)  # events, sessions, users, quarantine
    before = _bytes(out)
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    # renames: the journal (0), four old tables aside (1-4), three new ones in (5-7)
    done = subprocess.run([sys.executable, str(script), str(out), str(kill_at)],
                          capture_output=True, text=True)
    assert done.returncode == (-9 if kill_at < 8 else 0), done.stderr
    with sessionize.run(sessionize.sample_path()) as new:
        new.write(tmp_path / "new")
    after = _bytes(tmp_path / "new")
    assert set(_bytes(out).items()) <= set(before.items()) | set(after.items())
    with sessionize.run(sessionize.sample_path()) as other:  # the next write, another format
        other.write(out, format="csv")
    parquet = {name: data for name, data in _bytes(out).items() if name.endswith(".parquet")}
    assert parquet == (before if kill_at == 0 else after)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_15_a_run_without_quarantine_rows_removes_the_previous_quarantine(tmp_path):
    out = tmp_path / "o"
    for source in (CASES / "09-refused-lines.ndjson", sessionize.sample_path()):
        status, err = cli("run", str(source), "--out", str(out), "--on-invalid",
                          "quarantine", "-q")
        assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "events.parquet", "sessions.parquet", "users.parquet"]


def test_15_other_formats_are_left_alone(tmp_path):
    out = tmp_path / "o"
    with sessionize.run(sessionize.sample_path()) as result:
        result.write(out, format="parquet")
        result.write(out, format="csv")
    assert len(list(out.glob("*.parquet"))) == len(list(out.glob("*.csv"))) == 3


def test_16_stale_staging_is_cleaned_and_hidden_directories_are_not_input(tmp_path):
    out = tmp_path / "o"
    assert cli("run", "--sample", "--out", str(out), "-q")[0] == 0
    # what a run killed while writing leaves: a staging directory with partial tables, of
    # an older naming and of a process that is gone
    dead = f".sessionize-tmp-{socket.gethostname()}-999999999-xyz"
    for name in (".sessionize-tmp-abc123", dead):
        (out / name).mkdir()
        shutil.copy(out / "events.parquet", out / name / "events.parquet")
    folder = tmp_path / "in"  # a folder of event files holding such a staging directory
    folder.mkdir()
    shutil.copy(out / "events.parquet", folder / "events.parquet")
    shutil.copytree(out / ".sessionize-tmp-abc123", folder / ".sessionize-tmp-abc123")
    with sessionize.run(str(folder)) as again:
        assert len(again.events) == 6
    assert cli("run", "--sample", "--out", str(out), "-q")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "events.parquet", "sessions.parquet", "users.parquet"]


def test_16_a_live_runs_staging_is_left_alone(tmp_path):
    out = tmp_path / "o"
    live = out / f".sessionize-tmp-{socket.gethostname()}-{os.getpid()}-abc"
    live.mkdir(parents=True)
    assert cli("run", "--sample", "--out", str(out), "-q")[0] == 0
    assert live.is_dir()


# --- 17, 18: data frames and records ------------------------------------------------------
def test_17_a_pandas_period_column_is_refused_not_read_as_epoch():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"userId": ["u"], "timestamp": pd.period_range("2024-01", periods=1,
                                                                          freq="M")})
    with pytest.raises(InputError, match=r"(?s)'timestamp' holds pandas Periods.*to_timestamp"):
        sessionize.run(frame)


def test_18_duplicate_column_names_are_an_input_error():
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    frame = pd.DataFrame([["u", "2024-01-01T00:00:00Z", "x"]],
                         columns=["userId", "timestamp", "userId"])
    with pytest.raises(InputError, match="'userId' twice"):
        sessionize.run(frame)
    with pytest.raises(InputError, match="as 'timestamp' and 'Timestamp'"):
        sessionize.run(frame.set_axis(["userId", "timestamp", "Timestamp"], axis=1))
    with pytest.raises(InputError, match="'userId' twice"):
        sessionize.run(pa.table([["u"], ["2024-01-01T00:00:00Z"], ["u"]],
                                names=["userId", "timestamp", "userId"]))


@pytest.mark.parametrize("odd", [None, "a.json", 5])
def test_18_records_name_the_element_that_is_not_a_dict(odd):
    records = [{"userId": "u", "timestamp": "2024-01-01T00:00:00Z"}, odd]
    with pytest.raises(InputError, match=f"record 2 of 2 is a {type(odd).__name__}"):
        sessionize.run(records)


# --- 19: errors and the quarantine name the input line ------------------------------------
@pytest.mark.parametrize("name, lines", [("19-blank-lines.ndjson", [4, 5]),
                                         ("19-array.json", [4]), ("19-lines.csv", [5])])
def test_19_invalid_rows_name_their_line(name, lines):
    path = CASES / name
    with pytest.raises(sessionize.InvalidEventsError) as info:
        sessionize.run(str(path))
    assert [p["line"] for p in info.value.problems] == lines
    assert f"line {lines[0]}, row 2" in str(info.value)
    with sessionize.run(str(path), on_invalid="quarantine") as result:
        quarantine = result.quarantine.to_arrow().to_pylist()
    assert [(q["source_file"], q["source_line"]) for q in quarantine] == \
        [(str(path), line) for line in lines]


def test_19_several_files_and_parquet_name_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"userId": ["u", "u"], "timestamp": ["2024-01-01T00:00:00Z", "soon"]})
    for name in ("a.parquet", "b.parquet"):
        pq.write_table(table, tmp_path / name)
    with pytest.raises(sessionize.InvalidEventsError) as info:
        sessionize.run([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    assert [(p["file"], p["row"], p["line"]) for p in info.value.problems] == [
        (str(tmp_path / "a.parquet"), 2, None), (str(tmp_path / "b.parquet"), 2, None)]
    assert f"{str(tmp_path / 'b.parquet')!r} row 2:" in str(info.value)
    second = CASES / "19-blank-lines.ndjson"
    with sessionize.run([str(CASES / "09-dollar-keys.ndjson"), str(second)],
                        on_invalid="quarantine") as result:
        quarantine = result.quarantine.to_arrow().to_pylist()
    assert [(q["source_file"], q["source_line"], q["source_row"]) for q in quarantine] == [
        (str(second), 4, 2), (str(second), 5, 3)]


def test_10_an_input_without_rows_needs_no_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n")
    with sessionize.run(str(path), gap_by="context.device.type", gaps={"mobile": "5m"}) as result:
        assert (len(result.events), len(result.sessions)) == (0, 0)
    every_row_bad = tmp_path / "bad.tsv"  # the header is "   "; no record has one field
    every_row_bad.write_text("   \nuserId\ttimestamp\nu\t2024-01-01T00:00:00Z\n")
    assert run_both(every_row_bad) == (0, [("malformed_csv", 2), ("malformed_csv", 3)])


def test_2_a_blank_first_line_is_skipped_not_read_as_a_row():
    path = CASES / "02-blank-first-line.csv"
    with sessionize.run(str(path)) as result:
        assert result.events.to_arrow().select(["userId", "event"]).to_pylist() == [
            {"userId": "u", "event": "E"}]
        assert len(result.quarantine) == 0
