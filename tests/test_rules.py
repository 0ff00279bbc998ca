"""Options of the rules beyond the notebook's: validation, defaults, data checks."""

from __future__ import annotations

import json

import pytest

import sessionize
from sessionize.rules import PROFILES, Rules


def write(tmp_path, events) -> str:
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events))
    return str(path)


def test_no_rule_given_keeps_the_notebook_rule():
    assert Rules.from_options().plain
    assert Rules.from_options(gap="5m").plain


@pytest.mark.parametrize("options, message", [
    ({"profile": "tv"}, "'profile' must be one of web, mobile, saas (got 'tv')"),
    ({"midnight": "Mars/Base"}, "IANA time zone"),
    ({"gaps": {"web": "30m"}}, "'gaps' needs 'gap_by'"),
    ({"gap_by": "platform", "gaps": {"web": "soon"}}, "gaps['web']"),
    ({"start_events": [1]}, "'start_events' must be a list of event names"),
])
def test_bad_rule_options_name_the_value_and_the_choices(options, message):
    with pytest.raises(sessionize.OptionError) as info:
        sessionize.run(sessionize.sample_path(), **options)
    assert message in str(info.value)


def test_explicit_options_override_a_profile():
    rules = Rules.from_options(profile="mobile", gap="10m")
    assert rules.gap_us == 600_000_000
    assert rules.start_events == PROFILES["mobile"]["start_events"]


def test_a_named_rule_column_must_exist(tmp_path):
    path = write(tmp_path, [{"userId": "u", "timestamp": "2024-01-01T00:00:00Z"}])
    with pytest.raises(sessionize.InputError) as info:
        sessionize.run(path, client_session="context.sessionId")
    assert "context.sessionId" in str(info.value)


def test_segment_default_rule_columns_may_be_absent(tmp_path):
    path = write(tmp_path, [{"userId": "u", "timestamp": "2024-01-01T00:00:00Z"}])
    with sessionize.run(path, profile="saas", campaign=True, midnight="event") as result:
        assert len(result.sessions) == 1


def test_unknown_event_time_zone_is_invalid_data(tmp_path):
    path = write(tmp_path, [
        {"userId": "u", "timestamp": "2024-01-01T00:00:00Z", "messageId": "ok",
         "context": {"timezone": "Europe/Paris"}},
        {"userId": "u", "timestamp": "2024-01-01T00:05:00Z", "messageId": "bad",
         "context": {"timezone": "Mars/Base"}},
    ])
    with pytest.raises(sessionize.InvalidEventsError) as info:
        sessionize.run(path, midnight="event")
    assert "bad" in str(info.value) and "Mars/Base" in str(info.value)
    with sessionize.run(path, midnight="event", on_invalid="quarantine") as result:
        rows = result.quarantine.to_arrow().to_pylist()
    assert [(r["messageId"], r["quarantine_reason"]) for r in rows] == [
        ("bad", "invalid_timezone")]


@pytest.mark.parametrize("dialect", ["duckdb", "spark", "snowflake", "bigquery"])
def test_rules_compile_to_other_dialects(dialect):
    with sessionize.run(sessionize.sample_path(), profile="saas", campaign=True,
                        start_events=["Login"], end_events=["Logout"],
                        client_session="properties.feature") as result:
        assign = result.sql("assign", dialect)
    for reason in ("'inactivity'", "'midnight'", "'campaign_change'", "'start_event'",
                   "'client_session'"):
        assert reason in assign


def test_start_reasons_are_documented():
    from pathlib import Path

    from sessionize.rules import START_REASONS

    docs = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    for reason in START_REASONS:
        assert f"`{reason}`" in docs


def test_client_session_agreement_counts_splits_and_merges():
    from sessionize.analysis.agreement import client_session_agreement

    events = [
        {"userId": "u", "timestamp": "2024-01-01T09:00:00Z", "messageId": "1", "sid": "a"},
        {"userId": "u", "timestamp": "2024-01-01T09:05:00Z", "messageId": "2", "sid": "b"},
        {"userId": "u", "timestamp": "2024-01-01T11:00:00Z", "messageId": "3", "sid": "b"},
        {"userId": "u", "timestamp": "2024-01-01T13:00:00Z", "messageId": "4", "sid": "c"},
    ]
    with sessionize.run(events, client_session="sid", client_session_mode="compare") as result:
        assert len(result.sessions) == 3  # compare mode does not split
        agreement = client_session_agreement(result)
    # a and b share the first derived session (merged); b spans two (split); c matches
    assert agreement == {"client_sessions": 3, "derived_sessions": 3, "split": 1,
                         "merged": 1, "identical": 1}
    with sessionize.run(events) as plain, pytest.raises(sessionize.OptionError):
        client_session_agreement(plain)


#: One person on three devices (u1) and a kiosk shared by two (u2, u3).
DEVICES = [
    {"anonymousId": "phone", "timestamp": "2024-05-01T08:00:00Z"},
    {"anonymousId": "phone", "userId": "u1", "timestamp": "2024-05-01T08:05:00Z"},
    {"anonymousId": "laptop", "userId": "u1", "timestamp": "2024-05-01T09:00:00Z"},
    {"anonymousId": "tablet", "userId": "u1", "timestamp": "2024-05-01T10:00:00Z"},
    {"anonymousId": "kiosk", "userId": "u2", "timestamp": "2024-05-01T11:00:00Z"},
    {"anonymousId": "kiosk", "userId": "u3", "timestamp": "2024-05-01T12:00:00Z"},
    {"anonymousId": "kiosk", "timestamp": "2024-05-01T12:01:00Z"},
]


def test_identities_table_and_diagnostics(tmp_path):
    events = DEVICES
    with sessionize.run(events, identity="stitch") as result:
        rows = result.identities.to_arrow().sort_by("identifier").to_pylist()
        assert [(r["identifier"], r["resolved_user"], r["rule"]) for r in rows] == [
            ("kiosk", "u3", "latest_identification"), ("laptop", "u1", "latest_identification"),
            ("phone", "u1", "latest_identification"), ("tablet", "u1", "latest_identification")]
        diagnostics = result.identity_diagnostics()
        assert diagnostics["anonymous_ids_stitched"] == 4
        assert diagnostics["events_reattributed"] == 2
        assert diagnostics["shared_devices"] == 1
        assert diagnostics["users_on_3_or_more_devices"] == 1
        assert "4 anonymous ids stitched" in result.summary()
        written = result.write(tmp_path / "out")
    assert any(path.endswith("identities.parquet") for path in written)
    with sessionize.run(events) as plain:
        assert plain.identities is None
