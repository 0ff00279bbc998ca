"""Every option is declared once (sessionize.rules) and reaches a run the same way from
each door: Rules/Columns objects, run()'s flat keywords, CLI flags and a rules file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import sessionize
from sessionize.cli.main import build_parser, main
from sessionize.cli.options import rule_options
from sessionize.rules import COLUMN_OPTIONS, RULE_OPTIONS, Columns, Rules, options_table

ROOT = Path(__file__).resolve().parent.parent

#: One value per declared option (with what it needs beside it), chosen to change the
#: sessions where the option is a session rule. A new option must add its line here.
SAMPLES: dict[str, dict] = {
    "gap": {"gap": "10m"},
    "profile": {"profile": "saas"},
    "gap_by": {"gap_by": "platform", "gaps": {"web": "30m", "mobile": "5m"}},
    "gaps": {"gap_by": "context.library.name", "gaps": {"analytics.js": "1h"}},
    "midnight": {"midnight": "Europe/Berlin"},
    "timezone_column": {"midnight": "event", "timezone_column": "properties.tz"},
    "campaign": {"campaign": True},
    "campaign_columns": {"campaign": ["context.campaign.name"]},
    "start_events": {"start_events": ["Application Opened"]},
    "end_events": {"end_events": ["Application Backgrounded"]},
    "passive_events": {"passive_events": ["Heartbeat"]},
    "client_session": {"client_session": "context.sessionId"},
    "client_session_mode": {"client_session": "context.sessionId",
                            "client_session_mode": "compare"},
    "max_duration": {"max_duration": "20m"},
    "identity": {"identity": "stitch"},
    "identity_cap": {"identity": "graph", "identity_cap": 2},
    "user_change": {"identity": "stitch", "user_change": True},
    "enrich": {"enrich": True},
    "bounce": {"enrich": True, "bounce": "1m"},
    "first_last": {"first_last": ["event"]},
    "dedupe": {"dedupe": True},
    "clock_skew": {"clock_skew": "segment"},
    "user_id": {"user_id": "properties.uid"},
    "anonymous_id": {"anonymous_id": "properties.aid"},
    "timestamp": {"timestamp": "receivedAt"},
    "time_column": {"time_column": "originalTimestamp"},
    "timestamp_unit": {"timestamp_unit": "ms"},
    "message_id": {"message_id": "properties.mid"},
    "event": {"event": "properties.name"},
    "type": {"type": "properties.kind"},
    "previous_id": {"previous_id": "properties.prev"},
    "received_at": {"received_at": "sentAt", "dedupe": True},
    "sent_at": {"sent_at": "receivedAt", "clock_skew": "segment"},
    "original_timestamp": {"original_timestamp": "timestamp", "clock_skew": "segment"},
}
COLUMN_NAMES = {o.name for o in COLUMN_OPTIONS}
#: Options whose sample must change the sessions table against the notebook's rules
#: (the others change other tables, or only what a rule reads).
CHANGES_SESSIONS = {"gap", "profile", "gap_by", "gaps", "midnight", "timezone_column",
                    "campaign", "campaign_columns", "start_events", "end_events", "passive_events",
                    "client_session", "max_duration", "identity", "identity_cap",
                    "user_change", "enrich", "first_last", "dedupe", "clock_skew", "user_id",
                    "anonymous_id", "timestamp", "time_column"}


def events(seed: int = 7, n: int = 600) -> list[dict]:
    """Segment-like events that every option has something to act on."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 3, 30, 20, 0, tzinfo=dt.timezone.utc)
    names = ["Page Viewed", "Application Opened", "Application Backgrounded", "Heartbeat",
             "Order Completed"]
    libraries = ["analytics.js", "analytics-ios", "analytics-node"]
    zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"]
    out, clock = [], {}
    for i in range(n):
        user = rng.randrange(8)
        clock[user] = clock.get(user, start) + dt.timedelta(
            seconds=rng.choice([20, 60, 90, 120, 240, 400, 700, 1500, 2500, 7000, 30000]))
        ts = clock[user]
        identified = rng.random() < 0.6
        kind = "identify" if rng.random() < 0.1 else "track"
        event = {
            "type": kind, "event": rng.choice(names) if kind == "track" else None,
            "userId": f"u{user % 5}" if identified else None,
            "anonymousId": f"a{user}",
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
            "originalTimestamp": (ts - dt.timedelta(seconds=rng.choice([0, 5, 400])))
            .isoformat().replace("+00:00", "Z"),
            "sentAt": (ts + dt.timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
            "receivedAt": (ts + dt.timedelta(seconds=rng.choice([1, 3, 900])))
            .isoformat().replace("+00:00", "Z"),
            "messageId": f"m{i if rng.random() > 0.05 else i - 1}",
            "previousId": f"a{(user + 1) % 8}" if rng.random() < 0.03 else None,
            "context": {"library": {"name": libraries[user % 3]},
                        "sessionId": f"s{user}-{i // 40}",
                        "campaign": {"name": rng.choice(["spring", "summer"])},
                        "page": {"path": rng.choice(["/", "/pricing", "/docs"])}},
            "properties": {"uid": f"p{user % 4}", "aid": f"d{user}", "mid": f"x{n - i}",
                           "name": rng.choice(names), "kind": rng.choice(["track", "page"]),
                           "prev": f"d{(user + 3) % 8}", "tz": zones[user % 3]},
        }
        out.append(event)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("options") / "events.json"
    path.write_text(json.dumps(events()))
    return str(path)


def tables(result) -> dict:
    return {name: getattr(result, name).to_arrow()
            for name in ("events", "sessions", "users", "quarantine")}


def test_every_declared_option_has_a_sample():
    assert set(SAMPLES) - {"campaign_columns"} == {o.name for o in RULE_OPTIONS + COLUMN_OPTIONS}


def as_objects(sample: dict) -> dict:
    rules = {k: v for k, v in sample.items() if k not in COLUMN_NAMES}
    columns = {k: v for k, v in sample.items() if k in COLUMN_NAMES}
    return {"rules": Rules(**rules), "columns": Columns.from_options(**columns)}


@pytest.mark.parametrize("name", SAMPLES)
def test_objects_and_keywords_give_identical_tables(source, name):
    sample = SAMPLES[name]
    with sessionize.run(source, on_invalid="quarantine", **sample) as flat, \
            sessionize.run(source, on_invalid="quarantine", **as_objects(sample)) as objects:
        assert tables(objects) == tables(flat)
        assert objects.rules == flat.rules
        if name in CHANGES_SESSIONS:
            with sessionize.run(source, on_invalid="quarantine") as plain:
                assert tables(plain)["sessions"] != tables(flat)["sessions"], name


def _flags(sample: dict) -> list[str]:
    declared = {o.name: o for o in RULE_OPTIONS + COLUMN_OPTIONS}
    argv: list[str] = []
    for name, value in sample.items():
        option = declared[name]
        if option.kind == "flag" or (option.kind == "flag_or_names" and value is True):
            assert value is True
            argv.append(option.cli_flag)
        elif option.kind == "flag_or_names":
            argv += [option.cli_flag, *value]
        elif option.kind == "names":
            for item in value:
                argv += [option.cli_flag, item]
        elif option.kind == "pairs":
            argv += [option.cli_flag, *(f"{k}={v}" for k, v in value.items())]
        else:
            argv += [option.cli_flag, str(value)]
    return argv


def _toml(sample: dict) -> str:
    lines, tables_ = [], []
    for name, value in sample.items():
        if isinstance(value, dict):
            tables_.append(f"[{name}]\n" + "\n".join(f'"{k}" = "{v}"' for k, v in value.items()))
        else:
            lines.append(f"{name} = {json.dumps(value)}")  # JSON scalars and lists are TOML
    return "\n".join(lines + tables_) + "\n"


@pytest.mark.parametrize("door", ["flags", "config"])
@pytest.mark.parametrize("name", SAMPLES)
def test_cli_flags_and_rules_file_read_the_same_rules(tmp_path, name, door):
    sample = SAMPLES[name]
    if door == "flags":
        argv = _flags(sample)
    else:
        (tmp_path / "rules.toml").write_text(_toml(sample))
        argv = ["--config", str(tmp_path / "rules.toml")]
    args = build_parser().parse_args(["run", "x.json", "--out", "o", *argv])
    assert Rules.from_options(**rule_options(args)) == Rules.from_options(**sample)


def test_cli_run_with_flags_and_a_rules_file_gives_the_python_tables(source, tmp_path):
    sample = {"profile": "saas", "campaign": True, "identity": "stitch", "user_change": True,
              "passive_events": ["Heartbeat"], "timestamp": "receivedAt"}
    (tmp_path / "rules.toml").write_text(_toml({k: sample[k] for k in ("profile", "campaign")}))
    argv = ["--config", str(tmp_path / "rules.toml"),
            *_flags({k: v for k, v in sample.items() if k not in ("profile", "campaign")})]
    out = tmp_path / "out"
    assert main(["run", source, "--out", str(out), "-q", "--on-invalid", "quarantine",
                 *argv]) == 0
    with sessionize.run(source, on_invalid="quarantine", **sample) as result:
        for table in ("events", "sessions", "users"):
            assert pq.read_table(out / f"{table}.parquet") == getattr(result, table).to_arrow()


@pytest.mark.parametrize("given, message", [
    ({"rules": Rules(gap="1h"), "gap": "5m"}, "got rules= and gap='5m'"),
    ({"rules": "mobile", "midnight": "UTC"}, "got rules= and midnight='UTC'"),
    ({"columns": Columns(user_id="uid"), "timestamp": "ts"}, "got columns= and timestamp='ts'"),
    ({"rules": Rules(columns=Columns(user_id="uid")), "columns": Columns(event="name")},
     "give the columns once"),
    ({"engine": sessionize.DuckDB(), "threads": 2}, "got engine= and threads=2"),
    ({"engine": "duckdb", "spark": object()}, "'spark' (a SparkSession) needs engine='spark'"),
    ({"engine": "flink"}, "'engine' must be one of duckdb, spark, postgres"),
    ({"engine": "postgres"}, "engine='postgres' needs a dsn= or a connection="),
    ({"rules": 5}, "'rules' must be a sessionize.Rules"),
])
def test_an_object_and_its_keywords_together_are_refused(given, message):
    with pytest.raises(sessionize.OptionError) as info:
        sessionize.run(sessionize.sample_path(), **given)
    assert message in str(info.value)


def test_an_unknown_keyword_names_the_nearest_option():
    with pytest.raises(TypeError, match="(?s)unexpected keyword argument 'gaps_by'.*'gap_by'"):
        sessionize.run(sessionize.sample_path(), gaps_by="platform")  # type: ignore[call-arg]


def test_rules_accept_a_mapping_or_a_profile_name():
    path = sessionize.sample_path()
    with sessionize.run(path, rules={"gap": "1d"}) as a, \
            sessionize.run(path, rules=Rules(gap="1d")) as b:
        assert tables(a) == tables(b)
    with sessionize.run(path, rules="mobile") as a, sessionize.run(path, profile="mobile") as b:
        assert tables(a) == tables(b)


def test_engine_objects_match_their_keywords():
    path = sessionize.sample_path()
    with sessionize.run(path, engine=sessionize.DuckDB(plan="sql", threads=1)) as a, \
            sessionize.run(path, plan="sql", threads=1) as b:
        assert a.plan == b.plan == "sql"
        assert tables(a) == tables(b)
    with pytest.raises(sessionize.OptionError, match="'threads' must be a whole number"):
        sessionize.DuckDB(threads=0)
    with pytest.raises(sessionize.OptionError, match="'plan' must be one of"):
        sessionize.DuckDB(plan="fast")


def test_rules_are_normalised_values():
    assert Rules(gap="30m") == Rules() == Rules(gap=dt.timedelta(minutes=30)) == Rules(gap=1800)
    assert Rules(start_events="Application Opened").start_events == ("Application Opened",)
    assert Rules(profile="mobile", gap="10m").gap == dt.timedelta(minutes=10)
    assert repr(Rules(profile="mobile", gap="10m")).startswith("Rules(profile='mobile', gap='10m'")
    rules = Rules(profile="saas", identity="stitch", columns=Columns(user_id="uid"))
    assert Rules.from_options(**rules.to_options()) == dataclasses.replace(rules, profile=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rules().gap = dt.timedelta(minutes=5)  # type: ignore[misc]


def test_run_signature_lists_every_option():
    import inspect

    parameters = inspect.signature(sessionize.run).parameters
    for option in RULE_OPTIONS + COLUMN_OPTIONS:
        assert parameters[option.name].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_docs_option_table_is_the_declaration():
    text = (ROOT / "docs" / "rules.md").read_text()
    found = re.search(r"<!-- options:start -->\n(.*?)\n<!-- options:end -->", text, re.S)
    assert found, "docs/rules.md lost its option table markers"
    assert found.group(1).strip() == options_table().strip(), (
        "docs/rules.md's option table is stale: paste sessionize.rules.options_table()")
