"""The standalone query in the dialects nothing here can run (Snowflake, BigQuery, Redshift,
Trino), and in the ones that run elsewhere in the tests (DuckDB, PostgreSQL, Spark),
snapshotted per dialect for two rule sets: the seed rules and a set with every rule one
query can express.

Each snapshot (``tests/fixtures/warehouse/<set>.<dialect>.sql``) holds the query for
every table. The tests: the snapshot is what ``sessionize.to_sql`` prints; sqlglot parses
it back in its dialect; and every function it calls (and the ``FILTER`` / ``IGNORE NULLS``
clauses) is in that dialect's allow-list (``functions.toml`` beside the snapshots, each
list taken from the dialect's reference pages, cited there). ``SESSIONIZE_UPDATE_SQL_FIXTURES=1``
rewrites the snapshots; review the diff before committing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

import sessionize
from sessionize import OptionError
from sessionize.sql.standalone import DIALECTS, TABLES, standalone_sql

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURES = Path(__file__).parent / "fixtures" / "warehouse"
UPDATE = os.environ.get("SESSIONIZE_UPDATE_SQL_FIXTURES") == "1"
SOURCE = "segment.tracks"
#: The rule sets snapshotted: the seed rules, and every rule a single query can express
#: in every dialect (midnight in a fixed zone: midnight='event' is refused where the
#: engine's zone list is not exposed; identity='graph' is refused everywhere).
RULE_SETS = {
    "seed": {},
    "all_rules": {"gap_by": "event", "gaps": {"Clicked": "1m"}, "midnight": "Europe/Berlin",
                  "campaign": True, "start_events": ["Signed In"], "end_events": ["Signed Out"],
                  "passive_events": ["Heartbeat"], "client_session": "context.sessionId",
                  "max_duration": "4h", "identity": "stitch", "user_change": True,
                  "enrich": True, "first_last": ["context.page.url"], "dedupe": True,
                  "clock_skew": "segment"},
}
SNAPSHOTS = [(name, dialect) for name in RULE_SETS for dialect in DIALECTS]
BLOCK = "-- table: "
ALLOWED = tomllib.loads((FIXTURES / "functions.toml").read_text())
#: Tokens before "(" that are syntax, not calls.
SYNTAX = {TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA, TokenType.DASH,
          TokenType.PLUS, TokenType.STAR, TokenType.SLASH, TokenType.ALIAS, TokenType.FROM,
          TokenType.IN, TokenType.JOIN, TokenType.OR, TokenType.AND, TokenType.NOT,
          TokenType.OVER, TokenType.WHEN, TokenType.THEN, TokenType.ELSE, TokenType.EQ,
          TokenType.NEQ, TokenType.GT, TokenType.LT, TokenType.GTE, TokenType.LTE,
          TokenType.FILTER, TokenType.STRING, TokenType.IDENTIFIER, TokenType.SELECT,
          TokenType.WHERE, TokenType.ON, TokenType.IS, TokenType.BETWEEN, TokenType.CASE,
          TokenType.DPIPE, TokenType.ORDER_BY, TokenType.PARTITION_BY, TokenType.GROUP_BY,
          TokenType.DISTINCT}


def render(name: str, dialect: str) -> str:
    """The snapshot ``name`` for ``dialect`` as the compiler writes it now."""
    rules = sessionize.Rules.from_options(**RULE_SETS[name])
    options = ", ".join(f"{k}={v!r}" for k, v in RULE_SETS[name].items()) or "the seed rules"
    parts = [f"-- sessionize.to_sql(dialect={dialect!r}, source={SOURCE!r}, table=...): "
             f"{options}",
             f"-- regenerate: SESSIONIZE_UPDATE_SQL_FIXTURES=1 pytest {Path(__file__).name}"]
    for table in TABLES:
        parts.append(f"{BLOCK}{table}")
        parts.append(standalone_sql(rules, dialect=dialect, source=SOURCE, table=table)
                     .rstrip("\n"))
    return "\n".join(parts) + "\n"


def path_of(name: str, dialect: str) -> Path:
    return FIXTURES / f"{name}.{dialect}.sql"


def read(path: Path) -> str:
    # read and written without newline translation: the SQL's string literals hold \r,
    # \x85, \u2028 ... (the blank characters of an id)
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def blocks(text: str) -> dict[str, str]:
    """table -> its query, from a snapshot's text."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.split("\n"):
        if line.startswith(BLOCK):
            current = line[len(BLOCK):]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {table: "\n".join(lines).strip() for table, lines in out.items()}


def called(sql: str, dialect: str) -> tuple[set[str], set[str]]:
    """The functions ``sql`` calls (names as written, upper case) and the clauses it uses
    (``FILTER``, ``IGNORE NULLS``): every name before "(" in the dialect's tokens that is
    not syntax, and every function of the parsed tree sqlglot does not know."""
    tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    names = {a.text.upper() for a, b in zip(tokens, tokens[1:])
             if b.token_type == TokenType.L_PAREN and a.token_type not in SYNTAX}
    tree = sqlglot.parse_one(sql, read=dialect)
    names |= {node.name.upper() for node in tree.find_all(exp.Anonymous)}
    clauses = set()
    if tree.find(exp.Filter) is not None:
        clauses.add("FILTER")
    if tree.find(exp.IgnoreNulls) is not None:
        clauses.add("IGNORE NULLS")
    return names, clauses


