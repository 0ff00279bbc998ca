"""One standalone query per output table, for a warehouse: ``sessionize.to_sql``.

The engines run the compiled stages as views and tables of their own; a warehouse wants
one query it can paste, schedule or put in a dbt model. :func:`standalone_sql` builds it
from the same compiled rules (:func:`sessionize.sql.compiler.compile_rules`): the stages
become common table expressions (``WITH sz_input AS (...), sz_prepared AS (...), ...``)
over the source table, and the query is rendered through :mod:`sessionize.sql.dialects`.
No temporary view, no session setting, no function the dialect lacks.

What a warehouse table does not say, and what stands in for it:

- **Types.** An engine reads the input's schema; a query must be told it. ``schema``
  maps column names to types; by default the Segment columns the rules read
  (:func:`default_schema`): ids and names as text, ``timestamp`` (and ``receivedAt``,
  ``sentAt``, ``originalTimestamp`` when a rule reads them) as timestamps with a time zone.
  The events query returns the declared columns (and the columns sessionize adds), so
  declare every column you want carried through.
- **Nested fields.** A dotted path (``context.library.name``) is a declared column of
  that name, else Segment's warehouse flattening of it (``context_library_name``), else a
  path into a declared JSON column (``context``) or struct (Spark, DuckDB; a field the
  declared struct lacks is absent); absent, it reads as missing, as on every engine
  (columns the user named must be declared).
- **Input order.** The last tie-breaker after time and messageId is the input order,
  which a warehouse table lacks. ``order_by`` names a column that orders rows (a load
  sequence); by default each row's own content decides: an MD5 of its declared columns
  (times as microseconds, so no session time zone can change it; JSON and nested
  columns are left out). Rows that tie on all of time, messageId and content are
  identical, so their order changes nothing. The result is deterministic either way.
- **Invalid rows.** A query cannot raise: rows with a bad timestamp or no user id are
  left out of the tables (as ``on_invalid="quarantine"``) and ``table="quarantine"``
  returns them with a reason each.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp

from ..errors import OptionError
from ..rules import CAMPAIGN_FIELDS, Rules
from .compiler import NO_IGNORE_NULLS, Field, P, compile_rules, quote
from .dialects import rewrite

__all__ = ["DIALECTS", "TABLES", "default_schema", "standalone_sql"]

#: The dialects a standalone query is written in (sqlglot's names).
DIALECTS = ("duckdb", "postgres", "spark", "databricks", "snowflake", "bigquery", "redshift",
            "trino")
#: The tables a standalone query returns.
TABLES = ("events", "sessions", "users", "quarantine")
#: Dialects whose exact epoch microseconds are arithmetic on numerics or text
#: (dialects.epoch_micros): computed once and carried (compile_rules' ``carry_micros``).
_DEAR_EPOCH = ("postgres", "redshift", "trino")
#: What each dialect cannot express, by rule: (test on the rules, why).
_TEXT, _INSTANT = "VARCHAR", "TIMESTAMP WITH TIME ZONE"
#: Segment fields some rules read, as Segment's warehouse tables flatten them.
_ENRICH_FIELDS = ("context.page.path", "properties.path", "context.page.referrer",
                  *CAMPAIGN_FIELDS, "context.device.type", "context.os.name",
                  "context.library.name")


def _refusals(rules: Rules, dialect: str) -> list[tuple[str, str]]:
    """The rules in ``rules`` that ``dialect`` cannot run as one query: (rule, why)."""
    out = []
    if rules.identity == "graph":
        out.append(("identity='graph'", "the identity graph is found by rounds of label "
                    "propagation driven from Python, which one query cannot express; "
                    "identity='stitch' or 'first' run in one query"))
    zone_lists = ("duckdb", "postgres", "spark", "databricks")
    if rules.midnight == "event" and dialect not in zone_lists:
        out.append(("midnight='event'", f"each event's zone is checked against the engine's "
                    f"list of zones, which {dialect} does not expose to a query; a fixed "
                    "zone (midnight='Europe/Berlin') works"))
    return out


def default_schema(rules: Rules) -> dict[str, str]:
    """The columns a standalone query assumes when none are declared: the Segment
    fields ``rules`` read, under their ``Columns`` names (ids and names as text, times as
    timestamps with a time zone), and the other fields the rules read as text, flattened as
    Segment's warehouse tables flatten them.

    >>> default_schema(Rules())
    {'userId': 'VARCHAR', 'anonymousId': 'VARCHAR', 'messageId': 'VARCHAR', 'event': \
'VARCHAR', 'type': 'VARCHAR', 'timestamp': 'TIMESTAMP WITH TIME ZONE'}
    >>> list(default_schema(Rules(profile="saas")))[-1]
    'context_library_name'
    """
    c = rules.columns
    schema = {c.user_id: _TEXT, c.anonymous_id: _TEXT, c.message_id: _TEXT, c.event: _TEXT,
              c.type: _TEXT, c.timestamp: _INSTANT}
    if rules.dedupe or rules.clock_skew:
        schema[c.received_at] = _INSTANT
    if rules.clock_skew:
        schema[c.sent_at] = _INSTANT
        schema[c.original_timestamp] = _INSTANT
    if rules.identity == "graph":
        schema[c.previous_id] = _TEXT
    paths: list[str] = []
    if rules.gaps:
        paths.append("context.library.name" if rules.gap_by == "platform" else rules.gap_by)
    if rules.midnight == "event":
        paths.append(rules.timezone_column)
    paths.extend(rules.campaign)
    if rules.client_session:
        paths.append(rules.client_session)
    if rules.enrich:
        paths.extend(_ENRICH_FIELDS)
    paths.extend(rules.first_last)
    for path in paths:
        schema.setdefault(path.replace(".", "_"), _TEXT)
    return schema


def _type_name(kind: str) -> str:
    """A declared type in DuckDB's spelling, which the compiler reads
    (``text`` -> ``VARCHAR``, ``timestamptz`` -> ``TIMESTAMP WITH TIME ZONE``)."""
    try:
        built = exp.DataType.build(kind, dialect="duckdb")
    except Exception:
        raise OptionError(f"column type {kind!r} is not a SQL type sessionize knows\n"
                          "Hint: use text, bigint, double, timestamptz, timestamp, date or "
                          "json") from None
    if built.is_type(exp.DataType.Type.STRUCT, exp.DataType.Type.MAP):
        return built.sql(dialect="duckdb")  # field names keep their case
    name = built.sql(dialect="duckdb").upper()
    if name in ("TEXT", "STRING") or name.startswith(("VARCHAR", "CHAR")):
        return _TEXT
    if name == "TIMESTAMPTZ":
        return _INSTANT
    return name


def _resolve(schema: Mapping[str, str], path: str) -> Field | None:
    for name in (path, path.replace(".", "_")):
        if name in schema:
            return Field(quote(name), schema[name], top_level=name)
    head, _, rest = path.partition(".")
    if rest and schema.get(head, "").startswith(("STRUCT", "MAP")):  # a field of a struct
        kind = _struct_field(schema[head], rest.split("."))
        if kind is None:
            return None
        subscripts = "".join("['" + p.replace("'", "''") + "']" for p in rest.split("."))
        return Field(f"{quote(head)}{subscripts}", kind)
    if rest and schema.get(head, "").startswith("JSON"):
        json_path = "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in rest.split("."))
        return Field(f"json_extract_string({quote(head)}, '{json_path}')", _TEXT)
    return None


def _struct_field(kind: str, parts: list[str]) -> str | None:
    """The type of ``parts`` inside a declared struct type, ``None`` when it has no such
    field. A struct declared without its fields (``STRUCT``), or a map, is trusted.

    >>> _struct_field("STRUCT(page STRUCT(path VARCHAR))", ["page", "path"])
    'VARCHAR'
    >>> _struct_field("STRUCT(page STRUCT(path VARCHAR))", ["page", "url"]) is None
    True
    >>> _struct_field("STRUCT(page VARCHAR)", ["page", "path"]) is None
    True
    """
    try:
        node = exp.DataType.build(kind, dialect="duckdb")
    except Exception:
        return _TEXT
    for part in parts:
        if node.is_type(exp.DataType.Type.MAP):
            return _TEXT
        if not node.is_type(exp.DataType.Type.STRUCT):
            return None  # a path into a value that is not a struct: absent
        if not node.expressions:
            return _TEXT
        found = [c for c in node.expressions if c.name == part]
        if not found:
            return None
        node = found[0].args["kind"]
    return _type_name(node.sql(dialect="duckdb"))


def _fields(rules: Rules, schema: Mapping[str, str]) -> dict[str, Field | None]:
    """Where each field lives in the declared schema (as Engine.fields does for an input)."""
    c = rules.columns
    fields: dict[str, Field | None] = {
        name: _resolve(schema, getattr(c, name))
        for name in ("user_id", "anonymous_id", "timestamp", "message_id", "event", "type",
                     "received_at", "sent_at", "original_timestamp", "previous_id")}
    declared = ", ".join(schema)
    hint = ("\nHint: declare it in schema= (--column NAME=TYPE), or name the column the "
            f"table has with the column options; declared: {declared}")
    if fields["timestamp"] is None:
        raise OptionError(f"the source has no declared timestamp column {c.timestamp!r}{hint}")
    if fields["user_id"] is None and fields["anonymous_id"] is None:
        raise OptionError(f"the source has neither a {c.user_id!r} nor an {c.anonymous_id!r} "
                          f"column declared{hint}")
    wanted: dict[str, tuple[str, bool]] = {}
    if rules.gaps:
        wanted["gap_by"] = (("context.library.name", False) if rules.gap_by == "platform"
                            else (rules.gap_by, True))  # type: ignore[assignment]
    if rules.midnight == "event":
        wanted["timezone"] = (rules.timezone_column, rules.timezone_column != "context.timezone")
    for i, path in enumerate(rules.campaign):
        wanted[f"campaign_{i}"] = (path, rules.campaign != CAMPAIGN_FIELDS)
    if rules.client_session:
        wanted["client_session"] = (rules.client_session, True)
    if rules.enrich:
        for path in _ENRICH_FIELDS:
            wanted[f"enrich:{path}"] = (path, False)
        wanted["enrich:type"] = (c.type, False)
    for path in rules.first_last:
        wanted[f"enrich:{path}"] = (path, True)
    for name, (path, required) in wanted.items():
        fields[name] = _resolve(schema, path)
        if fields[name] is None and required:
            rule = name.split("_")[0].split(":")[0]
            raise OptionError(f"the source has no declared column {path!r}, which the {rule} "
                              f"rule reads{hint}")
    return fields


def _row_sql(schema: Mapping[str, str], order_by: str | None) -> str:
    """The input-order tie-breaker: ``order_by``, else an MD5 of each row's content."""
    if order_by is not None:  # need not be declared: it orders, it is not shown
        return quote(order_by)
    parts = []
    for name, kind in schema.items():
        if kind.startswith(("JSON", "STRUCT", "MAP", "UNION")) or kind.endswith("]"):
            continue
        value = (f"EPOCH_US({quote(name)})" if kind.startswith("TIMESTAMP WITH TIME ZONE")
                 else quote(name))
        parts.append(f"coalesce(CAST({value} AS VARCHAR), '')")
    return f"md5({' || chr(31) || '.join(parts)})"


