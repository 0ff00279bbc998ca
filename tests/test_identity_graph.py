"""The identity graph (identity="graph"), user_change and the identity diagnostics.

The engine is checked against the reference union-find (tests/reference.py) on generated
graphs: alias chains, shared devices, users on several devices, ids that are a userId in
one event and an anonymousId in another, blank ids, and every cap from 1 to 3.
"""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import Event, Options, graph_identities
from reference import sessionize as reference
from test_properties import BASE_US, examples
from test_rules import DEVICES

import sessionize
from sessionize import OptionError
from sessionize.cli.main import main
from sessionize.sql.identity import DuckDBRunner, propagate

USERS = ["u1", "u2", "u3", "u4"]
ANONS = ["a1", "a2", "a3", "a4", "u1", " "]  # "u1" also as an anonymousId; " " is blank
NAMES = ["Viewed", "Clicked", None]


@st.composite
def graph_streams(draw, *, unique_ids: bool = False):
    """Small streams over few ids, so that links chain, devices are shared and aliases
    join people; every event shape Segment sends (anonymous, identified, server-side,
    alias calls with and without an anonymousId)."""
    gap = draw(st.sampled_from([60_000_000, 1_800_000_000]))
    options = Options(identity="graph", identity_cap=draw(st.sampled_from([1, 2, 3])),
                      user_change=draw(st.booleans()))
    events = []
    for row in range(draw(st.integers(1, 30))):
        shape = draw(st.sampled_from(["anonymous", "identified", "identified", "user",
                                      "alias"]))
        offset = draw(st.one_of(st.integers(0, 6) .map(lambda k: k * gap),
                                st.integers(0, 6 * gap)))
        message_id = f"m{row:03d}" if unique_ids else draw(
            st.sampled_from([f"m{row:03d}", None]))
        user = draw(st.sampled_from(USERS)) if shape != "anonymous" else None
        anon = draw(st.sampled_from(ANONS)) if shape in ("anonymous", "identified") else None
        kind = previous = None
        name = draw(st.sampled_from(NAMES))
        if shape == "alias":
            kind = draw(st.sampled_from(["alias", "Alias"]))
            previous = draw(st.sampled_from(USERS + ANONS + [None]))
            anon = draw(st.sampled_from(ANONS + [None]))
            name = kind
        events.append(Event(row, BASE_US + offset, user, anon, message_id, name, kind=kind,
                            previous_id=previous))
    return gap, options, events


def to_table(events: list[Event]) -> pa.Table:
    return pa.table({
        "row": pa.array([e.row for e in events], pa.int64()),
        "userId": pa.array([e.user_id for e in events], pa.string()),
        "anonymousId": pa.array([e.anonymous_id for e in events], pa.string()),
        "previousId": pa.array([e.previous_id for e in events], pa.string()),
        "messageId": pa.array([e.message_id for e in events], pa.string()),
        "type": pa.array([e.kind for e in events], pa.string()),
        "event": pa.array([None if e.kind else e.name for e in events], pa.string()),
        "timestamp": pa.array([e.ts_us for e in events], pa.timestamp("us", tz="UTC")),
    })


def run_graph(gap: int, options: Options, table: pa.Table) -> dict:
    with sessionize.run(table, gap=f"{gap}us", identity="graph",
                        identity_cap=options.identity_cap, user_change=options.user_change,
                        on_invalid="quarantine") as result:
        events = sorted((e["row"], e["resolved_user"], e["session_id"], e["start_reason"])
                        for e in result.events.to_arrow().to_pylist())
        sessions = [(s["resolved_user"], s["session_id"], s["start_reason"], s["event_count"])
                    for s in result.sessions.to_arrow().to_pylist()]
        identities = {r["identifier"]: (r["resolved_user"], r["rule"])
                      for r in result.identities.to_arrow().to_pylist()}
    return {"events": events, "sessions": sessions, "identities": identities}


@examples(400)
@given(graph_streams())
def test_graph_matches_the_reference_union_find(case):
    gap, options, events = case
    got = run_graph(gap, options, to_table(events))
    want = reference(events, gap, options)
    assert got["identities"] == graph_identities(events, options.identity_cap)
    assert got["events"] == sorted((e["row"], e["resolved_user"], e["session_id"],
                                    e["start_reason"]) for e in want["events"])
    assert got["sessions"] == [(s["resolved_user"], s["session_id"], s["start_reason"],
                                s["event_count"]) for s in want["sessions"]]