@pytest.mark.parametrize(("name", "dialect"), SNAPSHOTS, ids=[f"{n}-{d}" for n, d in SNAPSHOTS])
def test_snapshot_is_what_to_sql_prints(name, dialect):
    path = path_of(name, dialect)
    text = render(name, dialect)
    if UPDATE:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    assert path.exists(), f"{path.name} is missing: SESSIONIZE_UPDATE_SQL_FIXTURES=1 writes it"
    assert read(path) == text, (f"{path.name} differs from what sessionize.to_sql prints; "
                                "if the change is meant, regenerate with "
                                "SESSIONIZE_UPDATE_SQL_FIXTURES=1 and review the diff")


@pytest.mark.parametrize(("name", "dialect"), SNAPSHOTS, ids=[f"{n}-{d}" for n, d in SNAPSHOTS])
def test_snapshot_parses_back_in_its_dialect(name, dialect):
    queries = blocks(read(path_of(name, dialect)))
    assert sorted(queries) == sorted(TABLES)
    for table, sql in queries.items():
        tree = sqlglot.parse_one(sql, read=dialect)
        assert isinstance(tree, exp.Select) and tree.args.get("with_") is not None, table


@pytest.mark.parametrize(("name", "dialect"), SNAPSHOTS, ids=[f"{n}-{d}" for n, d in SNAPSHOTS])
def test_snapshot_calls_only_functions_its_dialect_has(name, dialect):
    allowed = ALLOWED[dialect]
    for table, sql in blocks(read(path_of(name, dialect))).items():
        names, clauses = called(sql, dialect)
        missing = sorted(names - set(allowed["functions"]))
        assert not missing, (f"{name}.{dialect}.sql ({table}) calls {missing}, which are not "
                             f"in the {dialect} allow-list (functions.toml); check the "
                             "dialect's docs, then fix the rewrite or add them with the page")
        extra = sorted(clauses - set(allowed["clauses"]))
        assert not extra, f"{name}.{dialect}.sql ({table}) uses {extra}, which {dialect} lacks"


def test_the_allow_list_check_finds_what_a_dialect_lacks():
    """The check itself: DuckDB's SQL, unrewritten, calls what the warehouses lack."""
    names, clauses = called("SELECT arg_max(x, y) FILTER (WHERE z), "
                            "LAST_VALUE(x IGNORE NULLS) OVER (ORDER BY s), "
                            "timezone('UTC', t) FROM u GROUP BY k", "duckdb")
    assert {"ARG_MAX", "TIMEZONE", "LAST_VALUE"} <= names
    assert clauses == {"FILTER", "IGNORE NULLS"}
    assert not {"ARG_MAX", "TIMEZONE"} <= set(ALLOWED["redshift"]["functions"])
    assert "FILTER" not in ALLOWED["redshift"]["clauses"]


@pytest.mark.parametrize("dialect", ("snowflake", "bigquery", "redshift", "trino"))
def test_a_rule_the_dialect_cannot_express_is_refused_by_name(dialect):
    with pytest.raises(OptionError, match=rf"the midnight='event' rule cannot be written as "
                                          rf"one {dialect} query: .*\nHint"):
        sessionize.to_sql(midnight="event", dialect=dialect, source=SOURCE)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_identity_graph_is_refused_in_every_dialect(dialect):
    with pytest.raises(OptionError, match=rf"the identity='graph' rule cannot be written as "
                                          rf"one {dialect} query"):
        sessionize.to_sql(identity="graph", dialect=dialect, source=SOURCE)


@pytest.mark.parametrize("dialect", ("duckdb", "postgres", "spark", "databricks"))
def test_midnight_in_each_events_zone_is_written_where_the_zone_list_is_exposed(dialect):
    sql = sessionize.to_sql(midnight="event", dialect=dialect, source=SOURCE)
    sqlglot.parse_one(sql, read=dialect)
    assert "invalid_timezone" in sql


def test_the_docs_print_the_seed_query_as_sessionize_sql_prints_it():
    """docs/warehouse.md shows the PostgreSQL sessions query for the seed rules in full;
    it must be the query printed now (its trim literal holds the blank characters, so the
    file is read without newline translation)."""
    doc = read(Path(__file__).resolve().parents[1] / "docs" / "warehouse.md")
    head = ("`sessionize sql --dialect postgres --source segment.tracks --table sessions`:"
            "\n\n```sql\n")
    start = doc.index(head) + len(head)
    shown = doc[start:doc.index("```", start)]
    assert shown == sessionize.to_sql(dialect="postgres", source="segment.tracks",
                                      table="sessions")
