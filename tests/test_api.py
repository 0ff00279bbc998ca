"""The public surface: exported names, keyword-only options, durations, result objects."""

from __future__ import annotations

import datetime as dt
import doctest

import pytest

import sessionize
from sessionize import durations, sample
from sessionize.analysis import agreement, mixture
from sessionize.analysis import thresholds as threshold_analysis
from sessionize.columnar import gaps
from sessionize.io import inputs
from sessionize.sql import compiler


def test_exported_members_are_locked():
    assert sorted(sessionize.__all__) == sorted([
        "Columns", "DataError", "DuckDB", "InputError", "InvalidEventsError",
        "MalformedJSONError", "OptionError", "OutputError", "Postgres", "Result", "Rules",
        "SessionizeError", "Spark", "StateError", "Table", "__version__", "parse_duration",
        "report", "run", "sample_path", "thresholds", "to_sql",
    ])
    for name in sessionize.__all__:
        assert hasattr(sessionize, name)


def test_errors_subclass_builtins():
    assert issubclass(sessionize.OptionError, ValueError)
    assert issubclass(sessionize.InvalidEventsError, sessionize.DataError)
    assert issubclass(sessionize.DataError, ValueError)
    assert issubclass(sessionize.OutputError, OSError)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        sessionize.run(sessionize.sample_path(), "30m")  # type: ignore[misc]


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("1d", 86400), ("500ms", 0.5), ("1w", 604800),
    (dt.timedelta(minutes=30), 1800), (45, 45), ("2h 5m", 7500), ("1.5h", 5400),
])
def test_durations(text, seconds):
    assert sessionize.parse_duration(text) == round(seconds * 1_000_000)


@pytest.mark.parametrize("bad", ["", "30", "m", "30 minutes", "1h-5m", "-5m", 0, True, None, [1]])
def test_bad_durations_name_the_value_and_the_choices(bad):
    with pytest.raises(sessionize.OptionError) as info:
        sessionize.parse_duration(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("module", [sessionize, durations, compiler, inputs, sample, agreement,
                                    sessionize.api, mixture, threshold_analysis, gaps])
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_result_tables_convert_and_display():
    with sessionize.run(sessionize.sample_path()) as result:
        assert len(result.events) == 6
        assert result.sessions.to_polars().height == 4
        assert list(result.users.to_pandas().columns) == [
            "resolved_user", "session_count", "event_count", "first_seen", "last_seen"]
        assert result.events.to_arrow().schema.field("time_since_last_event").type.unit == "us"
        page = result._repr_html_()
        assert "<table>" in page and "user_001" in page
        assert "4 sessions" in result.summary()
        assert "users" in repr(result.users)


def test_output_column_contract():
    with sessionize.run(sessionize.sample_path()) as result:
        assert result.events.columns[-7:] == [
            "resolved_user", "prev_timestamp", "time_since_last_event", "new_session",
            "session_id", "session_key", "start_reason"]
        assert result.sessions.columns == [
            "resolved_user", "session_id", "session_key", "session_start", "session_end",
            "duration_seconds", "event_count", "start_reason", "first_event", "last_event"]


def test_html_escapes_user_data(tmp_path):
    path = tmp_path / "e.json"
    path.write_text('[{"userId": "<b>x</b>", "timestamp": "2024-01-01T00:00:00Z",'
                    ' "event": "<script>alert(1)</script>"}]')
    with sessionize.run(str(path)) as result:
        page = result._repr_html_() + result.events._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("dialect", ["duckdb", "spark", "postgres", "snowflake", "bigquery"])
def test_rules_compile_for_every_dialect(dialect):
    with sessionize.run(sessionize.sample_path()) as result:
        for stage in ("assign", "events", "sessions", "users"):
            text = result.sql(stage, dialect)
            assert "EPOCH_US" not in text.upper() or dialect == "duckdb"
        assign = result.sql("assign", dialect)
    assert "LAG(" in assign and "1800000000" in assign
    if dialect in ("spark", "bigquery"):
        assert "UNIX_MICROS(" in assign


def test_to_sql_does_not_shadow_the_sql_package():
    import sessionize.sql.compiler

    assert sessionize.sql.compiler.compile_rules is not None
    assert callable(sessionize.to_sql) and not callable(sessionize.sql)
