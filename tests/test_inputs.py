"""Every input kind gives the same answer; timestamps, nested paths and column names.

The same events (the notebook's six plus a few that exercise ties, an exact-gap
boundary and a user with three sessions) are fed as JSON array, NDJSON, gzip,
Segment's S3 layout, Parquet, CSV and in-memory tables; sessions, users and the
sessionized event columns must be identical for all of them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sessionize

UTC = dt.timezone.utc
CONTEXT = {"library": {"name": "analytics.js", "version": "4.1.0"}}


def _track(msg, user, anon, ts, event, **props):
    return {"type": "track", "event": event, "messageId": msg, "userId": user,
            "anonymousId": anon, "timestamp": ts, "properties": props, "context": CONTEXT}


with open(sessionize.sample_path()) as _fh:
    NOTEBOOK_EVENTS = json.load(_fh)

EXTRA_EVENTS = [
    # user_003: a tie on time, listed out of messageId order (msg_102 before msg_101) ...
    _track("msg_102", "user_003", None, "2024-01-03T12:00:00Z", "Second", step=2),
    _track("msg_101", "user_003", None, "2024-01-03T12:00:00Z", "First", step=1),
    # ... a gap of exactly 30m (same session), then 30m + 1s (new session) ...
    _track("msg_103", "user_003", None, "2024-01-03T12:30:00Z", "Third", step=3),
    _track("msg_104", "user_003", None, "2024-01-03T13:00:01Z", "Fourth", step=4),
    # ... and a third session the next day.
    _track("msg_105", "user_003", None, "2024-01-04T07:00:00Z", "Fifth", step=5),
    # anon_789: a duplicate delivery (same time, same messageId): input order decides.
    _track("msg_201", None, "anon_789", "2024-01-03T15:00:00Z", "Opened", step=1),
    _track("msg_201", None, "anon_789", "2024-01-03T15:00:00Z", "Closed", step=2),
]
EVENTS = NOTEBOOK_EVENTS + EXTRA_EVENTS

EVENT_COLUMNS = ["messageId", "resolved_user", "timestamp", "time_since_last_event",
                 "new_session", "session_id", "session_key", "start_reason"]
SESSION_COLUMNS = ["resolved_user", "session_id", "session_key", "session_start", "session_end",
                   "duration_seconds", "event_count", "start_reason", "first_event",
                   "last_event"]
USER_COLUMNS = ["resolved_user", "session_count", "event_count", "first_seen", "last_seen"]


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


# (resolved_user, session_id, start, end, duration_seconds, event_count, start_reason,
#  first_event, last_event), worked out by hand from EVENTS.
EXPECTED_SESSIONS = [
    ("anon_456", 1, "2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z", 0.0, 1, "first_event",
     "Feature Used", "Feature Used"),
    ("anon_789", 1, "2024-01-03T15:00:00Z", "2024-01-03T15:00:00Z", 0.0, 2, "first_event",
     "Opened", "Closed"),
    ("user_001", 1, "2024-01-01T09:00:00Z", "2024-01-01T09:02:00Z", 120.0, 2, "first_event",
     "identify", "Signup Completed"),
    ("user_001", 2, "2024-01-02T08:30:00Z", "2024-01-02T08:35:00Z", 300.0, 2, "inactivity",
     "Login", "Feature Used"),
    ("user_002", 1, "2024-01-02T10:05:00Z", "2024-01-02T10:05:00Z", 0.0, 1, "first_event",
     "identify", "identify"),
    ("user_003", 1, "2024-01-03T12:00:00Z", "2024-01-03T12:30:00Z", 1800.0, 3, "first_event",
     "First", "Third"),
    ("user_003", 2, "2024-01-03T13:00:01Z", "2024-01-03T13:00:01Z", 0.0, 1, "inactivity",
     "Fourth", "Fourth"),
    ("user_003", 3, "2024-01-04T07:00:00Z", "2024-01-04T07:00:00Z", 0.0, 1, "inactivity",
     "Fifth", "Fifth"),
]
EXPECTED_USERS = [
    ("anon_456", 1, 1, "2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z"),
    ("anon_789", 1, 2, "2024-01-03T15:00:00Z", "2024-01-03T15:00:00Z"),
    ("user_001", 2, 4, "2024-01-01T09:00:00Z", "2024-01-02T08:35:00Z"),
    ("user_002", 1, 1, "2024-01-02T10:05:00Z", "2024-01-02T10:05:00Z"),
    ("user_003", 3, 5, "2024-01-03T12:00:00Z", "2024-01-04T07:00:00Z"),
]


# --- writing the same events in every form ------------------------------------------------
def _arrow_table(events: list[dict]) -> pa.Table:
    # from_struct_array infers the schema from every row (from_pylist only looks at the first).
    return pa.Table.from_struct_array(pa.array(events))


def _chunks(events: list[dict], size: int = 4) -> list[list[dict]]:
    return [events[i:i + size] for i in range(0, len(events), size)]


def _ndjson_bytes(events: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def make_json_array(tmp: Path):
    path = tmp / "events.json"
    path.write_text(json.dumps(EVENTS, indent=2))
    return str(path)


def make_ndjson(tmp: Path):
    path = tmp / "events.ndjson"
    path.write_bytes(_ndjson_bytes(EVENTS))
    return str(path)


def make_ndjson_gz(tmp: Path):
    path = tmp / "events.ndjson.gz"
    path.write_bytes(gzip.compress(_ndjson_bytes(EVENTS)))
    return str(path)


def make_segment_s3_dir(tmp: Path):
    # Segment's S3 destination: segment-logs/<source>/<day>/<epoch>.gz, no .json extension.
    root = tmp / "segment-logs"
    for i, chunk in enumerate(_chunks(EVENTS)):
        folder = root / "src_abc" / f"2024-01-0{i + 1}"
        folder.mkdir(parents=True)
        (folder / f"17040{i}7200.gz").write_bytes(gzip.compress(_ndjson_bytes(chunk)))
    return str(root)


def make_parquet_file(tmp: Path):
    path = tmp / "events.parquet"
    pq.write_table(_arrow_table(EVENTS), path)
    return str(path)


def _parquet_parts(tmp: Path) -> Path:
    folder = tmp / "parts"
    folder.mkdir()
    # Each part infers its own schema (properties differ per part); union by name must cope.
    for i, chunk in enumerate(_chunks(EVENTS)):
        pq.write_table(_arrow_table(chunk), folder / f"part-{i:03d}.parquet")
    return folder


def make_parquet_dir(tmp: Path):
    return str(_parquet_parts(tmp))


def make_parquet_glob(tmp: Path):
    return str(_parquet_parts(tmp) / "part-*.parquet")


def make_csv(tmp: Path):
    path = tmp / "events.csv"
    pd.json_normalize(EVENTS).to_csv(path, index=False)
    return str(path)


def make_list_of_paths(tmp: Path):
    paths = []
    for i, chunk in enumerate(_chunks(EVENTS)):
        path = tmp / f"batch-{i}.ndjson"
        path.write_bytes(_ndjson_bytes(chunk))
        paths.append(str(path))
    return paths


def make_pandas(tmp: Path):
    return pd.json_normalize(EVENTS)  # flattened: "context.library.name", "properties.step"


def make_polars(tmp: Path):
    return pl.DataFrame(EVENTS, infer_schema_length=None)


def make_arrow(tmp: Path):
    return _arrow_table(EVENTS)


def make_duckdb(tmp: Path):
    path = tmp / "events.json"
    path.write_text(json.dumps(EVENTS))
    con = duckdb.connect()
    return con.read_json(str(path))  # DuckDB types the timestamps itself here


INPUT_KINDS = {
    "json_array": make_json_array,
    "ndjson": make_ndjson,
    "ndjson_gz": make_ndjson_gz,
    "segment_s3_dir": make_segment_s3_dir,
    "parquet_file": make_parquet_file,
    "parquet_dir": make_parquet_dir,
    "parquet_glob": make_parquet_glob,
    "csv": make_csv,
    "list_of_paths": make_list_of_paths,
    "pandas": make_pandas,
    "polars": make_polars,
    "arrow": make_arrow,
    "duckdb": make_duckdb,
}


def outputs(source, **options):
    with sessionize.run(source, **options) as result:
        return (result.events.to_arrow().select(EVENT_COLUMNS).to_pylist(),
                result.sessions.to_arrow().to_pylist(),
                result.users.to_arrow().to_pylist(),
                result.events.columns)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return outputs(make_json_array(tmp_path_factory.mktemp("reference")))


def test_reference_sessions_are_the_hand_worked_ones(reference):
    _, sessions, users, _ = reference
    assert [list(s) for s in map(dict.keys, sessions)][0] == SESSION_COLUMNS
    got = [(s["resolved_user"], s["session_id"], s["session_start"], s["session_end"],
            s["duration_seconds"], s["event_count"], s["start_reason"], s["first_event"],
            s["last_event"]) for s in sessions]
    assert got == [(u, n, t(a), t(b), *rest) for u, n, a, b, *rest in EXPECTED_SESSIONS]
    assert list(users[0]) == USER_COLUMNS
    assert [tuple(u.values()) for u in users] == [
        (u, sc, ec, t(a), t(b)) for u, sc, ec, a, b in EXPECTED_USERS]


def test_reference_events_break_ties_by_message_id_then_input_order(reference):
    events = reference[0]
    user_003 = [e for e in events if e["resolved_user"] == "user_003"]
    assert [e["messageId"] for e in user_003] == [
        "msg_101", "msg_102", "msg_103", "msg_104", "msg_105"]
    assert [e["time_since_last_event"] for e in user_003] == [
        None, minutes(0), minutes(30), minutes(30) + dt.timedelta(seconds=1),
        dt.timedelta(hours=18, seconds=-1)]
    assert [e["new_session"] for e in user_003] == [True, False, False, True, True]
    assert [e["start_reason"] for e in user_003] == [
        "first_event", None, None, "inactivity", "inactivity"]
    assert [e["session_id"] for e in user_003] == [1, 1, 1, 2, 3]
    keys = [e["session_key"] for e in user_003]
    assert keys[0] == keys[1] == keys[2] and len(set(keys)) == 3
    assert all(e["timestamp"].tzinfo is not None for e in events)


def test_events_carry_the_input_columns_then_the_output_contract(reference):
    columns = reference[3]
    assert columns[-7:] == ["resolved_user", "prev_timestamp", "time_since_last_event",
                            "new_session", "session_id", "session_key", "start_reason"]
    for name in ("type", "event", "messageId", "userId", "anonymousId", "timestamp",
                 "properties", "context", "traits"):
        assert name in columns


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_every_input_kind_gives_identical_results(kind, tmp_path, reference):
    events, sessions, users, _ = outputs(INPUT_KINDS[kind](tmp_path))
    ref_events, ref_sessions, ref_users, _ = reference
    assert sessions == ref_sessions
    assert users == ref_users
    assert events == ref_events


def test_stdin_gives_identical_results(reference):
    import io

    events, sessions, users, _ = outputs("-", stdin=io.BytesIO(_ndjson_bytes(EVENTS)))
    assert (events, sessions, users) == reference[:3]


def test_polars_lazyframe_is_accepted(reference):
    lazy = pl.DataFrame(EVENTS, infer_schema_length=None).lazy()
    assert outputs(lazy)[1] == reference[1]


def test_result_tables_convert_to_pandas_polars_arrow_and_html():
    with sessionize.run(_arrow_table(EVENTS)) as result:
        for table in (result.events, result.sessions, result.users, result.quarantine):
            assert isinstance(table.to_pandas(), pd.DataFrame)
            assert isinstance(table.to_polars(), pl.DataFrame)
            assert isinstance(table.to_arrow(), pa.Table)
            assert table.name in table._repr_html_()
        sessions = result.sessions.to_pandas()
        assert list(sessions.columns) == SESSION_COLUMNS
        assert len(sessions) == len(EXPECTED_SESSIONS)
        assert str(sessions["session_start"].dt.tz) == "UTC"
        assert list(result.users.to_polars().columns) == USER_COLUMNS
        assert len(result.quarantine) == 0


# --- timestamps -----------------------------------------------------------------------------
NINE_UTC = dt.datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
TIMESTAMP_FORMS = {
    "Z": ("2024-01-01T09:00:00Z", NINE_UTC),
    "+05:30": ("2024-01-01T14:30:00+05:30", NINE_UTC),
    "-05:00": ("2024-01-01T04:00:00-05:00", NINE_UTC),
    "+00:00": ("2024-01-01T09:00:00+00:00", NINE_UTC),
    "fraction": ("2024-01-01T09:00:00.25Z", NINE_UTC.replace(microsecond=250_000)),
    "micro": ("2024-01-01T09:00:00.123456Z", NINE_UTC.replace(microsecond=123_456)),
    "nanos truncated": ("2024-01-01T09:00:00.123456789Z", NINE_UTC.replace(microsecond=123_456)),
    "nanos not rounded up": ("2024-01-01T09:00:00.999999999+00:00",
                             NINE_UTC.replace(microsecond=999_999)),
    "offset and fraction": ("2024-01-01T10:00:00.5+01:00", NINE_UTC.replace(microsecond=500_000)),
    "naive is UTC": ("2024-01-01T09:00:00", NINE_UTC),
    "naive with space": ("2024-01-01 09:00:00", NINE_UTC),
    "epoch seconds": (1704099600, NINE_UTC),
    "epoch seconds, fractional": (1704099600.5, NINE_UTC.replace(microsecond=500_000)),
    "epoch ms": (1704099600000, NINE_UTC),
    "epoch ms, odd ms": (1704099600123, NINE_UTC.replace(microsecond=123_000)),
    "numeric string seconds": ("1704099600", NINE_UTC),
    "numeric string ms": ("1704099600000", NINE_UTC),
}


def _parsed(source, **options) -> list[dt.datetime]:
    with sessionize.run(source, **options) as result:
        rows = result.events.to_arrow().select(["userId", "timestamp"]).to_pylist()
    return [r["timestamp"] for r in sorted(rows, key=lambda r: r["userId"])]


@pytest.mark.parametrize("form", list(TIMESTAMP_FORMS))
def test_timestamp_form_normalises_to_utc(form, tmp_path):
    value, expected = TIMESTAMP_FORMS[form]
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps({"userId": "u", "timestamp": value}) + "\n")
    (got,) = _parsed(str(path))
    assert got == expected
    assert got.utcoffset() == dt.timedelta(0)


def test_mixed_timestamp_forms_in_one_file(tmp_path):
    # One column holding text and numbers alike: every form still parses the same way.
    path = tmp_path / "mixed.ndjson"
    forms = list(TIMESTAMP_FORMS.values())
    path.write_text("".join(json.dumps({"userId": f"u{i:02d}", "timestamp": value}) + "\n"
                            for i, (value, _) in enumerate(forms)))
    assert _parsed(str(path)) == [expected for _, expected in forms]
    # The same as a pandas object column mixing text and numbers.
    frame = pd.DataFrame({"userId": [f"u{i:02d}" for i in range(len(forms))],
                          "timestamp": pd.Series([value for value, _ in forms], dtype=object)})
    assert _parsed(frame) == [expected for _, expected in forms]


def test_timestamp_forms_in_csv(tmp_path):
    path = tmp_path / "forms.csv"
    forms = [v for v in TIMESTAMP_FORMS.values() if isinstance(v[0], str)]
    pd.DataFrame({"userId": [f"u{i:02d}" for i in range(len(forms))],
                  "timestamp": [value for value, _ in forms]}).to_csv(path, index=False)
    assert _parsed(str(path)) == [expected for _, expected in forms]


@pytest.mark.parametrize("unit, value", [("s", 1704099600), ("ms", 1704099600000),
                                         ("us", 1704099600000000)])
def test_explicit_timestamp_unit(unit, value):
    frame = pa.table({"userId": ["u"], "timestamp": [value]})
    assert _parsed(frame, timestamp_unit=unit) == [NINE_UTC]


def test_typed_timestamp_columns_keep_their_instant():
    instant = pd.Timestamp("2024-01-01T09:00:00Z").tz_convert("Asia/Kolkata")
    aware = pd.DataFrame({"userId": ["aware"], "timestamp": [instant.tz_convert("UTC")]})
    naive = pd.DataFrame({"userId": ["naive"],
                          "timestamp": [instant.tz_convert("UTC").tz_localize(None)]})
    kolkata = pd.DataFrame({"userId": ["kolkata"], "timestamp": [instant]})
    for source in (aware, naive, kolkata, pl.from_pandas(kolkata)):
        assert _parsed(source) == [NINE_UTC]


def test_nanosecond_datetime_columns_truncate_like_text(tmp_path):
    # The same instant as text and as a datetime64[ns] column must give the same microsecond.
    text = "2024-01-01T09:00:00.123456789Z"
    expected = NINE_UTC.replace(microsecond=123_456)
    aware = pd.DataFrame({"userId": ["u"], "timestamp": pd.to_datetime([text])})
    naive = aware.assign(timestamp=aware["timestamp"].dt.tz_localize(None))
    pq.write_table(pa.Table.from_pandas(aware), tmp_path / "ns.parquet")
    assert _parsed(pd.DataFrame({"userId": ["u"], "timestamp": [text]})) == [expected]
    assert _parsed(aware) == [expected]
    assert _parsed(naive) == [expected]
    assert _parsed(str(tmp_path / "ns.parquet")) == [expected]


# --- where the fields live ------------------------------------------------------------------
NESTED = [
    {"messageId": "n1", "timestamp": "2024-01-01T09:00:00Z", "event": "A",
     "context": {"traits": {"id": "T1"}, "library": {"name": "analytics.js"}}},
    {"messageId": "n2", "timestamp": "2024-01-01T09:10:00Z", "event": "B",
     "context": {"traits": {"id": "T1"}, "library": {"name": "analytics.js"}}},
    {"messageId": "n3", "timestamp": "2024-01-01T09:20:00Z", "event": "C",
     "context": {"traits": {"id": "T2"}, "library": {"name": "analytics-ios"}}},
]


def _sessions(source, **options) -> list[tuple]:
    with sessionize.run(source, **options) as result:
        return [(s["resolved_user"], s["session_id"], s["event_count"], s["first_event"],
                 s["last_event"]) for s in result.sessions.to_arrow().to_pylist()]


def test_dotted_user_id_resolves_into_structs(tmp_path):
    path = tmp_path / "nested.ndjson"
    path.write_bytes(_ndjson_bytes(NESTED))
    expected = [("T1", 1, 2, "A", "B"), ("T2", 1, 1, "C", "C")]
    assert _sessions(str(path), user_id="context.traits.id") == expected
    assert _sessions(_arrow_table(NESTED), user_id="context.traits.id") == expected
    # pandas json_normalize flattens to a column literally named "context.traits.id".
    assert _sessions(pd.json_normalize(NESTED), user_id="context.traits.id") == expected


def test_dotted_paths_for_event_and_timestamp(tmp_path):
    rows = [{"userId": "u", "messageId": f"m{i}", "timestamp": "not used",
             "meta": {"at": at, "name": name}}
            for i, (at, name) in enumerate([("2024-01-01T09:00:00Z", "Open"),
                                            ("2024-01-01T10:00:00Z", "Close")])]
    path = tmp_path / "meta.ndjson"
    path.write_bytes(_ndjson_bytes(rows))
    with sessionize.run(str(path), timestamp="meta.at", event="meta.name") as result:
        events = result.events.to_arrow().to_pylist()
        sessions = result.sessions.to_arrow().to_pylist()
    assert [e["timestamp"] for e in events] == [NINE_UTC, NINE_UTC + dt.timedelta(hours=1)]
    # The input's own top-level "timestamp" is kept, renamed, as it is not the one used.
    assert [e["input_timestamp"] for e in events] == ["not used", "not used"]
    assert [(s["session_id"], s["first_event"]) for s in sessions] == [(1, "Open"), (2, "Close")]


def test_flat_pandas_column_names_with_dots():
    frame = pd.json_normalize(NESTED)
    assert "context.library.name" in frame.columns
    assert _sessions(frame, user_id="context.library.name") == [
        ("analytics-ios", 1, 1, "C", "C"), ("analytics.js", 1, 2, "A", "B")]


def test_custom_column_names(tmp_path):
    rows = [
        {"uid": "u1", "aid": "a1", "ts": "2024-01-01T09:00:00Z", "mid": "x2", "name": "Two",
         "kind": "track"},
        {"uid": "u1", "aid": "a1", "ts": "2024-01-01T09:00:00Z", "mid": "x1", "name": None,
         "kind": "page"},
        {"uid": None, "aid": "a9", "ts": 1704103200, "mid": "x3", "name": "Three",
         "kind": "track"},
        {"uid": "u1", "aid": "a1", "ts": "2024-01-01T11:00:00Z", "mid": "x4", "name": "Four",
         "kind": "track"},
    ]
    path = tmp_path / "custom.ndjson"
    path.write_bytes(_ndjson_bytes(rows))
    options = dict(user_id="uid", anonymous_id="aid", timestamp="ts", message_id="mid",
                   event="name", type="kind")
    expected = [("a9", 1, 1, "Three", "Three"), ("u1", 1, 2, "page", "Two"),
                ("u1", 2, 1, "Four", "Four")]
    assert _sessions(str(path), **options) == expected
    assert _sessions(pd.DataFrame(rows), **options) == expected
    with sessionize.run(str(path), **options) as result:
        columns = result.events.columns
    assert "timestamp" not in columns and "ts" in columns  # the time stays under its own name


def test_columns_colliding_with_outputs_are_kept_as_input_columns():
    frame = pd.DataFrame({
        "userId": ["u", "u"],
        "timestamp": ["2024-01-01T09:00:00Z", "2024-01-01T09:10:00Z"],
        "session_id": ["sess-a", "sess-b"],
        "resolved_user": ["x", "y"],
        "new_session": ["no", "yes"],
        "start_reason": ["q", "r"],
    })
    with sessionize.run(frame) as result:
        events = result.events.to_arrow().to_pylist()
        columns = result.events.columns
    assert columns == ["userId", "timestamp", "input_session_id", "input_resolved_user",
                       "input_new_session", "input_start_reason", "resolved_user",
                       "prev_timestamp", "time_since_last_event", "new_session", "session_id",
                       "session_key", "start_reason"]
    assert [e["input_session_id"] for e in events] == ["sess-a", "sess-b"]
    assert [e["input_resolved_user"] for e in events] == ["x", "y"]
    assert [e["session_id"] for e in events] == [1, 1]
    assert [e["resolved_user"] for e in events] == ["u", "u"]
    assert [e["new_session"] for e in events] == [True, False]


@pytest.mark.parametrize("suffix", ["json", "ndjson"])
def test_keys_after_the_type_sample_are_kept(suffix, tmp_path, monkeypatch):
    # The table is parsed with the sample's keys while the whole input's keys are
    # collected; a key only seen after the sample makes it parse again with that key.
    from sessionize.io import inputs

    monkeypatch.setattr(inputs, "SAMPLE_OBJECTS", 3)
    rows = [{"userId": "u", "timestamp": f"2024-01-01T10:0{i}:00Z", "messageId": f"m{i}"}
            for i in range(6)]
    rows[4]["campaign"] = {"source": "mail"}
    rows[5]["score"] = 7
    path = tmp_path / f"events.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with sessionize.run(str(path)) as result:
        events = result.events.to_arrow()
    assert events.column_names[:5] == ["userId", "timestamp", "messageId", "campaign", "score"]
    assert json.loads(events["campaign"][4].as_py()) == {"source": "mail"}
    assert json.loads(events["score"][5].as_py()) == 7
    assert events["campaign"][0].as_py() is None


def test_malformed_object_after_the_type_sample_is_reported(tmp_path, monkeypatch):
    from sessionize.io import inputs

    monkeypatch.setattr(inputs, "SAMPLE_OBJECTS", 2)
    lines = [json.dumps({"userId": "u", "timestamp": "2024-01-01T10:00:00Z"})] * 5
    lines[3] = '{"userId": '
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(sessionize.MalformedJSONError) as info:
        sessionize.run(str(path))
    assert info.value.line == 4


@pytest.mark.parametrize("suffix", ["json", "ndjson"])
def test_objects_larger_than_duckdbs_default_buffer_are_read(suffix, tmp_path):
    # DuckDB's default buffer (faster for the usual small events) stops at 16-32 MiB
    # objects; such an input is read again with a 256 MiB buffer.
    blob = "x" * (40 << 20)
    rows = [{"userId": "u", "timestamp": "2024-01-01T10:00:00Z", "properties": {"blob": blob}},
            {"userId": "u", "timestamp": "2024-01-01T10:01:00Z"}]
    path = tmp_path / f"events.{suffix}"
    path.write_text(json.dumps(rows) if suffix == "json"
                    else "\n".join(json.dumps(r) for r in rows) + "\n")
    with sessionize.run(str(path)) as result:
        properties = result.events.to_arrow()["properties"].to_pylist()
    assert json.loads(properties[0]) == {"blob": blob}
    assert properties[1] is None
