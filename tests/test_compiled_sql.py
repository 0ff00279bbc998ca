"""The compiler's SQL, pinned per dialect: rules in, expected SQL out, no database.

Each file in ``tests/fixtures/sql/`` is one case: a header with the rule options (and
any change to the input schema), then the SQL every stage compiles to, per dialect.
A stage is pinned in a case when its SQL differs from the notebook case's; every stage
of the notebook case is pinned. ``SESSIONIZE_UPDATE_SQL_FIXTURES=1`` rewrites the files
from the compiler (see the folder's README.md). Only the last test here runs a
database: it checks that the DuckDB engine runs exactly the pinned SQL.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import sessionize
from sessionize.rules import Rules
from sessionize.sql.compiler import (
    NO_IGNORE_NULLS,
    CompiledRules,
    compile_rules,
    fields_from_schema,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURES = Path(__file__).parent / "fixtures" / "sql"
CASES = sorted(FIXTURES.glob("*.sql"))
BASELINE = "notebook"  # the case whose every stage is pinned
DIALECTS = ("duckdb", "spark", "postgres", "snowflake", "bigquery")
STAGES = ("prepared", "identities", "keys", "assign", "events", "events_unordered",
          "sessions", "users")
UPDATE = os.environ.get("SESSIONIZE_UPDATE_SQL_FIXTURES") == "1"
BLOCK = re.compile(rf"^-- ({'|'.join(DIALECTS)}): ({'|'.join(STAGES)})$")
UNSUPPORTED = "-- unsupported: "


@dataclasses.dataclass
class Case:
    """One fixture file: its header (title, rule options, schema changes) and its blocks."""

    path: Path
    title: str
    options: dict
    schema: dict[str, str]
    header: list[str]
    # (dialect, stage) -> (sqlglot's "unsupported" messages, the SQL)
    blocks: dict[tuple[str, str], tuple[list[str], str]]

    @property
    def name(self) -> str:
        return self.path.stem


def load_schema() -> dict[str, str]:
    """The input every case compiles against: top-level columns and their DuckDB types."""
    return tomllib.loads((FIXTURES / "schema.toml").read_text())


def load_case(path: Path) -> Case:
    """Parse a fixture: ``-- title:``, ``-- rules:`` and ``-- schema:`` lines (each
    ``-- rules:``/``-- schema:`` line is one TOML ``key = value``), then blocks headed
    ``-- <dialect>: <stage>``, each optionally starting with ``-- unsupported:`` lines."""
    title, rules, schema, header = "", [], [], []
    blocks: dict[tuple[str, str], tuple[list[str], str]] = {}
    current: tuple[str, str] | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            notes = [line[len(UNSUPPORTED):] for line in body if line.startswith(UNSUPPORTED)]
            sql = "\n".join(line for line in body if not line.startswith(UNSUPPORTED)).strip()
            assert current not in blocks, f"{path.name}: {current} appears twice"
            blocks[current] = (notes, sql)

    # split on "\n" alone, read and written without newline translation: the SQL holds
    # string literals with other line-breaking characters (\r, \x0b, \x85, \u2028, ...)
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        found = BLOCK.match(line)
        if found:
            close()
            current, body = (found.group(1), found.group(2)), []
        elif current is not None:
            body.append(line)
        else:
            header.append(line)
            for key, into in (("title", None), ("rules", rules), ("schema", schema)):
                prefix = f"-- {key}: "
                if line.startswith(prefix):
                    if into is None:
                        title = line[len(prefix):]
                    else:
                        into.append(line[len(prefix):])
            assert not line.strip() or line.startswith("--"), \
                f"{path.name}: header lines are comments (got {line!r})"
    close()
    while header and not header[-1].strip():
        header.pop()
    return Case(path, title, tomllib.loads("\n".join(rules)),
                {**load_schema(), **tomllib.loads("\n".join(schema))}, header, blocks)


def rules_of(options: dict) -> Rules:
    """The rules a case's options describe (the keyword options of ``sessionize.run``)."""
    return Rules.from_options(**options)


