"""Rule flags and the TOML rules file (--config) of the command line."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from sessionize.cli.main import main

EVENTS = [
    {"userId": "u1", "event": "Application Opened", "timestamp": "2024-05-01T09:00:00Z",
     "messageId": "m1", "context": {"library": {"name": "analytics-ios"}}},
    {"userId": "u1", "event": "Clicked", "timestamp": "2024-05-01T09:07:00Z",
     "messageId": "m2", "context": {"library": {"name": "analytics.js"}}},
    {"userId": "u1", "event": "Application Opened", "timestamp": "2024-05-01T09:08:00Z",
     "messageId": "m3", "context": {"library": {"name": "analytics.js"}}},
]


def reasons(tmp_path, *flags) -> list:
    src = tmp_path / "events.json"
    src.write_text(json.dumps(EVENTS))
    out, err = io.StringIO(), io.StringIO()
    status = main(["run", str(src), "--out", str(tmp_path / "out"), "-q", *flags],
                  stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    return pq.read_table(tmp_path / "out" / "events.parquet").column("start_reason").to_pylist()


def test_no_flag_is_the_notebook_rule(tmp_path):
    assert reasons(tmp_path) == ["first_event", None, None]


def test_rule_flags(tmp_path):
    assert reasons(tmp_path, "--gap-by", "platform", "--gaps", "mobile=5m", "web=30m",
                   "--start-event", "Application Opened") == [
        "first_event", "inactivity", "start_event"]


def test_rules_file_and_flag_precedence(tmp_path):
    config = tmp_path / "rules.toml"
    config.write_text('profile = "mobile"\ngap = "1h"\n')
    assert reasons(tmp_path, "--config", str(config)) == ["first_event", None, "start_event"]
    assert reasons(tmp_path, "--config", str(config), "--gap", "5m") == [
        "first_event", "inactivity", "start_event"]


def test_bad_rules_file_is_a_usage_error(tmp_path):
    config = tmp_path / "rules.toml"
    config.write_text('gapp = "1h"\n')
    src = tmp_path / "events.json"
    src.write_text(json.dumps(EVENTS))
    err = io.StringIO()
    status = main(["run", str(src), "--out", str(tmp_path / "o"), "--config", str(config)],
                  stdout=io.StringIO(), stderr=err)
    assert status == 2
    assert "unknown keys gapp" in err.getvalue() and "valid keys" in err.getvalue()
