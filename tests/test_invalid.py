"""Bad input: named precisely by default, set aside with a reason in quarantine mode."""

from __future__ import annotations

import gzip
import io
import json

import pandas as pd
import pytest

import sessionize
from sessionize import (
    DataError,
    InputError,
    InvalidEventsError,
    MalformedJSONError,
    OptionError,
)

GOOD_1 = {"messageId": "m1", "userId": "u1", "timestamp": "2024-01-01T09:00:00Z"}
BAD_TS = {"messageId": "m2", "userId": "u1", "timestamp": "next tuesday"}
NO_TS = {"messageId": "m3", "userId": "u1"}
NULL_TS = {"messageId": "m4", "userId": "u2", "timestamp": None}
NO_USER = {"messageId": "m5", "timestamp": "2024-01-01T09:05:00Z"}
BLANK_USER = {"messageId": "m6", "userId": "", "anonymousId": "  ",
              "timestamp": "2024-01-01T09:06:00Z"}
GOOD_2 = {"messageId": "m7", "userId": None, "anonymousId": "a1",
          "timestamp": "2024-01-01T09:10:00Z"}
ROWS = [GOOD_1, BAD_TS, NO_TS, NULL_TS, NO_USER, BLANK_USER, GOOD_2]
REASONS = {"m2": "invalid_timestamp", "m3": "missing_timestamp", "m4": "missing_timestamp",
           "m5": "missing_user", "m6": "missing_user"}


