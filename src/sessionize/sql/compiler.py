"""Compile the rules to SQL, once, through sqlglot's syntax tree.

The compiler is pure: it takes the :class:`~sessionize.rules.Rules`, where each
field lives in the input (already resolved by the engine against the input's
schema) and the input's column names, and returns syntax trees. Each engine
renders them in its own dialect with :meth:`CompiledRules.sql`; functions that
sqlglot does not translate (epoch arithmetic) are rewritten per dialect here.

The stages, each a view or table in the engine:

``prepared``  the input plus parsed UTC time, resolved user and a reason when
              the row is invalid (bad or missing timestamp, no user id);
``identities`` (identity="stitch"/"first"/"graph") identifier -> resolved user; the
              graph's components are built before it by :mod:`sessionize.sql.identity`;
``assign``    valid rows ordered per user by (time, messageId, input order),
              with the gap to the previous event, the session boundary, its
              reason, the per-user session number and a global session key;
``events``    the input's columns joined back to their assignment, in time order;
``sessions``  one row per session; ``users`` one row per user.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import sqlglot
from sqlglot import exp

from ..errors import InputError
from ..rules import (
    CAMPAIGN_FIELDS,
    OUTPUT_EVENT_COLUMNS,
    PLATFORM_LIBRARIES,
    PLATFORM_PATTERNS,
    Rules,
)
from .dialects import rewriter
from .identity import identification_key, identities_sql

__all__ = ["CompiledRules", "Field", "compile_rules", "enrichment", "field_paths",
           "fields_from_schema", "literal", "quote"]

# Internal columns carry this prefix; they never reach the user's tables.
P = "__sz_"
SEPARATOR = "|"
#: Dialects without ``LAST_VALUE(... IGNORE NULLS)`` (dialects.no_ignore_nulls refuses it).
NO_IGNORE_NULLS = ("postgres",)
_TEXT_TYPES = ("VARCHAR", "JSON")
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                  "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")


def quote(name: str) -> str:
    """A DuckDB-quoted identifier.

    >>> quote('userId'), quote('a"b')
    ('"userId"', '"a""b"')
    """
    return '"' + name.replace('"', '""') + '"'


@dataclasses.dataclass(frozen=True)
class Field:
    """Where one field of the rules lives: a SQL expression over the input and its type."""

    sql: str
    type: str
    top_level: str | None = None  # the input column's name when the field is a whole column


#: The Segment fields the session enrichment (enrich=True) reads; all may be absent.
ENRICH_PATHS = ("context.page.path", "properties.path", "context.page.referrer",
                "context.campaign.source", "context.campaign.medium", "context.campaign.name",
                "context.campaign.term", "context.campaign.content", "context.device.type",
                "context.os.name", "context.library.name")


#: The fields of :class:`~sessionize.rules.Columns` that name columns.
COLUMN_FIELDS = ("user_id", "anonymous_id", "timestamp", "message_id", "event", "type",
                 "received_at", "sent_at", "original_timestamp", "previous_id")


def field_paths(rules: Rules) -> dict[str, tuple[str, bool]]:
    """Every field the rules read: its name in ``compile_rules``' ``fields`` -> (the input
    path, whether the path must exist). Columns the user named must exist; Segment's
    defaults (the library name, ``context.timezone``, the UTM fields) may be absent.

    >>> field_paths(Rules(midnight="event"))["timezone"]
    ('context.timezone', False)
    """
    wanted = {name: (getattr(rules.columns, name), False) for name in COLUMN_FIELDS}
    if rules.gaps_us:
        wanted["gap_by"] = (("context.library.name", False) if rules.gap_by == "platform"
                            else (rules.gap_by, True))
    if rules.midnight == "event":
        wanted["timezone"] = (rules.timezone_column, rules.timezone_column != "context.timezone")
    for i, path in enumerate(rules.campaign):
        wanted[f"campaign_{i}"] = (path, rules.campaign != CAMPAIGN_FIELDS)
    if rules.client_session:
        wanted["client_session"] = (rules.client_session, True)
    if rules.enrich:
        wanted.update({f"enrich:{path}": (path, False) for path in ENRICH_PATHS})
        wanted["enrich:type"] = (rules.columns.type, False)
    wanted.update({f"enrich:{path}": (path, True) for path in rules.first_last})
    return wanted


def fields_from_schema(rules: Rules, schema: Mapping[str, str]) -> dict[str, Field | None]:
    """The fields of ``rules`` in an input of top-level columns (name -> DuckDB type),
    without a database: SQL text for any dialect, and the compiler's tests.

    >>> fields_from_schema(Rules(), {"userId": "VARCHAR"})["user_id"]
    Field(sql='"userId"', type='VARCHAR', top_level='userId')
    """
    fields: dict[str, Field | None] = {}
    for name, (path, required) in field_paths(rules).items():
        if path not in schema and required:
            raise InputError(f"the input has no column {path!r}, which the rules read.\n"
                             f"Hint: the input has: {', '.join(schema)}")
        fields[name] = Field(quote(path), schema[path], top_level=path) if path in schema else None
    return fields


@dataclasses.dataclass(frozen=True)
class CompiledRules:
    """The syntax trees of every stage, ready to render in any dialect.

    Each stage's SQL is parsed into its tree when first used: a run on the columnar
    plan renders two of the eight, and parsing all of them cost 0.1 s per run.
    """

    texts: dict[str, str | None]  # stage -> its SQL as written (None: not used)
    renamed: dict[str, str]
    identity: str = "event"   # the identity policy and its cap, for the diagnostics
    identity_cap: int = 1
    #: input columns that do not ride along with the keys (``join_back=False``) because
    #: an internal column holds the same values: column -> that internal column
    copies: dict[str, str] = dataclasses.field(default_factory=dict)

    def _tree(self, stage: str) -> exp.Expression | None:
        text = self.texts.get(stage)
        return None if text is None else sqlglot.parse_one(text, read="duckdb")

    prepared = functools.cached_property(lambda self: self._tree("prepared"))
    assign = functools.cached_property(lambda self: self._tree("assign"))
    assign_portable = functools.cached_property(lambda self: self._tree("assign_portable"))
    events = functools.cached_property(lambda self: self._tree("events"))
    events_unordered = functools.cached_property(lambda self: self._tree("events_unordered"))
    sessions = functools.cached_property(lambda self: self._tree("sessions"))
    users = functools.cached_property(lambda self: self._tree("users"))
    identities = functools.cached_property(lambda self: self._tree("identities"))
    keys = functools.cached_property(lambda self: self._tree("keys"))

    def sql(self, stage: str, dialect: str = "duckdb", *, pretty: bool = False) -> str:
        if stage == "assign" and dialect in NO_IGNORE_NULLS and self.texts.get("assign_portable"):
            stage = "assign_portable"
        tree = getattr(self, stage)
        if dialect != "duckdb":
            tree = tree.transform(_dialect_rewriter(dialect))
        return tree.sql(dialect=dialect, pretty=pretty)


def _dialect_rewriter(dialect: str):
    """Rewrite functions sqlglot passes through or mistranslates (each found by a test).

    The passes live in :mod:`sessionize.sql.dialects`, one per function, each with a doctest.
    """
    return rewriter(dialect)


def _epoch_to_timestamp(number: str, unit: str) -> str:
    """Epoch seconds / milliseconds / microseconds (``auto``: by magnitude) to TIMESTAMPTZ."""
    scale = {
        "s": "1000000",
        "ms": "1000",
        "us": "1",
        "auto": f"CASE WHEN abs({number}) < 1e11 THEN 1000000 "
                f"WHEN abs({number}) < 1e14 THEN 1000 ELSE 1 END",
    }[unit]
    micros = f"TRY_CAST(round({number} * ({scale})) AS BIGINT)"
    return (f"CASE WHEN abs({number}) < 1e17 "
            f"THEN CAST(make_timestamp({micros}) AS TIMESTAMPTZ) END")


#: The timestamp text sessionize accepts (docs/guide.md, "Timestamps"): an ISO-8601 date,
#: optionally an RFC 3339 time (``T`` or a space between; seconds required, a fraction
#: optional) and offset (``Z`` or ``+HH:MM``, at most 14 hours). Spark's cast refuses the
#: compact forms (``+0530``, ``+05``, ``09:00Z``), so no engine takes them. Anything else
#: that is text is a number (epoch, :data:`EPOCH_TEXT`) or invalid.
ISO_TEXT = ("[0-9]{4}-[0-9]{2}-[0-9]{2}([T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            "(\\.[0-9]+)?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?")
#: Epoch numbers as text: digits, an optional fraction and an optional exponent.
EPOCH_TEXT = "[+-]?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?"
#: The instants sessionize accepts, in UTC microseconds since 1970: 0001-01-01T00:00:00Z to
#: 9999-12-31T23:59:59.999999Z (what Parquet, Arrow and pandas readers hold as a date).
TS_RANGE_US = (-62135596800000000, 253402300799999999)


def timestamp_sql(field: Field, unit: str) -> str:
    """SQL that parses the timestamp field to a UTC TIMESTAMPTZ, NULL when invalid.

    Text is accepted when it matches :data:`ISO_TEXT` (no offset means UTC) or
    :data:`EPOCH_TEXT` (an epoch number). The range (:data:`TS_RANGE_US`) is checked in
    the ``prepared`` stage, for every kind of input.
    """
    kind = field.type.upper()
    ref = field.sql
    if kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION")):
        kind = "NESTED"  # a list or a struct is not a time, whatever its elements are
    if kind.startswith("TIMESTAMP WITH TIME ZONE"):
        return ref
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"CAST(CAST({ref} AS TIMESTAMP) AS TIMESTAMPTZ)"
    if kind.startswith(_NUMERIC_TYPES):
        return _epoch_to_timestamp(f"CAST({ref} AS DOUBLE)", unit)
    if kind.startswith(_TEXT_TYPES):
        text = f"{P}ts_text"  # trimmed once, in the stage below (see timestamp_text_sql)
        # ISO text (YYYY-MM-DD...) is matched against the grammar and then cast; only the
        # rest is matched against the number pattern.
        return (
            f"CASE WHEN length({text}) >= 10 AND {text}[5] = '-' "
            f"THEN CASE WHEN regexp_full_match({text}, '{ISO_TEXT}') "
            f"THEN TRY_CAST({text} AS TIMESTAMPTZ) END "
            f"WHEN regexp_full_match({text}, '{EPOCH_TEXT}') "
            f"THEN {_epoch_to_timestamp(f'TRY_CAST({text} AS DOUBLE)', unit)} END"
        )
    raise InputError(
        f"the timestamp column has type {field.type}, which sessionize cannot read as a time.\n"
        "Hint: timestamps may be TIMESTAMP/DATE, ISO-8601 text, or epoch seconds/milliseconds."
    )


def timestamp_text_sql(field: Field) -> str | None:
    """The trimmed text of a textual timestamp field (computed once per row), else None."""
    kind = field.type.upper()
    if not kind.startswith(_TEXT_TYPES):
        return None
    return f"trim({field.sql} ->> '$')" if kind == "JSON" else f"trim(CAST({field.sql} AS VARCHAR))"


def _text_sql(field: Field | None) -> str:
    """A field as text (JSON strings unquoted)."""
    if field is None:
        return "CAST(NULL AS VARCHAR)"
    if field.type.upper() == "JSON":
        return f"({field.sql} ->> '$')"
    if field.type.upper() == "VARCHAR":
        return field.sql
    return f"CAST({field.sql} AS VARCHAR)"


def text_column(field: Field | None) -> str | None:
    """The input column that :func:`_text_sql` renders ``field`` as, unchanged (a
    top-level text column), else ``None``: the column and the expression are then the
    same values, which the columnar plan reads once."""
    if field is None or field.top_level is None or field.type.upper() != "VARCHAR":
        return None
    return field.top_level if _text_sql(field) == quote(field.top_level) else None


#: Unicode's White_Space characters and the BOM: an id made only of these is missing.
BLANK_CHARACTERS = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")


def _id_sql(field: Field | None) -> str:
    """An identifier as text; empty or blank strings (only :data:`BLANK_CHARACTERS`),
    booleans, lists and objects count as missing (never a user). Numbers are ids.

    Only a string whose first byte is below ``!`` or from U+0085 on can be blank, so only
    those are trimmed: a byte comparison, which DuckDB and Spark run without decoding
    (10M events: 0.25 s; trimming every id cost 2-3 s)."""
    if field is None:
        return _text_sql(field)
    kind = field.type.upper()
    if kind == "BOOLEAN" or kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION")):
        return "CAST(NULL AS VARCHAR)"
    text = _text_sql(field)
    blank = (f"{text} = '' OR (({text} < '!' OR {text} >= chr(133)) "
             f"AND trim({text}, {literal(BLANK_CHARACTERS)}) = '')")
    if kind == "JSON":  # the raw JSON tells a string from true, false, [...] and {...}
        raw = f"CAST({field.sql} AS VARCHAR)"
        blank += (f" OR {raw} IN ('true', 'false') OR {raw} LIKE '[%' "
                  f"OR {raw} LIKE '{{%'")
    return f"CASE WHEN {blank} THEN NULL ELSE {text} END"


def platform_sql(lib: str) -> str:
    """web / mobile / server from a library name's text (``rules.PLATFORM_LIBRARIES``,
    then ``rules.PLATFORM_PATTERNS``, else server); NULL when it is missing or blank.

    >>> print(platform_sql("x")[:60])
    CASE WHEN x IS NULL OR trim(x) = '' THEN NULL WHEN lower(tri
    """
    return (f"CASE WHEN {lib} IS NULL OR trim({lib}) = '' THEN NULL "
            f"{platform_cases(f'lower(trim({lib}))')} ELSE 'server' END")


def platform_cases(name: str) -> str:
    """The ``WHEN ... THEN platform`` branches for a lower-cased, trimmed library name:
    the listed names, then the patterns (shared with the threshold analysis)."""
    cases = [f"WHEN {name} IN ({', '.join(literal(n) for n in names)}) THEN '{group}'"
             for group, names in PLATFORM_LIBRARIES.items()]
    cases += [f"WHEN regexp_matches({name}, {literal(pattern)}) THEN '{group}'"
              for group, pattern in PLATFORM_PATTERNS]
    return " ".join(cases)


@dataclasses.dataclass(frozen=True)
class _RuleSQL:
    """The SQL pieces of the rules beyond the notebook's (all empty for the plain rule)."""

    columns: list[tuple[str, str]]   # computed in ``prepared`` (name without prefix, SQL)
    threshold: str                   # the gap in force after the previous event
    boundaries: str                  # further WHEN ... THEN '<reason>' branches
    lags: list[tuple[str, str]]      # window expressions over the user's order
    since: str = f"{P}prev_us"       # the time the gap is measured from
    # the last non-NULL value of an expression before the current event (name, SQL)
    carries: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def carried(self) -> str:
        return "".join(f", {P}{name}" for name, _ in self.columns)

    def windows(self, order: str, *, ignore_nulls: bool = True) -> str:
        """The window columns of the reasons stage. ``ignore_nulls=False``: the carried
        values are counted here and finished by :meth:`islands` (no ``IGNORE NULLS``)."""
        lags = list(self.lags)
        for name, sql in self.carries:
            if ignore_nulls:
                lags.append((name, f"LAST_VALUE({sql} IGNORE NULLS) OVER "
                                   f"({{order}} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"))
            else:
                lags.append((f"{name}_n", f"COUNT({sql}) OVER ({{order}} ROWS BETWEEN UNBOUNDED "
                                          "PRECEDING AND CURRENT ROW)"))
        return "".join(f",\n                            {sql.format(order=order)} AS {P}{name}"
                       for name, sql in lags)

    def islands(self, inner: str, order: str) -> str:
        """``inner`` with the carried values added without ``IGNORE NULLS``, which some
        engines lack (PostgreSQL) and sqlglot drops silently: the non-NULL values so far
        are counted (``_n``), each count's group takes its one non-NULL value (``_v``),
        and an event takes its group's value, or the previous group's when its own value
        is not NULL (the value *before* the event)."""
        if not self.carries:
            return inner
        groups = ", ".join(f"MAX({sql}) OVER (PARTITION BY {P}user, {P}{name}_n) AS {P}{name}_v"
                           for name, sql in self.carries)
        values = ", ".join(f"CASE WHEN ({sql}) IS NULL THEN {P}{name}_v "
                           f"ELSE LAG({P}{name}_v) OVER ({order}) END AS {P}{name}"
                           for name, sql in self.carries)
        return f"(SELECT *, {values} FROM (SELECT *, {groups} FROM {inner}))"


def _other_time_sql(field: Field | None, unit: str) -> str:
    """Parse another of Segment's times (receivedAt, sentAt, ...) like the timestamp."""
    if field is None:
        return "CAST(NULL AS TIMESTAMPTZ)"
    sql = timestamp_sql(field, unit)
    text = timestamp_text_sql(field)
    return sql if text is None else sql.replace(f"{P}ts_text", f"({text})")


def _clock_skew_sql(ts: str, fields: dict[str, Field | None], unit: str) -> str:
    """Segment's correction for device clocks: receivedAt - (sentAt - originalTimestamp).

    Used where all three are present; elsewhere the chosen time stands.
    """
    received, sent, original = (
        f"EPOCH_US({_other_time_sql(fields.get(name), unit)})"
        for name in ("received_at", "sent_at", "original_timestamp"))
    return (f"CASE WHEN {received} IS NOT NULL AND {sent} IS NOT NULL AND {original} IS NOT NULL "
            f"THEN CAST(make_timestamp({received} - ({sent} - {original})) AS TIMESTAMPTZ) "
            f"ELSE {ts} END")


#: Session-table enrichment (enrich=True): output column -> Segment field it reads.
ENRICH_FIRST = {
    "landing_page": "page_path", "referrer": "context.page.referrer",
    "utm_source": "context.campaign.source", "utm_medium": "context.campaign.medium",
    "utm_campaign": "context.campaign.name", "utm_term": "context.campaign.term",
    "utm_content": "context.campaign.content", "device_type": "context.device.type",
    "os_name": "context.os.name", "platform": "context.library.name",
}


#: How a session enrichment aggregates its per-event value (:func:`enrichment`).
ENRICH_AGGREGATES = ("first", "last", "count", "bounce")


def enrichment(rules: Rules, fields: dict[str, Field | None],
               side: str = "i") -> list[tuple[str, str, str]]:
    """The session enrichment (``enrich=``, ``first_last=``): per output column, how it
    aggregates (:data:`ENRICH_AGGREGATES`) and the per-event value it aggregates, as SQL
    over the input (its columns qualified by ``side``):

    - ``first``/``last``: the first/last *non-missing* value in the session's order;
    - ``count``: the events whose value (a condition) is true;
    - ``bounce``: at most one event whose value is true, and the session lasts less than
      ``bounce``.

    The SQL plan aggregates these in SQL (:func:`_enrichment_sql`), the columnar plan
    over its runs of the (user, time) order, from the same values.

    >>> enrichment(Rules(first_last=("plan",)), {"enrich:plan": Field('"plan"', "VARCHAR")})
    [('first_plan', 'first', 'i."plan"'), ('last_plan', 'last', 'i."plan"')]
    """
    def text(key: str) -> str:
        field = fields.get(f"enrich:{key}")
        if field is None:
            return "CAST(NULL AS VARCHAR)"
        return _text_sql(dataclasses.replace(field, sql=_qualify(field.sql, side)))

    out: list[tuple[str, str, str]] = []
    if rules.enrich:
        path = f"coalesce({text('context.page.path')}, {text('properties.path')})"
        for name, key in ENRICH_FIRST.items():
            expr = path if key == "page_path" else text(key)
            if key == "context.library.name":
                expr = platform_sql(expr)
            out.append((name, "first", expr))
        out.insert(1, ("exit_page", "last", path))
        kind = f"lower({text('type')})"
        out.append(("page_views", "count", f"{kind} = 'page'"))
        out.append(("screens", "count", f"{kind} = 'screen'"))
        out.append(("is_bounce", "bounce", f"{kind} IN ('page', 'screen')"))
    for column in rules.first_last:
        label = column.replace(".", "_")
        field = fields[f"enrich:{column}"]
        if field is None:
            value = "NULL"
        elif field.type.upper() == "JSON":  # values of JSON inputs come back as plain text
            value = _text_sql(dataclasses.replace(field, sql=_qualify(field.sql, side)))
        else:
            value = _qualify(field.sql, side)
        out.append((f"first_{label}", "first", value))
        out.append((f"last_{label}", "last", value))
    return out


def _enrichment_sql(rules: Rules, fields: dict[str, Field | None],
                    side: str = "i") -> list[tuple[str, str]]:
    """Aggregates over a session's events (joined back to the input by row)."""
    def aggregate(how: str, value: str) -> str:
        if how in ("first", "last"):
            pick = "arg_min" if how == "first" else "arg_max"
            return f"{pick}({value}, a.{P}seq) FILTER (WHERE {value} IS NOT NULL)"
        if how == "count":
            return f"count(*) FILTER (WHERE {value})"
        return (f"count(*) FILTER (WHERE {value}) <= 1 AND max(a.{P}ts_us) - min(a.{P}ts_us) "
                f"< {rules.bounce_us}")

    return [(name, aggregate(how, value)) for name, how, value in enrichment(rules, fields, side)]


def _qualify(sql: str, side: str = "i") -> str:
    """Point a field's SQL at the input side (``i``) of the enrichment join (``a``, the
    assignment, when the input's columns ride along)."""
    return f"{side}." + sql if sql.startswith('"') else sql.replace('("', f'({side}."', 1)


def _rule_sql(rules: Rules, fields: dict[str, Field | None], name: str = f"{P}name") -> _RuleSQL:
    """Per-event gaps, midnight, campaign, start/end events and client session ids.

    ``name`` is the event name's SQL: the columns computed here sit in the select that
    names it, and only DuckDB lets a select read its own aliases."""
    columns: list[tuple[str, str]] = []
    lags: list[tuple[str, str]] = []
    carries: list[tuple[str, str]] = []
    branches: list[str] = []
    threshold = str(rules.gap_us)
    before = "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
    if rules.gaps_us:
        key = _text_sql(fields.get("gap_by"))
        if rules.gap_by == "platform":
            key = platform_sql(key)
        cases = " ".join(f"WHEN {literal(k)} THEN {us}" for k, us in rules.gaps_us)
        columns.append(("gap_us", f"CASE {key} {cases} ELSE {rules.gap_us} END"))
        lags.append(("prev_gap_us", f"LAG({P}gap_us) OVER ({{order}})"))
        threshold = f"{P}prev_gap_us"
    if rules.midnight is not None:
        if rules.midnight == "event":
            columns.append(("zone", f"coalesce({_text_sql(fields.get('timezone'))}, 'UTC')"))
            zone = f"{P}zone"
        else:
            zone = literal(rules.midnight)
        branches.append(
            f"WHEN CAST(timezone({zone}, {P}prev_ts) AS DATE) "
            f"<> CAST(timezone({zone}, {P}ts) AS DATE) THEN 'midnight'")
    if rules.campaign:
        parts = [_text_sql(fields.get(f"campaign_{i}")) for i in range(len(rules.campaign))]
        present = " OR ".join(f"{part} IS NOT NULL" for part in parts)
        joined = " || '|' || ".join(f"coalesce({part}, '')" for part in parts)
        columns.append(("campaign", f"CASE WHEN {present} THEN {joined} END"))
        carries.append(("last_campaign", f"{P}campaign"))
        branches.append(
            f"WHEN {P}campaign <> {P}last_campaign THEN 'campaign_change'")
    if rules.start_events or rules.end_events:
        tests = []
        if rules.start_events:
            tests.append(f"{P}name IN ({', '.join(map(literal, rules.start_events))})")
        if rules.end_events:
            lags.append(("prev_name", f"LAG({P}name) OVER ({{order}})"))
            tests.append(f"{P}prev_name IN ({', '.join(map(literal, rules.end_events))})")
        branches.append(f"WHEN {' OR '.join(tests)} THEN 'start_event'")
    if rules.client_session:
        columns.append(("client_session", _text_sql(fields.get("client_session"))))
        if rules.client_session_mode == "split":  # "compare" only carries the id along
            carries.append(("last_client_session", f"{P}client_session"))
            branches.append(
                f"WHEN {P}client_session <> {P}last_client_session THEN 'client_session'")
    if rules.user_change:
        # A device (anonymousId) whose previous event went to another resolved user changed
        # hands: its next event starts a session, whatever the gap.
        columns.append(("device", _id_sql(fields.get("anonymous_id"))))
        lags.append(("device_prev_user",
                     f"CASE WHEN {P}device IS NOT NULL THEN LAG({P}user) OVER (PARTITION BY "
                     f"{P}device ORDER BY {P}ts, {P}msg, {P}row) END"))
        branches.append(f"WHEN {P}device_prev_user <> {P}user THEN 'user_change'")
    since = f"{P}prev_us"
    if rules.passive_events:
        # Passive events join the open session but do not keep it alive: an active event
        # measures its gap from the last active event before it (from the previous event
        # when there is none); a passive event from the previous event.
        names = ", ".join(map(literal, rules.passive_events))
        columns.append(("passive", f"coalesce(({name}) IN ({names}), false)"))
        # times only grow along the user's order: the last active time is their maximum
        lags.append(("last_active_us", f"MAX(CASE WHEN {P}passive THEN NULL ELSE "
                                       f"{P}ts_us END) OVER ({{order}} {before})"))
        use_prev = f"{P}passive OR {P}last_active_us IS NULL"
        since = f"CASE WHEN {use_prev} THEN {P}prev_us ELSE {P}last_active_us END"
        if rules.gaps_us:
            carries.append(("last_active_gap_us",
                            f"CASE WHEN {P}passive THEN NULL ELSE {P}gap_us END"))
            threshold = (f"CASE WHEN {use_prev} THEN {P}prev_gap_us "
                         f"ELSE {P}last_active_gap_us END")
    boundaries = "".join(f"{b}\n                             " for b in branches)
    return _RuleSQL(columns, threshold, boundaries, lags, since, carries)


def literal(text: str) -> str:
    """``text`` as a SQL string literal.

    >>> literal("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


def _identity_sql(rules: Rules, rule: _RuleSQL, inputs: str = "") -> tuple[str, str | None]:
    """The events with their resolved user (a table or subquery) and the identities stage.

    ``event``: the notebook's per-event coalesce, straight from ``sz_prepared``.
    ``stitch`` / ``first``: anonymousId -> userId from every event carrying both, the
    latest (or first) identification winning, ties broken like events (time, messageId
    with missing last, input order). ``graph``: the components that
    :mod:`sessionize.sql.identity` leaves in ``sz_graph_nodes``; an event is resolved
    through its own key (userId, else anonymousId).
    """
    if rules.identity == "event":
        return "sz_prepared", None
    # explicit columns, not `* REPLACE`, so the same tree runs on Spark
    carried = "".join(f", p.{P}{name}" for name, _ in rule.columns)
    columns = f"p.{P}ts, p.{P}msg, p.{P}name, p.{P}invalid{carried}{inputs}"
    if rules.identity == "graph":

        changed = ("(SELECT identifier, resolved_user FROM sz_identities "
                   "WHERE resolved_user <> identifier)")
        resolved = (f"(SELECT p.{P}row, coalesce(m.resolved_user, p.{P}user) AS {P}user, "
                    f"{columns} FROM sz_prepared AS p LEFT JOIN {changed} AS m "
                    f"ON m.identifier = p.{P}user)")
        return resolved, identities_sql()
    pick = "arg_max" if rules.identity == "stitch" else "arg_min"
    identities = f"""
        SELECT {P}aid AS identifier,
            {pick}({P}uid, {identification_key()}) AS resolved_user,
            '{'latest' if rules.identity == 'stitch' else 'first'}_identification' AS rule,
            count(DISTINCT {P}uid) AS user_ids
        FROM sz_prepared
        WHERE {P}invalid IS NULL AND {P}uid IS NOT NULL AND {P}aid IS NOT NULL
        GROUP BY {P}aid
    """
    resolved = (f"(SELECT p.{P}row, coalesce(p.{P}uid, m.resolved_user, p.{P}aid) "
                f"AS {P}user, {columns} FROM sz_prepared AS p LEFT JOIN sz_identities AS m "
                f"ON m.identifier = p.{P}aid)")
    return resolved, identities


def _same_as_internal(fields: dict[str, Field | None], ts: str, msg: str) -> dict[str, str]:
    """Input columns whose values the ``prepared`` stage copies unchanged into an internal
    column: column -> that internal column. Columns the session enrichment reads are not
    listed (it reads the input's columns by name)."""
    read = {f.top_level for name, f in fields.items() if name.startswith("enrich:") and f}
    same = {}
    ts_field, msg_field = fields.get("timestamp"), fields.get("message_id")
    if ts_field is not None and ts_field.top_level is not None and ts == ts_field.sql:
        same[ts_field.top_level] = f"{P}ts"
    if msg_field is not None and text_column(msg_field) is not None and msg == msg_field.sql:
        same[msg_field.top_level] = f"{P}msg"
    return {col: internal for col, internal in same.items() if col not in read}


def session_key_sql(user: str, start_us: str) -> str:
    """The session key: the first 20 hex digits of the MD5 of the user and the session's
    first time in microseconds (docs/guide.md, "session_key")."""
    return f"substr(md5({user} || '{SEPARATOR}' || CAST({start_us} AS VARCHAR)), 1, 20)"


def compile_rules(rules: Rules, fields: dict[str, Field | None], input_columns: Sequence[str],
                  *, source: str = "sz_input", join_back: bool = True,
                  ignore_nulls: bool = True, carry_micros: bool = False) -> CompiledRules:
    """Build the syntax trees of every stage for the given input.

    ``fields`` maps each name of :class:`~sessionize.rules.Columns` to where it
    lives in the input (``None`` when absent). ``timestamp`` must be present,
    and at least one of ``user_id`` and ``anonymous_id``.

    ``join_back=True`` (the engines): the windows run on a narrow projection and the
    input's columns are joined back by ``__sz_row``, which must then be unique.
    ``join_back=False`` (a standalone query, sql/standalone.py): the input's columns ride
    along through the windows, so ``__sz_row`` is only the last tie-breaker and may repeat
    (identical rows). ``ignore_nulls=False``: no ``LAST_VALUE(... IGNORE NULLS)``, for
    engines that lack it (:meth:`_RuleSQL.islands`). ``carry_micros=True``: each event's
    microseconds are computed once before the first window and carried through it, for
    engines whose exact epoch arithmetic is dear (PostgreSQL's numeric ``EXTRACT``); by
    default that window sorts one column fewer and they are computed after it.
    """
    ts_field = fields.get("timestamp")
    if ts_field is None:
        raise InputError(f"the input has no timestamp column {rules.columns.timestamp!r}")
    ts_column = ts_field.top_level
    renamed = {}
    output_names = set(OUTPUT_EVENT_COLUMNS) | ({"timestamp"} if ts_column is None else set())
    for name in input_columns:
        if name in output_names:
            renamed[name] = f"input_{name}"
    # --- prepared: parse, resolve, validate -------------------------------------------
    ts = timestamp_sql(ts_field, rules.timestamp_unit)
    ts_text = timestamp_text_sql(ts_field)
    with_text = "" if ts_text is None else f", {ts_text} AS {P}ts_text"
    user = _id_sql(fields.get("user_id"))
    anon = _id_sql(fields.get("anonymous_id"))
    msg = _text_sql(fields.get("message_id"))
    name = f"coalesce({_text_sql(fields.get('event'))}, {_text_sql(fields.get('type'))})"
    if rules.clock_skew == "segment":
        ts = _clock_skew_sql(ts, fields, rules.timestamp_unit)
    dedupe_rank = ""
    if rules.dedupe:
        # Segment delivers at least once: the copy received first is the event.
        received = _other_time_sql(fields.get("received_at"), rules.timestamp_unit)
        dedupe_rank = (f", CASE WHEN {msg} IS NULL THEN 1 ELSE ROW_NUMBER() OVER "
                       f"(PARTITION BY {msg} ORDER BY {received}, {P}row) END AS {P}copy")
    rule = _rule_sql(rules, fields, name)
    rule_columns = "".join(f",\n                {sql} AS {P}{name}" for name, sql in rule.columns)
    dup_check = (f"\n                 WHEN {P}copy > 1 THEN 'duplicate_message_id'"
                 if rules.dedupe else "")
    zone_check = (f"\n                 WHEN {P}zone NOT IN (SELECT name FROM pg_timezone_names()) "
                  "THEN 'invalid_timezone'" if rules.midnight == "event" else "")
    graph_columns = ""
    if rules.identity == "graph":  # alias calls link previousId -> userId
        graph_columns = (f",\n                {_id_sql(fields.get('previous_id'))} AS {P}prev_id, "
                         f"lower({_text_sql(fields.get('type'))}) = 'alias' AS {P}alias")
    prepared = f"""
        SELECT *,
            CASE WHEN {ts_field.sql} IS NULL THEN 'missing_timestamp'
                 WHEN {P}ts IS NULL OR EPOCH_US({P}ts) NOT BETWEEN {TS_RANGE_US[0]}
                     AND {TS_RANGE_US[1]} THEN 'invalid_timestamp'
                 WHEN {P}user IS NULL THEN 'missing_user'{zone_check}{dup_check} END
                AS {P}invalid
        FROM (
            SELECT *, {ts} AS {P}ts, coalesce({user}, {anon}) AS {P}user, {user} AS {P}uid,
                {anon} AS {P}aid,
                {msg} AS {P}msg, {name} AS {P}name{rule_columns}{graph_columns}
            FROM (SELECT *{with_text}{dedupe_rank} FROM {source})
        )
    """
    # --- assign: order, gap, boundary, number, key (narrow: only what the windows need) ---
    # Windows sort every column they carry, so they run on a narrow projection and the
    # input's own columns are joined back by row afterwards.
    # Every window of the user's order names the same order (the time itself, not its
    # microseconds: the same order, and nothing to compute before the sort), so an engine
    # that keeps its rows sorted between windows (PostgreSQL) sorts once for all of them.
    order = f"PARTITION BY {P}user ORDER BY {P}ts, {P}msg, {P}row"
    running = f"{order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    # --- identity: event (the notebook's per-event coalesce), stitched, or the graph --------
    # An input column that holds exactly an internal one (a TIMESTAMPTZ time, a text
    # messageId) does not ride along twice: the events read the internal one.
    same = _same_as_internal(fields, ts, msg)
    riders = [] if join_back else [c for c in input_columns if c not in same]
    riding = "".join(f", {quote(c)}" for c in riders)
    resolved, identities = _identity_sql(rules, rule, "".join(f", p.{quote(c)}" for c in riders))
    # keys: the valid events, narrow; the windows (or the columnar plan, kernel.py) read them
    def valid(micros: str) -> str:
        return (f"SELECT {P}row, {P}user, {P}ts{micros}, {P}msg, {P}name"
                f"{rule.carried}{riding} FROM {resolved} WHERE {P}invalid IS NULL")

    keys = valid(f", EPOCH_US({P}ts) AS {P}ts_us")
    windows = rule.windows(order, ignore_nulls=ignore_nulls)
    if carry_micros or f"{P}ts_us" in windows:  # a rule's window reads the microseconds
        lagged = f"""(
                        SELECT *,
                            LAG({P}ts) OVER ({order}) AS {P}prev_ts,
                            LAG({P}ts_us) OVER ({order}) AS {P}prev_us,
                            ROW_NUMBER() OVER ({order}) AS {P}seq{windows}
                        FROM ({keys})
                    )"""
    else:  # the first window sorts and carries one column fewer
        lagged = f"""(
                        SELECT *, EPOCH_US({P}ts) AS {P}ts_us, EPOCH_US({P}prev_ts) AS {P}prev_us
                        FROM (
                            SELECT *,
                                LAG({P}ts) OVER ({order}) AS {P}prev_ts,
                                ROW_NUMBER() OVER ({order}) AS {P}seq{windows}
                            FROM ({valid("")})
                        )
                    )"""
    if not ignore_nulls:
        lagged = rule.islands(lagged, order)
    reasons = f"""(
                    SELECT *,
                        CASE WHEN {P}prev_us IS NULL THEN 'first_event'
                             WHEN {P}ts_us - ({rule.since}) > {rule.threshold}
                                THEN 'inactivity'
                             {rule.boundaries}END AS {P}reason
                    FROM {lagged}
                )"""
    if rules.max_duration_us:
        # A session the other rules made that runs longer than max_duration is cut into
        # consecutive windows of max_duration from its first event; the first event in
        # each later window starts a session. A window includes its end (like the gap).
        m = rules.max_duration_us
        reasons = f"""(
                SELECT *,
                    coalesce({P}base_reason, CASE WHEN {P}piece <> LAG({P}piece)
                        OVER ({order}) THEN 'max_duration' END) AS {P}cut_reason
                FROM (
                    SELECT *,
                        CASE WHEN {P}ts_us = {P}base_start_us THEN 0
                             ELSE CAST(floor(({P}ts_us - {P}base_start_us - 1) / {m}) AS BIGINT)
                        END AS {P}piece
                    FROM (
                        SELECT *, {P}reason AS {P}base_reason,
                            MAX(CASE WHEN {P}reason IS NULL THEN NULL ELSE {P}ts_us END)
                                OVER ({running}) AS {P}base_start_us
                        FROM {reasons}
                    )
                )
            )"""
    start = f"{P}cut_reason" if rules.max_duration_us else f"{P}reason"
    # The key hashes the user and the session's first time, once per session (at its
    # first event), and is carried to the session's other events. Without IGNORE NULLS
    # (PostgreSQL) the carried value is the running maximum of the session starts' keys,
    # each prefixed with its start time as fixed-width digits: times only grow along the
    # user's order, so the maximum is the latest start's, and the prefix is cut off after.
    def key_of(start_us: str) -> str:
        return session_key_sql(f"{P}user", start_us)

    def assigned(ignore: bool) -> str:
        if ignore:
            key_window = (f"LAST_VALUE(CASE WHEN {start} IS NULL THEN NULL "
                          f"ELSE {key_of(f'{P}ts_us')} END IGNORE NULLS) OVER ({running}) "
                          f"AS {P}key")
            key = f"{P}key"
        else:
            digits = len(str(TS_RANGE_US[1] - TS_RANGE_US[0]))
            ordered_key = (f"lpad(CAST({P}ts_us - ({TS_RANGE_US[0]}) AS VARCHAR), {digits}, "
                           f"'0') || {key_of(f'{P}ts_us')}")
            key_window = (f"MAX(CASE WHEN {start} IS NULL THEN NULL ELSE {ordered_key} END "
                          f'COLLATE "C") OVER ({running}) AS {P}start_key')
            key = f"substr({P}start_key, {digits + 1}) AS {P}key"
        return f"""
        SELECT {P}row, {P}user, {P}ts, {P}ts_us, {P}msg, {P}name, {P}seq, {P}prev_ts,
            {start} AS {P}reason, {P}session, {key}{rule.carried}{riding}
        FROM (
            SELECT *,
                CAST(SUM(CASE WHEN {start} IS NULL THEN 0 ELSE 1 END) OVER ({running}) AS BIGINT)
                    AS {P}session,
                {key_window}
            FROM {reasons}
        )
    """

    assign = assigned(ignore_nulls)
    # Result.sql renders this run's stages in another dialect: one without IGNORE NULLS
    # gets the key carried the other way (the rules' own carries are still refused there)
    assign_portable = assigned(False) if ignore_nulls else None
    # --- events: the input's columns, the parsed time, and the assignment ---------------
    visible = []
    side = "i" if join_back else "a"  # where the input's columns are read
    for col in input_columns:
        if col == ts_column:
            visible.append(f"a.{P}ts AS {quote(col)}")
        elif col in same and not join_back:
            visible.append(f"a.{same[col]} AS {quote(renamed.get(col, col))}")
        elif col in renamed:
            visible.append(f"{side}.{quote(col)} AS {quote(renamed[col])}")
        else:
            visible.append(f"{side}.{quote(col)}")
    if ts_column is None:
        visible.append(f"a.{P}ts AS timestamp")
    events = f"""
        SELECT {", ".join(visible)},
            a.{P}user AS resolved_user,
            a.{P}prev_ts AS prev_timestamp,
            a.{P}ts - a.{P}prev_ts AS time_since_last_event,
            a.{P}reason IS NOT NULL AS new_session,
            a.{P}session AS session_id,
            a.{P}key AS session_key,
            a.{P}reason AS start_reason
        FROM {f"{source} AS i JOIN sz_assign AS a ON i.{P}row = a.{P}row"
              if join_back else "sz_assign AS a"}
    """
    # events_unordered: the same rows in the engine's order, for events_order="none"
    events_unordered = events
    events += f"ORDER BY a.{P}ts, a.{P}user, a.{P}msg, a.{P}row\n"
    # arg_max skips NULL values on some engines; a sentinel keeps a nameless last event nameless.
    sessions = f"""
        SELECT {P}user AS resolved_user, {P}session AS session_id,
            {session_key_sql(P + "user", f"min({P}ts_us)")} AS session_key,
            min({P}ts) AS session_start,
            max({P}ts) AS session_end,
            CAST(max({P}ts_us) - min({P}ts_us) AS DOUBLE) / 1000000 AS duration_seconds,
            count(*) AS event_count,
            max({P}reason) AS start_reason,
            max(CASE WHEN {P}reason IS NULL THEN NULL ELSE {P}name END) AS first_event,
            nullif(arg_max(coalesce({P}name, chr(31)), {P}seq), chr(31)) AS last_event
        FROM sz_assign
        GROUP BY {P}user, {P}session
        ORDER BY resolved_user, session_id
    """
    enrichment = _enrichment_sql(rules, fields, side)
    if enrichment:
        sessions = f"""
        SELECT s.*, {", ".join(f"e.{quote(name)}" for name, _ in enrichment)}
        FROM ({sessions}) AS s
        LEFT JOIN (
            SELECT a.{P}user AS {P}euser, a.{P}session AS {P}esession,
                {", ".join(f"{sql} AS {quote(name)}" for name, sql in enrichment)}
            FROM {f"sz_assign AS a JOIN {source} AS i ON i.{P}row = a.{P}row"
                  if join_back else "sz_assign AS a"}
            GROUP BY a.{P}user, a.{P}session
        ) AS e ON e.{P}euser = s.resolved_user AND e.{P}esession = s.session_id
        ORDER BY s.resolved_user, s.session_id
    """
    users = """
        SELECT resolved_user,
            count(*) AS session_count,
            CAST(sum(event_count) AS BIGINT) AS event_count,
            min(session_start) AS first_seen,
            max(session_end) AS last_seen
        FROM sz_sessions
        GROUP BY resolved_user
        ORDER BY resolved_user
    """
    return CompiledRules({"prepared": prepared, "assign": assign,
                          "assign_portable": assign_portable, "events": events,
                          "events_unordered": events_unordered,
                          "sessions": sessions, "users": users, "identities": identities,
                          "keys": keys}, renamed,
                         identity=rules.identity, identity_cap=rules.graph_cap,
                         copies={} if join_back else same)