@examples(150)
@given(graph_streams(unique_ids=True), st.randoms(use_true_random=False))
def test_graph_does_not_depend_on_row_order(case, rnd: random.Random):
    gap, options, events = case
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert run_graph(gap, options, to_table(shuffled)) == run_graph(gap, options,
                                                                    to_table(events))


# -- label propagation -----------------------------------------------------------------------
class CountingRunner(DuckDBRunner):
    def __init__(self, con):
        super().__init__(con)
        self.created: list[str] = []

    def create(self, name: str, sql: str) -> None:
        self.created.append(name)
        super().create(name, sql)


@pytest.mark.parametrize("length", [1, 2, 7, 1000])
def test_a_chain_converges_in_logarithmic_rounds(length):
    import duckdb

    con = duckdb.connect()
    # a path 0 - 1 - ... - length, numbered so that the smallest label starts at one end
    con.execute(f"CREATE TABLE chain AS SELECT lpad(CAST(i AS VARCHAR), 5, '0') AS a, "
                f"lpad(CAST(i + 1 AS VARCHAR), 5, '0') AS b FROM range({length}) AS t(i)")
    con.execute("CREATE TABLE edges AS SELECT a, b FROM chain UNION ALL SELECT b, a FROM chain")
    runner = CountingRunner(con)
    labels = propagate(runner, "edges", "labels")
    assert con.execute(f"SELECT count(*), count(DISTINCT label), min(label) FROM {labels}"
                       ).fetchall() == [(length + 1, 1, "00000")]
    assert len(runner.created) - 1 <= 2 + length.bit_length()


def test_two_components_get_their_smallest_node():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE e AS SELECT * FROM (VALUES ('d', 'c'), ('c', 'b'), ('z', 'y')) "
                "AS t(a, b)")
    con.execute("CREATE TABLE edges AS SELECT a, b FROM e UNION ALL SELECT b, a FROM e")
    labels = propagate(DuckDBRunner(con), "edges", "labels")
    assert dict(con.execute(f"SELECT node, label FROM {labels}").fetchall()) == {
        "b": "b", "c": "b", "d": "b", "y": "y", "z": "y"}


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [0, -1, True, "2", 1.5])
def test_a_bad_cap_names_the_option_and_the_value(cap):
    with pytest.raises(OptionError, match=r"'identity_cap' must be a whole number .*\(got"):
        sessionize.run(sessionize.sample_path(), identity="graph", identity_cap=cap)


def test_the_cap_needs_the_graph():
    with pytest.raises(OptionError, match=r"applies to identity='graph' only.*\n.*Hint"):
        sessionize.run(sessionize.sample_path(), identity="stitch", identity_cap=2)


def test_user_change_must_be_a_boolean():
    with pytest.raises(OptionError, match=r"'user_change' must be True or False \(got 'yes'\)"):
        sessionize.run(sessionize.sample_path(), user_change="yes")


def test_unknown_policy_lists_graph():
    with pytest.raises(OptionError, match="event, stitch, first, graph"):
        sessionize.run(sessionize.sample_path(), identity="graf")


SHARED = [
    *DEVICES,
    {"type": "alias", "previousId": "u1_old", "userId": "u1",
     "timestamp": "2024-05-01T10:30:00Z"},
    {"anonymousId": "desk", "userId": "u1_old", "timestamp": "2024-05-01T07:30:00Z"},
]


