"""The front door: :func:`run`.

``run`` takes three option objects, each also given as flat keyword shorthands:

- ``rules=Rules(...)`` (or ``gap=``, ``profile=``, ``midnight=``, ... : every field of
  :class:`~sessionize.Rules`),
- ``columns=Columns(...)`` (or ``user_id=``, ``timestamp=``, ``timestamp_unit=``, ...),
- ``engine=DuckDB(...)`` / ``Spark(...)`` / ``"duckdb"`` / ``"spark"`` (or ``database=``,
  ``memory_limit=``, ``threads=``, ``temp_directory=``, ``plan=``, ``buckets=`` for DuckDB and
  ``spark=`` for Spark),

plus what the run does with its input and output: ``on_invalid``, ``events_order``,
``progress`` and ``stdin``. The shorthands are read from the one declaration in
:mod:`sessionize.rules`, so every option documented there is a keyword here.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import IO, Any

from .engines.duckdb import DuckDB, check_events_order
from .engines.postgres import Postgres
from .engines.spark import Spark
from .errors import OptionError
from .result import Result
from .rules import COLUMN_KEYS, COLUMN_OPTIONS, ON_INVALID, RULE_KEYS, RULE_OPTIONS, Columns, Rules
from .sql.standalone import standalone_sql
from .state.incremental import run_incremental

__all__ = ["run", "to_sql"]

#: The flat shorthands of the engine objects.
DUCKDB_KEYS = ("database", "memory_limit", "threads", "temp_directory", "plan", "buckets")
SPARK_KEYS = ("spark",)
POSTGRES_KEYS = ("dsn", "connection", "into")
ENGINES = ("duckdb", "spark", "postgres")


def run(source: Any, *, rules: Rules | Mapping[str, Any] | str | None = None,
        columns: Columns | Mapping[str, str] | None = None,
        engine: DuckDB | Spark | str = "duckdb", on_invalid: str = "raise",
        events_order: str = "time", progress: Callable[[str, float | None], None] | None = None,
        stdin: IO[bytes] | None = None, state: str | os.PathLike | None = None,
        max_lateness: Any = None, **shorthands: Any) -> Result:
    """Sessionize events: every event with its user and session, plus sessions and users.

    ``source`` is a path (JSON array, NDJSON, ``.gz``, Parquet, CSV), a directory,
    a glob, a list of those, ``"-"`` for NDJSON on stdin, or a pandas/polars
    DataFrame, a pyarrow Table or a DuckDB relation (or, on Spark, a Spark DataFrame or
    cluster URIs such as ``s3a://...``).

    A new session starts at a user's first event and after a gap strictly greater
    than ``gap`` (default ``"30m"``; ``"1h30m"``, ``"90s"``, ``"1d"``, a ``timedelta``
    or seconds). The user is ``userId`` if set, else ``anonymousId``. Ties on time
    are ordered by ``messageId``, then input order.

    ``rules``: a :class:`~sessionize.Rules` (or a mapping of its fields, or a profile
    name: ``"web"``, ``"mobile"``, ``"saas"``); each field is also a keyword here
    (``gap=``, ``profile=``, ``gap_by=``/``gaps=``, ``midnight=``, ``campaign=``,
    ``start_events=``/``end_events=``, ``client_session=``, ``passive_events=``,
    ``max_duration=``, ``identity=``/``identity_cap=``, ``user_change=``, ``enrich=``,
    ``bounce=``, ``first_last=``, ``dedupe=``, ``clock_skew=``; docs/rules.md has the
    table). ``columns``: a :class:`~sessionize.Columns` (or ``user_id=``,
    ``anonymous_id=``, ``timestamp=``/``time_column=``, ``timestamp_unit=``, ...).
    Giving an object and one of its keywords together is an error.

    ``engine``: ``DuckDB(...)`` (the default: ``database``, ``memory_limit``,
    ``threads``, ``temp_directory``, ``plan``, ``buckets``, each also a keyword here) or
    ``Spark(session)`` (or ``engine="spark", spark=session``; docs/spark.md). Both run
    the same compiled rules and give the same tables; ``result.plan`` says whether
    DuckDB ran the columnar plan, the bucketed plan (the columnar plan per bucket of
    users, for inputs larger than memory) or the compiled SQL.

    ``on_invalid="raise"`` (default) fails on rows with a bad or missing timestamp
    or no user id, naming them; ``"quarantine"`` sets them aside in
    ``result.quarantine`` with a reason each. ``events_order`` is the events table's
    row order: ``"time"`` (default; by time, ties by user, messageId, input order) or
    ``"none"`` (no sort: fastest when the events go to files or a warehouse).
    ``progress(stage, fraction)`` is called as the run advances.

    ``state``: a DuckDB database file (created on the first run) that keeps the tables of
    every run so far; ``source`` is then a new batch, and the result holds the state's
    tables after it, plus ``result.changes`` (the sessions this run inserted, changed and
    removed) and ``result.run_line()``. Re-delivered events (same messageId) are skipped;
    ``max_lateness`` (e.g. ``"3d"``) quarantines events older than the newest event in the
    state minus that as ``too_late``. The state keeps its rules: other rules are refused
    (:class:`~sessionize.StateError`). docs/incremental.md tells more.

    >>> import sessionize
    >>> result = sessionize.run(sessionize.sample_path())
    >>> len(result.events), len(result.sessions), len(result.users)
    (6, 4, 3)
    >>> sessionize.run(sessionize.sample_path(), rules=sessionize.Rules(gap="1d")).stats()[
    ...     "sessions"]
    3
    """
    return execute(source, rules=rules, columns=columns, engine=engine, on_invalid=on_invalid,
                   events_order=events_order, progress=progress, stdin=stdin, state=state,
                   max_lateness=max_lateness, **shorthands)


def to_sql(rules: Rules | Mapping[str, Any] | str | None = None, *, dialect: str = "duckdb",
           source: str = "tracks", table: str = "events",
           schema: Mapping[str, str] | None = None, order_by: str | None = None,
           columns: Columns | Mapping[str, str] | None = None, pretty: bool = True,
           **shorthands: Any) -> str:
    """One standalone SQL query that returns ``table`` (``events``, ``sessions``, ``users``,
    or ``quarantine``: the rows left out) for the events in the warehouse table ``source``,
    with the columns and values :func:`run` gives. ``dialect``: ``duckdb``, ``postgres``,
    ``spark``/``databricks``, ``snowflake``, ``bigquery``, ``redshift`` or ``trino``.

    The rules are given as for :func:`run` (``rules=``, ``columns=`` or the keywords).
    ``schema`` declares the source's columns and types (default: the Segment columns the
    rules read, times as timestamps with a time zone); ``order_by`` names a column that
    orders tied rows as their input order would (default: each row's content decides).
    A rule the dialect cannot express is refused, naming both. docs/warehouse.md tells
    more. (The function is ``to_sql``, not ``sql``: ``sessionize.sql`` is the package that
    holds the compiler.)

    >>> import sessionize
    >>> print(sessionize.to_sql(dialect="postgres", source="segment.tracks",
    ...                         table="users").splitlines()[0])
    WITH sz_input AS (
    """
    known = set(RULE_KEYS) | set(COLUMN_KEYS)
    unknown = sorted(set(shorthands) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"\nHint: did you mean {close[0]!r}?" if close else ""
        raise TypeError(f"to_sql() got an unexpected keyword argument {unknown[0]!r}{hint}")
    rule_set = make_rules(rules, columns, shorthands)
    return standalone_sql(rule_set, dialect=dialect, source=source, table=table, schema=schema,
                          order_by=order_by, pretty=pretty)


def execute(source: Any, *, rules: Any = None, columns: Any = None, engine: Any = "duckdb",
            on_invalid: str = "raise", events_order: str = "time",
            progress: Callable[[str, float | None], None] | None = None,
            stdin: IO[bytes] | None = None, events_table: bool = True,
            state: str | os.PathLike | None = None, max_lateness: Any = None,
            **shorthands: Any) -> Result:
    """:func:`run`, and what the analyses need besides: ``events_table=False`` when nobody
    reads the events table (the columnar plan then reads only the narrow keys)."""
    if on_invalid not in ON_INVALID:
        raise OptionError(
            f"'on_invalid' must be one of {', '.join(ON_INVALID)} (got {on_invalid!r})")
    check_events_order(events_order)
    known = (set(RULE_KEYS) | set(COLUMN_KEYS) | set(DUCKDB_KEYS) | set(SPARK_KEYS)
             | set(POSTGRES_KEYS))
    unknown = sorted(set(shorthands) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"\nHint: did you mean {close[0]!r}?" if close else ""
        raise TypeError(f"run() got an unexpected keyword argument {unknown[0]!r}{hint}")
    rule_set = make_rules(rules, columns, shorthands)
    runner = make_engine(engine, shorthands)
    if max_lateness is not None and state is None:
        raise OptionError(f"'max_lateness' applies to incremental runs only (got "
                          f"max_lateness={max_lateness!r} without state=)\nHint: "
                          "sessionize.run(batch, state='state.duckdb', max_lateness='3d')")
    if state is not None:
        if not isinstance(runner, DuckDB):
            raise OptionError(f"incremental runs (state=) run on the DuckDB engine (got "
                              f"engine={runner.__class__.__name__})")
        return run_incremental(source, rule_set, state, engine=runner, on_invalid=on_invalid,
                               max_lateness=max_lateness, progress=progress, stdin=stdin)
    opened = runner.open(progress=progress, events_order=events_order,
                         events_table=events_table)
    try:
        return opened.run(source, rule_set, on_invalid=on_invalid, stdin=stdin)
    except BaseException:
        opened.close()
        raise


def make_rules(rules: Any, columns: Any, shorthands: Mapping[str, Any]) -> Rules:
    """One :class:`Rules` from ``rules=``, ``columns=`` and the flat shorthands."""
    flat_rules = {k: shorthands[k] for k in RULE_KEYS if shorthands.get(k) is not None}
    flat_columns = {k: shorthands[k] for k in COLUMN_KEYS if shorthands.get(k) is not None}
    if isinstance(rules, str):
        rules = Rules(profile=rules)
    elif isinstance(rules, Mapping):
        rules = Rules(**rules)
    if rules is not None:
        if not isinstance(rules, Rules):
            raise OptionError(f"'rules' must be a sessionize.Rules, a mapping of rule options "
                              f"or a profile name (got {type(rules).__name__})")
        _not_both("rules", flat_rules)
    if isinstance(columns, Mapping):
        columns = Columns.from_options(**columns)
    if columns is not None:
        if not isinstance(columns, Columns):
            raise OptionError("'columns' must be a sessionize.Columns or a mapping of column "
                              f"names (got {type(columns).__name__})")
        _not_both("columns", flat_columns)
        if rules is not None and rules.columns != Columns():
            raise OptionError("give the columns once: in rules=Rules(columns=...) or in "
                              "columns=, not both")
    elif flat_columns:
        columns = Columns.from_options(**flat_columns)
    if rules is None:
        rules = Rules(**flat_rules)
    if columns is not None:
        rules = dataclasses.replace(rules, columns=columns)
    return rules


def make_engine(engine: Any, shorthands: Mapping[str, Any]) -> DuckDB | Spark | Postgres:
    """The engine object from ``engine=`` and the flat shorthands."""
    duck = {k: shorthands[k] for k in DUCKDB_KEYS if shorthands.get(k) is not None}
    pg = {k: shorthands[k] for k in POSTGRES_KEYS if shorthands.get(k) is not None}
    spark = shorthands.get("spark")
    if isinstance(engine, (DuckDB, Spark, Postgres)):
        _not_both("engine", duck | pg | ({"spark": spark} if spark is not None else {}))
        return engine
    if engine not in ENGINES:
        raise OptionError(f"'engine' must be one of {', '.join(ENGINES)}, sessionize.DuckDB(...), "
                          f"sessionize.Spark(...) or sessionize.Postgres(...) (got {engine!r})")
    if engine == "postgres":
        other = {**duck, **({"spark": spark} if spark is not None else {})}
        if other:
            name = next(iter(other))
            raise OptionError(f"{name!r} does not apply to engine='postgres' "
                              f"(got {name}={other[name]!r})\nHint: "
                              "sessionize.run('segment.tracks', engine='postgres', dsn=..., "
                              "into='analytics')")
        return Postgres(**pg)
    if pg:
        name = next(iter(pg))
        raise OptionError(f"{name!r} needs engine='postgres' (got engine={engine!r})\n"
                          "Hint: sessionize.run('segment.tracks', engine='postgres', dsn=...)")
    if engine == "spark":
        if duck.get("plan") in ("columnar", "bucketed"):
            raise OptionError(f"plan={duck['plan']!r} runs on the DuckDB engine only; Spark "
                              "runs the compiled SQL (plan='auto' or 'sql')")
        for name in duck:
            if name != "plan":
                raise OptionError(
                    f"{name!r} tunes DuckDB and does not apply to engine='spark' "
                    f"(got {name}={duck[name]!r})\n"
                    "Hint: tune Spark through its own configuration (spark.executor.memory, "
                    "spark.sql.shuffle.partitions, ...) on the session you pass as spark=.")
        return Spark(session=spark)
    if spark is not None:
        raise OptionError(f"'spark' (a SparkSession) needs engine='spark' (got engine={engine!r})"
                          "\nHint: sessionize.run(source, engine='spark', spark=spark)")
    return DuckDB(**duck)


def _not_both(name: str, flat: Mapping[str, Any]) -> None:
    if flat:
        given = next(iter(flat))
        raise OptionError(f"give the {name} once: as {name}= or as keywords, not both (got "
                          f"{name}= and {given}={flat[given]!r})\n"
                          f"Hint: put {given!r} into the {name} object")


def _signature() -> inspect.Signature:
    """run()'s signature with every shorthand listed, for help() and editors."""
    base = inspect.signature(run)
    params = [p for p in base.parameters.values() if p.kind is not p.VAR_KEYWORD]
    seen = {p.name for p in params}
    for option in RULE_OPTIONS + COLUMN_OPTIONS:
        if option.name not in seen:
            default = None if option.name == "identity_cap" else option.default
            params.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=default))
    for name in DUCKDB_KEYS + SPARK_KEYS:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default="auto" if name == "plan" else None))
    return base.replace(parameters=params)


run.__signature__ = _signature()  # type: ignore[attr-defined]