def standalone_sql(rules: Rules, *, dialect: str = "duckdb", source: str = "tracks",
                   table: str = "events", schema: Mapping[str, str] | None = None,
                   order_by: str | None = None, pretty: bool = True) -> str:
    """One query returning ``table`` for the events in ``source`` (module docstring).

    >>> sql = standalone_sql(Rules(), dialect="postgres", source="segment.tracks")
    >>> sql.startswith("WITH sz_input AS"), "segment.tracks" in sql, "IGNORE NULLS" in sql
    (True, True, False)
    """
    if dialect not in DIALECTS:
        raise OptionError(f"'dialect' must be one of {', '.join(DIALECTS)} (got {dialect!r})")
    if table not in TABLES:
        raise OptionError(f"'table' must be one of {', '.join(TABLES)} (got {table!r})")
    if not isinstance(source, str) or not source.strip():
        raise OptionError(f"'source' must name a table, e.g. 'segment.tracks' (got {source!r})")
    refused = _refusals(rules, dialect)
    if refused:
        rule, why = refused[0]
        raise OptionError(f"the {rule} rule cannot be written as one {dialect} query: {why}\n"
                          "Hint: run it with sessionize.run (DuckDB, Spark or PostgreSQL "
                          "engines), or drop the rule for this dialect")
    declared = ({name: _type_name(kind) for name, kind in schema.items()} if schema
                else default_schema(rules))
    reserved = [name for name in declared if name.startswith(P)]
    if reserved:
        raise OptionError(f"column names starting with {P!r} are sessionize's own "
                          f"(got {reserved[0]!r})")
    fields = _fields(rules, declared)
    compiled = compile_rules(rules, fields, list(declared), source="sz_input", join_back=False,
                             ignore_nulls=dialect not in NO_IGNORE_NULLS,
                             carry_micros=dialect in _DEAR_EPOCH)
    try:
        table_ref = exp.to_table(source, dialect=dialect)
    except Exception:
        raise OptionError(f"'source' must name a table, e.g. 'segment.tracks' "
                          f"(got {source!r})") from None
    ctes = [("sz_input", f"SELECT *, {_row_sql(declared, order_by)} AS {P}row "
                         f"FROM {table_ref.sql(dialect='duckdb')}"),
            ("sz_prepared", compiled.texts["prepared"])]
    if table == "quarantine":
        final = _quarantine_sql(declared, fields)
    else:
        if compiled.texts.get("identities"):
            ctes.append(("sz_identities", compiled.texts["identities"]))
        ctes.append(("sz_assign", compiled.texts["assign"]))
        if table == "users":
            ctes.append(("sz_sessions", _unordered(compiled.texts["sessions"])))
        final = compiled.texts[table]
    text = "WITH " + ",\n".join(f"{name} AS ({body})" for name, body in ctes) + "\n" + final
    tree = sqlglot.parse_one(text, read="duckdb")
    tree = rewrite(tree, dialect)
    return tree.sql(dialect=dialect, pretty=pretty) + "\n"


def _unordered(sql: str) -> str:
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree.set("order", None)
    return tree.sql(dialect="duckdb")


def _quarantine_sql(schema: Mapping[str, str], fields: dict[str, Field | None]) -> str:
    """The rows a standalone query leaves out, with the declared columns and a reason."""
    shown = ", ".join(quote(c) for c in schema)
    return (f"SELECT {shown}, {P}invalid AS quarantine_reason FROM sz_prepared "
            f"WHERE {P}invalid IS NOT NULL")