def test_graph_identities_table_and_diagnostics(tmp_path):
    with sessionize.run(SHARED, identity="graph") as result:
        rows = result.identities.to_arrow().sort_by("identifier").to_pylist()
        assert [(r["identifier"], r["resolved_user"], r["rule"], r["user_ids"])
                for r in rows] == [
            ("desk", "u1_old", "component", 1), ("kiosk", "u3", "shared_device", 2),
            ("laptop", "u1_old", "component", 1), ("phone", "u1_old", "component", 1),
            ("tablet", "u1_old", "component", 1), ("u1", "u1_old", "component", 0),
            ("u1_old", "u1_old", "component", 0)]
        d = result.identity_diagnostics()
        assert d["anonymous_ids_stitched"] == 5
        # the phone's and kiosk's anonymous events, and u1's four events
        assert d["events_reattributed"] == 6
        assert d["shared_devices"] == 1
        assert d["users_on_3_or_more_devices"] == 1
        assert d["most_devices"] == [("u1_old", 4), ("u3", 1)]
        assert d["component_sizes"] == {6: 1}
        assert d["largest_components"] == [{"resolved_user": "u1_old", "identifiers": 6,
                                            "user_ids": 2, "anonymous_ids": 4}]
        summary = result.summary()
        assert "5 anonymous ids stitched, 6 events re-attributed, 1 shared devices (seen " \
               "with more than 1 person: not merged)" in summary
        assert "largest: u1_old with 6 ids (2 userIds, 4 anonymousIds)" in summary
        written = result.write(tmp_path / "out")
    assert any(path.endswith("identities.parquet") for path in written)
    with sessionize.run(SHARED, identity="graph", identity_cap=2) as merged:
        assert merged.identity_diagnostics()["shared_devices"] == 0
        kiosk = [r for r in merged.identities.to_arrow().to_pylist()
                 if r["identifier"] == "kiosk"]
        assert kiosk == [{"identifier": "kiosk", "resolved_user": "u2", "rule": "component",
                          "user_ids": 2}]


def test_stitch_diagnostics_report_components_too():
    with sessionize.run(SHARED, identity="stitch") as result:
        d = result.identity_diagnostics()
    assert d["component_sizes"] == {2: 2, 4: 1}
    assert d["largest_components"][0] == {"resolved_user": "u1", "identifiers": 4,
                                          "user_ids": 1, "anonymous_ids": 3}


def test_diagnostics_need_an_identity_policy():
    with sessionize.run(SHARED) as result, pytest.raises(OptionError, match="'graph'"):
        result.identity_diagnostics()


def test_graph_helper_tables_are_dropped():
    with sessionize.run(SHARED, identity="graph") as result:
        tables = {row[0] for row in result.engine.con.execute("SHOW TABLES").fetchall()}
    assert {t for t in tables if t.startswith("sz_graph_")} == {"sz_graph_nodes"}


def test_the_graph_compiles_to_spark_sql():
    import sqlglot

    from sessionize.sql import identity as g
    from sessionize.sql.dialects import rewrite

    for sql in (g.pairs_sql(), g.ids_sql(), g.round_sql("e", "l"), g.nodes_sql("l"),
                g.reach_sql("p"), g.component_cap_sql("l")):
        assert rewrite(sqlglot.parse_one(sql, read="duckdb"), "spark").sql("spark")


# -- the command line ------------------------------------------------------------------------
def cli(tmp_path, events, *flags) -> tuple[int, str, str]:
    src = tmp_path / "events.json"
    src.write_text(json.dumps(events))
    out, err = io.StringIO(), io.StringIO()
    status = main(["run", str(src), "--out", str(tmp_path / "out"), *flags],
                  stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_cli_graph_flags_and_summary(tmp_path):
    renamed = [{**e, "prev": e.pop("previousId")} if "previousId" in e else dict(e)
               for e in SHARED]
    status, out, err = cli(tmp_path, renamed, "--identity", "graph", "--identity-cap", "1",
                           "--previous-id", "prev", "--user-change")
    assert status == 0, err
    assert "identity: 5 anonymous ids stitched" in out
    assert "identity components: 1 (6 ids: 1)" in out
    identities = pq.read_table(tmp_path / "out" / "identities.parquet").to_pylist()
    assert {r["identifier"]: r["resolved_user"] for r in identities}["u1"] == "u1_old"


def test_cli_bad_cap_is_a_usage_error(tmp_path):
    status, _, err = cli(tmp_path, SHARED, "--identity", "graph", "--identity-cap", "0")
    assert status == 2 and "'identity_cap' must be a whole number" in err
    status, _, err = cli(tmp_path, SHARED, "--identity-cap", "2")
    assert status == 2 and "applies to identity='graph' only" in err


def test_rules_file_keys(tmp_path):
    config = tmp_path / "rules.toml"
    config.write_text('identity = "graph"\nidentity_cap = 2\nuser_change = true\n')
    status, out, err = cli(tmp_path, SHARED, "--config", str(config))
    assert status == 0, err
    assert "0 shared devices" in out