def write_ndjson(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def single_error(tmp_path, row: dict) -> InvalidEventsError:
    path = write_ndjson(tmp_path / "events.ndjson", [GOOD_1, row])
    with pytest.raises(InvalidEventsError) as info:
        sessionize.run(path)
    return info.value


# --- raise (the default) ------------------------------------------------------------------
def test_bad_timestamp_names_row_message_id_field_value_and_accepted_forms(tmp_path):
    error = single_error(tmp_path, BAD_TS)
    text = str(error)
    assert "row 2" in text
    assert "'m2'" in text and "messageId" in text
    assert "timestamp" in text and "'next tuesday'" in text
    assert "ISO-8601" in text and "epoch seconds or milliseconds" in text
    assert "quarantine" in text  # says how to go on anyway
    assert isinstance(error, DataError) and isinstance(error, ValueError)
    assert error.count == 1
    assert error.problems == [{
        "row": 2, "file": error.problems[0]["file"], "line": 2, "message_id": "m2",
        "field": "timestamp", "value": "next tuesday", "reason": "invalid_timestamp",
        "message": error.problems[0]["message"]}]
    assert error.problems[0]["file"].endswith(".ndjson")


@pytest.mark.parametrize("row", [NO_TS, NULL_TS], ids=["absent", "null"])
def test_missing_timestamp_is_named(tmp_path, row):
    error = single_error(tmp_path, row)
    assert f"row 2 (messageId {row['messageId']!r})" in str(error)
    assert "timestamp is missing" in str(error)
    assert error.problems[0]["reason"] == "missing_timestamp"
    assert error.problems[0]["field"] == "timestamp"


@pytest.mark.parametrize("row", [
    NO_USER,
    BLANK_USER,
    {"messageId": "m8", "userId": " ", "timestamp": "2024-01-01T09:06:00Z"},
    {"messageId": "m9", "anonymousId": "", "timestamp": "2024-01-01T09:06:00Z"},
], ids=["absent", "empty and spaces", "space", "empty anonymous"])
def test_no_user_is_named(tmp_path, row):
    error = single_error(tmp_path, row)
    text = str(error)
    assert f"row 2 (messageId {row['messageId']!r})" in text
    assert "neither userId nor anonymousId is set" in text
    assert "non-empty userId or anonymousId" in text
    assert error.problems[0]["reason"] == "missing_user"
    assert error.problems[0]["field"] == "userId/anonymousId"


@pytest.mark.parametrize("value", ["infinity", "-infinity", "epoch", "now", "today", "",
                                   "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", "12:00"])
def test_words_and_impossible_dates_are_not_timestamps(tmp_path, value):
    error = single_error(tmp_path, {**BAD_TS, "timestamp": value})
    assert error.problems[0]["reason"] in ("invalid_timestamp", "missing_timestamp")
    if value.strip():
        assert error.problems[0]["reason"] == "invalid_timestamp"
        assert repr(value) in str(error)


def test_every_invalid_row_is_counted_and_the_first_few_named(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", ROWS)
    with pytest.raises(InvalidEventsError) as info:
        sessionize.run(path)
    error = info.value
    assert error.count == 5
    assert "5 invalid events" in str(error)
    assert [(p["row"], p["message_id"], p["reason"]) for p in error.problems] == [
        (2, "m2", "invalid_timestamp"), (3, "m3", "missing_timestamp"),
        (4, "m4", "missing_timestamp"), (5, "m5", "missing_user"), (6, "m6", "missing_user")]


def test_row_numbers_in_a_json_array_and_a_dataframe(tmp_path):
    path = tmp_path / "events.json"
    path.write_text(json.dumps([GOOD_1, GOOD_2, BAD_TS]))
    with pytest.raises(InvalidEventsError, match=r"row 3 \(messageId 'm2'\)"):
        sessionize.run(str(path))
    with pytest.raises(InvalidEventsError, match=r"row 3 \(messageId 'm2'\)"):
        sessionize.run(pd.DataFrame([GOOD_1, GOOD_2, BAD_TS]))


def test_row_without_message_id_is_still_named_by_row(tmp_path):
    row = {"userId": "u1", "timestamp": "soon"}
    error = single_error(tmp_path, row)
    assert "row 2: timestamp 'soon' is not a time" in str(error)
    assert error.problems[0]["message_id"] is None


# --- quarantine ---------------------------------------------------------------------------
def test_quarantine_sets_bad_rows_aside_with_reasons_and_processes_the_rest(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", ROWS)
    with sessionize.run(path, on_invalid="quarantine") as result:
        events = result.events.to_arrow().to_pylist()
        quarantine = result.quarantine.to_arrow().to_pylist()
        sessions = result.sessions.to_arrow().to_pylist()
        assert "quarantined rows" in result.summary()
    assert [e["messageId"] for e in events] == ["m1", "m7"]
    assert [(s["resolved_user"], s["event_count"]) for s in sessions] == [("a1", 1), ("u1", 1)]
    assert {q["messageId"]: q["quarantine_reason"] for q in quarantine} == REASONS
    assert [q["source_row"] for q in quarantine] == [2, 3, 4, 5, 6]
    # The offending value is kept as it was, for inspection.
    assert [q["timestamp"] for q in quarantine][:2] == ["next tuesday", None]
    assert len(events) + len(quarantine) == len(ROWS)  # nothing dropped silently


def test_quarantine_of_a_dataframe():
    frame = pd.DataFrame([GOOD_1, BAD_TS, NO_USER, GOOD_2])
    with sessionize.run(frame, on_invalid="quarantine") as result:
        assert len(result.events) == 2
        quarantine = result.quarantine.to_pandas()
    assert quarantine["quarantine_reason"].tolist() == ["invalid_timestamp", "missing_user"]
    assert quarantine["messageId"].tolist() == ["m2", "m5"]


def test_quarantine_of_only_bad_rows_leaves_empty_tables(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", [BAD_TS, NO_USER])
    with sessionize.run(path, on_invalid="quarantine") as result:
        assert (len(result.events), len(result.sessions), len(result.users)) == (0, 0, 0)
        assert len(result.quarantine) == 2


def test_clean_input_has_an_empty_quarantine(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", [GOOD_1, GOOD_2])
    with sessionize.run(path, on_invalid="quarantine") as result:
        assert len(result.quarantine) == 0
        assert "quarantine_reason" in result.quarantine.columns


# --- malformed JSON -------------------------------------------------------------------------
MALFORMED_LINES = [
    json.dumps(GOOD_1),
    "",  # blank lines are skipped, not errors, and still count for line numbers
    '{"messageId": "m8", "userId": "u1", "timestamp": oops}',
    json.dumps(GOOD_2),
    "[1, 2]",  # valid JSON, but not an object
]


def test_malformed_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(MALFORMED_LINES) + "\n")
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run(str(path))
    assert info.value.line == 3
    assert info.value.path == str(path)
    assert "line 3" in str(info.value) and "oops" in str(info.value)
    assert isinstance(info.value, DataError)


def test_malformed_line_in_gzip_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "1704067200.gz"
    path.write_bytes(gzip.compress(("\n".join(MALFORMED_LINES) + "\n").encode()))
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run(str(path))
    assert info.value.line == 3


def test_malformed_line_in_the_second_file(tmp_path):
    first = write_ndjson(tmp_path / "a.ndjson", [GOOD_1, GOOD_2])
    second = tmp_path / "b.ndjson"
    second.write_text(json.dumps(GOOD_1) + "\n{not json\n")
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run([first, str(second)])
    assert (info.value.path, info.value.line) == (str(second), 2)


def test_malformed_json_array_is_reported_with_its_line(tmp_path):
    path = tmp_path / "events.json"
    path.write_text('[\n  {"userId": "u", "timestamp": "2024-01-01"},\n  {"userId": }\n]\n')
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run(str(path), on_invalid="quarantine")
    assert info.value.line == 3


def test_malformed_lines_are_quarantined_with_line_and_text(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(MALFORMED_LINES) + "\n")
    with sessionize.run(str(path), on_invalid="quarantine") as result:
        events = result.events.to_arrow().to_pylist()
        quarantine = result.quarantine.to_arrow().to_pylist()
    assert [e["messageId"] for e in events] == ["m1", "m7"]
    assert [(q["quarantine_reason"], q["source_file"], q["source_line"], q["raw_line"])
            for q in quarantine] == [
        ("malformed_json", str(path), 3, MALFORMED_LINES[2]),
        ("malformed_json", str(path), 5, "[1, 2]"),
    ]


def test_stdin_errors_name_stdin_not_a_temporary_file():
    data = ("\n".join(MALFORMED_LINES) + "\n").encode()
    with pytest.raises(MalformedJSONError) as info:
        sessionize.run("-", stdin=io.BytesIO(data))
    assert info.value.line == 3
    assert info.value.path == "<stdin>"
    assert "<stdin>" in str(info.value)
    with sessionize.run("-", stdin=io.BytesIO(data), on_invalid="quarantine") as result:
        lines = result.quarantine.to_arrow().select(["source_file", "source_line"]).to_pylist()
    assert lines == [{"source_file": "<stdin>", "source_line": 3},
                     {"source_file": "<stdin>", "source_line": 5}]
    bad = (json.dumps(GOOD_1) + "\n" + json.dumps(BAD_TS) + "\n").encode()
    with pytest.raises(InvalidEventsError, match=r"invalid event in <stdin>"):
        sessionize.run("-", stdin=io.BytesIO(bad))


def test_bad_rows_and_malformed_lines_together(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join([json.dumps(GOOD_1), "{", json.dumps(NO_USER)]) + "\n")
    with sessionize.run(str(path), on_invalid="quarantine") as result:
        reasons = sorted(result.quarantine.to_pandas()["quarantine_reason"])
        assert len(result.events) == 1
    assert reasons == ["malformed_json", "missing_user"]


# --- missing columns ----------------------------------------------------------------------
def test_no_user_column_names_the_available_columns():
    frame = pd.DataFrame({"who": ["x"], "timestamp": ["2024-01-01T09:00:00Z"], "extra": [1]})
    with pytest.raises(InputError) as info:
        sessionize.run(frame)
    text = str(info.value)
    assert "'userId'" in text and "'anonymousId'" in text
    assert "who, timestamp, extra" in text
    assert "user_id=" in text


def test_no_timestamp_column_names_the_available_columns(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", [{"userId": "u", "when": "2024-01-01"}])
    with pytest.raises(InputError) as info:
        sessionize.run(path)
    text = str(info.value)
    assert "'timestamp'" in text
    assert "userId, when" in text
    assert "timestamp=" in text


def test_a_named_column_that_does_not_exist(tmp_path):
    path = write_ndjson(tmp_path / "events.ndjson", [GOOD_1])
    with pytest.raises(InputError, match="(?s)'sent_at'.*messageId, userId, timestamp"):
        sessionize.run(path, timestamp="sent_at")
    # A dotted path into a column that is not a struct is missing too.
    with pytest.raises(InputError, match="'userId.id'"):
        sessionize.run(path, user_id="userId.id", anonymous_id="nope")


def test_missing_input_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        sessionize.run(str(tmp_path / "nope.ndjson"))


def test_unknown_extension(tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match=r"\.xlsx"):
        sessionize.run(str(path))


# --- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("options, named, allowed", [
    ({"gap": "abc"}, "'abc'", "'30m'"),
    ({"gap": "30 minutes"}, "'30 minutes'", "'1h30m'"),
    ({"gap": 0}, "(got 0)", "positive"),
    ({"gap": "-5m"}, "'-5m'", "'30m'"),
    ({"gap": True}, "True", "'30m'"),
    ({"on_invalid": "drop"}, "'drop'", "raise, quarantine"),
    ({"timestamp_unit": "h"}, "'h'", "auto, s, ms, us"),
    ({"user_id": ""}, "''", "non-empty column name"),
])
def test_bad_options_raise_option_error(tmp_path, options, named, allowed):
    path = write_ndjson(tmp_path / "events.ndjson", [GOOD_1])
    with pytest.raises(OptionError) as info:
        sessionize.run(path, **options)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, DataError)
    assert named in str(info.value)
    assert allowed in str(info.value)
    assert next(iter(options)) in str(info.value)  # names the option too


def test_bad_source_type():
    with pytest.raises(OptionError, match="got int"):
        sessionize.run([42])
    with pytest.raises(OptionError, match="empty list"):
        sessionize.run([])