def compile_case(case: Case, options: dict | None = None, *,
                 dialect: str = "duckdb") -> CompiledRules:
    """The case's rules compiled as an engine of ``dialect`` compiles them (PostgreSQL has
    no ``IGNORE NULLS``: its windows are written another way)."""
    rules = rules_of(case.options if options is None else options)
    return compile_rules(rules, fields_from_schema(rules, case.schema), list(case.schema),
                         ignore_nulls=dialect not in NO_IGNORE_NULLS)


class _Messages(logging.Handler):
    """Collects what sqlglot logs while it renders (its "unsupported" warnings)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def render(compiled: CompiledRules, stage: str, dialect: str) -> tuple[list[str], str]:
    """A stage's SQL in ``dialect`` (pretty, as ``Result.sql`` gives it), with the
    messages sqlglot logged while rendering it: constructs it could not translate."""
    logger = logging.getLogger("sqlglot")
    handler = _Messages()
    logger.addHandler(handler)
    try:
        sql = compiled.sql(stage, dialect, pretty=True)
    finally:
        logger.removeHandler(handler)
    return sorted(set(handler.seen)), sql


def pinned_stages(case_name: str, compiled: CompiledRules) -> list[str]:
    """Every stage of the notebook case; in the others, the stages whose SQL differs."""
    stages = [s for s in STAGES if compiled.texts.get(s) is not None]
    if case_name == BASELINE:
        return stages
    baseline = baseline_texts()
    return [s for s in stages if compiled.texts[s] != baseline.get(s)]


@functools.cache
def baseline_texts() -> dict[str, str | None]:
    return compile_case(load_case(FIXTURES / f"{BASELINE}.sql")).texts


def expected_blocks(case: Case, compiled: CompiledRules
                    ) -> dict[tuple[str, str], tuple[list[str], str]]:
    stages = pinned_stages(case.name, compiled)
    per_dialect = {d: compile_case(case, dialect=d) if d in NO_IGNORE_NULLS else compiled
                   for d in DIALECTS}
    return {(d, s): render(per_dialect[d], s, d) for d in DIALECTS for s in stages}


def differences(case: Case, got: dict[tuple[str, str], tuple[list[str], str]]) -> Iterator[str]:
    """What differs between the compiler's blocks and the file's, as unified diffs."""
    for key in sorted(set(got) | set(case.blocks), key=lambda k: (DIALECTS.index(k[0]),
                                                                 STAGES.index(k[1]))):
        label = f"{key[0]}: {key[1]}"
        if key not in case.blocks:
            yield f"{label}: compiled but not in the file"
        elif key not in got:
            yield f"{label}: in the file but not compiled (the stage equals the notebook's)"
        elif got[key] != case.blocks[key]:
            want_notes, want_sql = case.blocks[key]
            got_notes, got_sql = got[key]
            want = [UNSUPPORTED + n for n in want_notes] + want_sql.split("\n")
            have = [UNSUPPORTED + n for n in got_notes] + got_sql.split("\n")
            yield "\n".join(difflib.unified_diff(want, have, f"{case.path.name} ({label})",
                                                 "compiled", lineterm=""))


def write_case(case: Case, blocks: dict[tuple[str, str], tuple[list[str], str]]) -> None:
    parts = ["\n".join(case.header)]
    for dialect in DIALECTS:
        for stage in STAGES:
            if (dialect, stage) in blocks:
                notes, sql = blocks[(dialect, stage)]
                lines = [f"-- {dialect}: {stage}", *(UNSUPPORTED + n for n in notes), sql]
                parts.append("\n".join(lines))
    with open(case.path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n\n".join(parts) + "\n")


# -- the cases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_compiled_sql_matches_the_fixture(path: Path):
    case = load_case(path)
    assert case.title, f"{path.name}: give the case a '-- title:' line"
    got = expected_blocks(case, compile_case(case))
    if UPDATE:
        write_case(case, got)
        case = load_case(path)
    problems = list(differences(case, got))
    assert not problems, (
        f"{path.name}: the compiled SQL differs from the fixture.\n" + "\n".join(problems[:3])
        + "\nHint: if the compiler changed on purpose, regenerate with "
        "SESSIONIZE_UPDATE_SQL_FIXTURES=1 pytest tests/test_compiled_sql.py and review the diff")


def test_the_notebook_case_pins_every_stage_in_every_dialect():
    case = load_case(FIXTURES / f"{BASELINE}.sql")
    assert case.options == {}
    for dialect in DIALECTS:
        for stage in ("prepared", "keys", "assign", "events", "events_unordered", "sessions",
                      "users"):
            assert (dialect, stage) in case.blocks
    assert "1800000000" in case.blocks[("duckdb", "assign")][1]  # the 30-minute gap, in us


def test_every_rule_option_is_covered_by_a_case():
    """Each field of Rules takes a non-default value in some case, so no rule's SQL goes
    unpinned."""
    default = Rules()
    covered = {f.name for path in CASES for f in dataclasses.fields(Rules)
               if getattr(rules_of(load_case(path).options), f.name) != getattr(default, f.name)}
    missing = {f.name for f in dataclasses.fields(Rules)} - covered
    assert not missing, f"no case in tests/fixtures/sql/ sets {sorted(missing)}"


# -- the comparison can fail ------------------------------------------------------------------
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_changed_rule_changes_the_pinned_text(dialect):
    case = load_case(FIXTURES / f"{BASELINE}.sql")
    changed = render(compile_case(case, {"gap": "31m"}, dialect=dialect), "assign", dialect)
    assert changed != case.blocks[(dialect, "assign")]
    got = {**case.blocks, (dialect, "assign"): changed}
    problems = list(differences(case, got))
    assert len(problems) == 1 and "-" in problems[0] and "1800000000" in problems[0] \
        and "1860000000" in problems[0]


def test_a_rule_that_leaves_the_notebook_stages_pins_nothing_else():
    case = load_case(FIXTURES / "midnight_zone.sql")
    compiled = compile_case(case)
    assert pinned_stages(case.name, compiled) == ["assign"]
    # an extra block (a stage equal to the notebook's) is reported, not ignored
    extra = {**expected_blocks(case, compiled), ("duckdb", "users"): ([], "SELECT 1")}
    assert any("users" in p for p in differences(case, extra))


def test_the_loader_reads_headers_and_blocks(tmp_path):
    path = tmp_path / "x.sql"
    path.write_text('-- title: t\n-- rules: gap = "5m"\n-- schema: extra = "BIGINT"\n\n'
                    "-- postgres: assign\n-- unsupported: no IGNORE NULLS\nSELECT\n  1\n\n"
                    "-- duckdb: users\nSELECT 2\n")
    case = load_case(path)
    assert case.title == "t" and case.options == {"gap": "5m"}
    assert list(case.schema)[-1] == "extra" and case.schema["extra"] == "BIGINT"
    assert case.blocks == {("postgres", "assign"): (["no IGNORE NULLS"], "SELECT\n  1"),
                           ("duckdb", "users"): ([], "SELECT 2")}


# -- the engine runs what is pinned (the one test here with a database) -----------------------
ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
               "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
               "TIMESTAMP": pa.timestamp("us")}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_the_duckdb_engine_runs_the_pinned_sql(path: Path):
    """An empty input with the case's schema, run by the DuckDB engine (SQL plan): every
    stage it compiled is the one compiled here, so fields_from_schema resolves fields as
    the engine does (and the pinned SQL is what the engine runs)."""
    case = load_case(path)
    table = pa.table({name: pa.array([], ARROW_TYPES[kind]) for name, kind in case.schema.items()})
    compiled = compile_case(case)
    stages = [s for s in STAGES if compiled.texts.get(s) is not None]
    with sessionize.run(table, plan="sql", **case.options) as result:
        for stage in stages:
            assert result.sql(stage, "duckdb") == render(compiled, stage, "duckdb")[1], stage
    for (dialect, stage), (_, sql) in case.blocks.items():
        if dialect == "duckdb":
            assert render(compiled, stage, dialect)[1] == sql, stage
