"""Per-dialect rewrites of the compiled rules' syntax trees.

The compiler writes DuckDB SQL; sqlglot renders it in other dialects, but a few
DuckDB functions pass through untranslated or are translated to something that
means another thing (found by tests on each engine). Each rewrite below is one small, pure
pass over one kind of node, with a doctest showing the SQL it produces, so a
wrong translation is found by reading one function, not by a failing cluster run.

:func:`rewrite` applies every pass registered for a dialect; DuckDB needs none.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp

__all__ = ["rewrite", "rewriter"]

Pass = Callable[[exp.Expression, str], exp.Expression]
_SPARK = ("spark", "spark2", "databricks")


def _show(sql: str, dialect: str = "spark") -> str:
    """DuckDB SQL rewritten and rendered in ``dialect`` (for the doctests)."""
    return rewrite(sqlglot.parse_one(sql, read="duckdb"), dialect).sql(dialect=dialect)


def epoch_micros(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``epoch_us(ts)`` passes through untranslated.

    >>> _show("SELECT epoch_us(ts)")
    'SELECT UNIX_MICROS(ts)'
    >>> _show("SELECT epoch_us(ts)", "snowflake")
    'SELECT DATE_PART(EPOCH_MICROSECOND, ts)'
    >>> _show("SELECT epoch_us(ts)", "postgres")
    'SELECT CAST(EXTRACT(EPOCH FROM ts) * 1000000 AS BIGINT)'
    >>> _show("SELECT epoch_us(CASE WHEN regexp_full_match(t, 'a') THEN x END)")
    "SELECT UNIX_MICROS(CASE WHEN t RLIKE '^(?:a)$' THEN x END)"
    """
    if not (isinstance(node, exp.Anonymous) and node.name.upper() == "EPOCH_US"):
        return node
    arg = node.expressions[0]
    if dialect in (*_SPARK, "bigquery"):
        return exp.Anonymous(this="UNIX_MICROS", expressions=[arg])
    if dialect == "snowflake":
        return exp.Anonymous(this="DATE_PART", expressions=[exp.var("EPOCH_MICROSECOND"), arg])
    template = sqlglot.parse_one("CAST(EXTRACT(EPOCH FROM __sz_arg) * 1000000 AS BIGINT)")
    return template.transform(
        lambda n: arg.copy() if isinstance(n, exp.Column) and n.name == "__sz_arg" else n)


def timestamp_from_micros(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's one-argument ``make_timestamp(us)``: Spark's ``timestamp_micros``, stated
    explicitly rather than left to sqlglot's generic epoch conversion.

    >>> _show("SELECT make_timestamp(us)")
    'SELECT TIMESTAMP_MICROS(us)'
    """
    if dialect not in _SPARK or not isinstance(node, exp.UnixToTime):
        return node
    scale = node.args.get("scale")
    if scale is None or scale.name not in ("6", exp.UnixToTime.MICROS.name):
        return node
    return exp.Anonymous(this="TIMESTAMP_MICROS", expressions=[node.this])


def instant_types(node: exp.Expression, dialect: str) -> exp.Expression:
    """``TIMESTAMPTZ`` (an instant) is Spark's ``TIMESTAMP_LTZ``, named explicitly.

    Spark's bare ``TIMESTAMP`` follows the session's ``spark.sql.timestampType``, so a
    session set to ``TIMESTAMP_NTZ`` would silently turn instants into wall-clock times.
    DuckDB's naive ``TIMESTAMP`` is already rendered as ``TIMESTAMP_NTZ``.

    >>> _show("SELECT TRY_CAST(t AS TIMESTAMPTZ), CAST(CAST(d AS TIMESTAMP) AS TIMESTAMPTZ)")
    'SELECT TRY_CAST(t AS TIMESTAMP_LTZ), CAST(CAST(d AS TIMESTAMP_NTZ) AS TIMESTAMP_LTZ)'
    """
    if dialect in _SPARK and isinstance(node, exp.DataType) and node.is_type("timestamptz"):
        return exp.DataType.build("TIMESTAMPLTZ")
    return node


def regexp_full_match(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``regexp_full_match`` passes through; elsewhere it is an anchored match.

    >>> _show("SELECT regexp_full_match(t, '[0-9]+')")
    "SELECT t RLIKE '^(?:[0-9]+)$'"
    >>> _show("SELECT regexp_full_match(t, '[0-9]+')", "postgres")
    "SELECT t ~ '^(?:[0-9]+)$'"
    """
    if not isinstance(node, exp.RegexpFullMatch) or not node.expression.is_string:
        return node
    anchored = exp.Literal.string(f"^(?:{node.expression.this})$")
    return exp.RegexpLike(this=node.this, expression=anchored)


def string_index(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``text[n]`` is the n-th character (1-based); sqlglot renders it as a
    0-based array subscript (``text[n-1]``), which Spark rejects on strings and other
    engines read as an array element. The compiled rules subscript with an integer only
    on text (struct fields use ``['name']``, which is left alone).

    >>> _show("SELECT t[5], trim(t)[5], (trim(t))[1], s['library']")
    "SELECT SUBSTRING(t, 5, 1), SUBSTRING(TRIM(t), 5, 1), SUBSTRING((TRIM(t)), 1, 1), s['library']"
    """
    if not isinstance(node, exp.Bracket) or len(node.expressions) != 1:
        return node
    if node.find(exp.ArrayAgg):  # an array's element (ordered_aggregate), not a character
        return node
    index = node.expressions[0]
    if not (isinstance(index, exp.Literal) and index.is_int):
        return node
    # sqlglot's DuckDB parser stores the subscript 0-based only when it cannot tell the
    # subject is text (unknown or array type); a known text subject keeps DuckDB's 1-based.
    kind = node.this.type
    if kind is None:
        from sqlglot.optimizer.annotate_types import annotate_types

        kind = annotate_types(node.this.copy(), dialect="duckdb").type
    unknown = (exp.DataType.Type.UNKNOWN, exp.DataType.Type.ARRAY)
    shifted = kind is None or kind.this in unknown
    position = exp.Literal.number(int(index.name) + (1 if shifted else 0))
    return exp.Substring(this=node.this, start=position, length=exp.Literal.number(1))


def json_text(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``json ->> '$'`` (a JSON string, unquoted) is Spark's ``get_json_object``,
    which also unquotes a top-level string.

    >>> _show("SELECT j ->> '$'")
    "SELECT GET_JSON_OBJECT(j, '$')"
    """
    if dialect not in _SPARK or not isinstance(node, exp.JSONExtractScalar):
        return node
    return exp.Anonymous(this="GET_JSON_OBJECT",
                         expressions=[node.this, exp.Literal.string("$")])


def list_position(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``list_position`` (NULL when absent) is Spark's ``array_position`` (0 when
    absent), so 0 is turned back into NULL.

    >>> _show("SELECT list_position(['a', 'b'], x)")
    "SELECT NULLIF(ARRAY_POSITION(ARRAY('a', 'b'), x), 0)"
    """
    if not (dialect in _SPARK and isinstance(node, exp.Anonymous)
            and node.name.upper() == "LIST_POSITION"):
        return node
    found = exp.Anonymous(this="ARRAY_POSITION", expressions=list(node.expressions))
    return exp.Nullif(this=found, expression=exp.Literal.number(0))


def last_value_ignore_nulls(node: exp.Expression, dialect: str) -> exp.Expression:
    """``LAST_VALUE(x IGNORE NULLS)`` is Spark's ``last(x, true)``: one spelling every
    Spark version since 2.0 accepts (``IGNORE NULLS`` after the call came later).

    >>> _show("SELECT LAST_VALUE(k IGNORE NULLS) OVER (ORDER BY s)")
    'SELECT LAST(k, TRUE) OVER (ORDER BY s NULLS LAST)'
    """
    if dialect not in _SPARK or not isinstance(node, exp.IgnoreNulls):
        return node
    inner = node.this
    if not isinstance(inner, exp.LastValue):
        return node
    return exp.Anonymous(this="LAST", expressions=[inner.this, exp.true()])


def arg_max(node: exp.Expression, dialect: str) -> exp.Expression:
    """``arg_max(x, o)`` is Spark's ``max_by``. The compiler wraps ``x`` in a sentinel
    (``coalesce(x, chr(31))``) so that engines that skip NULL values and engines that
    return them agree.

    >>> _show("SELECT nullif(arg_max(coalesce(n, chr(31)), s), chr(31))")
    'SELECT NULLIF(MAX_BY(COALESCE(n, CHR(31)), s), CHR(31))'
    """
    if dialect in _SPARK and isinstance(node, exp.ArgMax):
        return exp.Anonymous(this="MAX_BY", expressions=[node.this, node.expression])
    return node


def unit_separator(node: exp.Expression, dialect: str) -> exp.Expression:
    """``chr(31)`` (the sentinel above) rendered as a plain call: sqlglot's generic
    ``Chr`` output pads its argument, and some engines name the function differently.

    >>> _show("SELECT chr(31)")
    'SELECT CHR(31)'
    >>> _show("SELECT chr(31)", "bigquery")
    'SELECT CODE_POINTS_TO_STRING([31])'
    """
    if not isinstance(node, exp.Chr) or len(node.expressions) != 1:
        return node
    if dialect == "bigquery":
        return exp.Anonymous(this="CODE_POINTS_TO_STRING",
                             expressions=[exp.Array(expressions=[node.expressions[0]])])
    return exp.Anonymous(this="CHR", expressions=[node.expressions[0]])


def md5_prefix(node: exp.Expression, dialect: str) -> exp.Expression:
    """``substr(md5(text), 1, n)``: the session key. Every engine here returns ``md5`` as
    32 lowercase hex characters of the UTF-8 bytes and counts ``substr`` from 1, so the
    key is the same everywhere; BigQuery's ``MD5`` returns bytes, which sqlglot already
    wraps in ``TO_HEX``. Nothing to rewrite; the doctest pins that down.

    >>> _show("SELECT substr(md5(u || '|' || CAST(t AS VARCHAR)), 1, 20)")
    "SELECT SUBSTRING(MD5(u || '|' || CAST(t AS STRING)), 1, 20)"
    >>> _show("SELECT substr(md5(u), 1, 20)", "bigquery")
    'SELECT SUBSTRING(TO_HEX(MD5(u)), 1, 20)'
    """
    return node


def local_time(node: exp.Expression, dialect: str) -> exp.Expression:
    """DuckDB's ``timezone(zone, instant)`` (the wall-clock time in ``zone``) is Spark's
    ``from_utc_timestamp(instant, zone)``: an instant shifted so that, read in the
    session's UTC, it shows the local wall clock. The rules only cast it to a DATE,
    which is the local date either way.

    >>> _show("SELECT CAST(timezone('Europe/Berlin', ts) AS DATE)")
    "SELECT CAST(FROM_UTC_TIMESTAMP(ts, 'Europe/Berlin') AS DATE)"
    """
    if not (dialect in _SPARK and isinstance(node, exp.Anonymous)
            and node.name.upper() == "TIMEZONE" and len(node.expressions) == 2):
        return node
    zone, instant = node.expressions
    return exp.Anonymous(this="FROM_UTC_TIMESTAMP", expressions=[instant, zone])


def zone_names(node: exp.Expression, dialect: str) -> exp.Expression:
    """``z IN (SELECT name FROM pg_timezone_names())`` (is ``z`` a time zone DuckDB
    knows?) asks Java on Spark: ``try_reflect`` returns NULL where ``ZoneId.of`` throws.
    Java also accepts offsets such as ``+01:00``, which Spark's zone functions accept too.

    >>> _show("SELECT z NOT IN (SELECT name FROM pg_timezone_names())")
    "SELECT TRY_REFLECT('java.time.ZoneId', 'of', z) IS NULL"
    """
    negated = isinstance(node, exp.Not) and isinstance(node.this, exp.In)
    test = node.this if negated else node
    if dialect not in _SPARK or not isinstance(test, exp.In):
        return node
    query = test.args.get("query")
    select = query.this if isinstance(query, exp.Subquery) else query
    source = (select.args.get("from_") or select.args.get("from")) \
        if isinstance(select, exp.Select) else None
    if source is None or "PG_TIMEZONE_NAMES" not in source.sql("duckdb").upper():
        return node
    found = exp.Anonymous(this="TRY_REFLECT", expressions=[
        exp.Literal.string("java.time.ZoneId"), exp.Literal.string("of"), test.this])
    missing = exp.Is(this=found, expression=exp.null())
    return missing if negated else exp.Not(this=missing)


# -- PostgreSQL -------------------------------------------------------------------------------
_POSTGRES = ("postgres",)
#: Text columns the rules order by: PostgreSQL orders text by the database's collation
#: (``en_US``: case and punctuation ignored at first), DuckDB and the other engines by
#: bytes. ``COLLATE "C"`` is byte order, so ties and output order are the same everywhere.
_TEXT_ORDER_KEYS = ("__sz_msg", "__sz_user", "resolved_user", "msg")


def _postgres(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="postgres")


def _fill(template: exp.Expression, **values: exp.Expression) -> exp.Expression:
    """``template`` with each column named ``__<key>`` replaced by ``values[key]``."""
    def put(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.name.startswith("__") and \
                node.name[2:] in values:
            value = values[node.name[2:]].copy()
            simple = isinstance(value, (exp.Column, exp.Literal, exp.Paren, exp.Func))
            return value if simple else exp.Paren(this=value)
        return node

    return template.transform(put)


def ordered_aggregate(node: exp.Expression, dialect: str) -> exp.Expression:
    """``arg_max(x, key)`` / ``arg_min`` (PostgreSQL has neither) as the first element of
    an ordered ``array_agg``; a struct key orders by its fields in turn. A ``FILTER``
    stays on the aggregate. Every call the compiler writes has a non-NULL key.

    >>> _show("SELECT arg_max(x, s) FILTER (WHERE x IS NOT NULL)", "postgres")
    'SELECT (ARRAY_AGG(x ORDER BY s DESC NULLS LAST) FILTER(WHERE NOT x IS NULL))[1]'
    >>> print(_show("SELECT arg_min(u, struct_pack(t := a, m := coalesce(b, '')))", "postgres"))
    SELECT (ARRAY_AGG(u ORDER BY a ASC, COALESCE(b, '') COLLATE "C" ASC))[1]
    """
    if dialect not in _POSTGRES:
        return node
    where = None
    call = node
    if isinstance(node, exp.Filter) and isinstance(node.this, (exp.ArgMax, exp.ArgMin)):
        call, where = node.this, node.expression
    if not isinstance(call, (exp.ArgMax, exp.ArgMin)):
        return node
    key = call.expression
    keys = ([field.expression for field in key.expressions] if isinstance(key, exp.Struct)
            else [key])
    desc = isinstance(call, exp.ArgMax)
    ordered = exp.Order(expressions=[exp.Ordered(this=k.copy(), desc=desc, nulls_first=False)
                                     for k in keys])
    ordered.set("this", call.this.copy())
    aggregate: exp.Expression = exp.ArrayAgg(this=ordered)
    if where is not None:
        aggregate = exp.Filter(this=aggregate, expression=where.copy())
    # sqlglot keeps subscripts 0-based and writes PostgreSQL's 1-based [1]
    return exp.Bracket(this=exp.Paren(this=aggregate), expressions=[exp.Literal.number(0)])


def byte_order(node: exp.Expression, dialect: str) -> exp.Expression:
    """Text order keys sort by bytes on PostgreSQL, as on every other engine.

    >>> _show("SELECT 1 FROM t ORDER BY __sz_ts_us, a.__sz_msg, resolved_user", "postgres")
    'SELECT 1 FROM t ORDER BY __sz_ts_us, a.__sz_msg COLLATE "C", resolved_user COLLATE "C"'
    >>> _show("SELECT u AS resolved_user FROM t ORDER BY resolved_user", "postgres")
    'SELECT u AS resolved_user FROM t ORDER BY u COLLATE "C"'
    """
    if dialect not in _POSTGRES or not isinstance(node, exp.Ordered):
        return node
    key = node.this
    text = (isinstance(key, exp.Column) and key.name in _TEXT_ORDER_KEYS) or (
        isinstance(key, exp.Coalesce) and key.expressions
        and isinstance(key.expressions[-1], exp.Literal) and key.expressions[-1].is_string)
    if not text:
        return node
    if isinstance(key, exp.Column) and not key.table:  # an output name stands alone in
        select = node.find_ancestor(exp.Select)      # PostgreSQL: use what it names
        for projection in select.expressions if select is not None else ():
            if isinstance(projection, exp.Alias) and projection.alias == key.name:
                key = projection.this
    ordered = node.copy()
    ordered.set("this", exp.Collate(this=key.copy(), expression=exp.Identifier(
        this="C", quoted=True)))
    return ordered


#: ISO-8601 as DuckDB's cast accepts it: a date, optionally a time (fractional seconds),
#: optionally an offset. Anything else is not a time (NULL), never an error.
_ISO = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
        r"([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
        r" ?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)?$")
_OFFSET = r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_TIME_TEXT = """CASE WHEN __t ~ '{iso}' AND EXTRACT(DAY FROM make_date(
        CAST(substr(__t, 1, 4) AS INT), CAST(substr(__t, 6, 2) AS INT), 1)
        + (CAST(substr(__t, 9, 2) AS INT) - 1)) = CAST(substr(__t, 9, 2) AS INT)
    THEN CASE WHEN length(__t) > 10 AND __t ~ '{offset}'
        THEN CAST(regexp_replace(__t, '(\\.[0-9]{{6}})[0-9]+', '\\1') AS TIMESTAMPTZ)
        ELSE CAST(regexp_replace(__t, '(\\.[0-9]{{6}})[0-9]+', '\\1') AS TIMESTAMP)
            AT TIME ZONE 'UTC' END END"""


def text_to_instant(node: exp.Expression, dialect: str) -> exp.Expression:
    """``TRY_CAST(text AS TIMESTAMPTZ)``: PostgreSQL has no ``TRY_CAST`` (sqlglot writes a
    ``CAST``, which fails the whole query on one bad value). The text is matched against
    ISO-8601 first, its day checked against its month, and cast only then; without an
    offset it is UTC (as DuckDB reads it with its time zone pinned to UTC), whatever the
    session's time zone; digits beyond microseconds are cut, as DuckDB cuts them.

    >>> "MAKE_DATE" in _show("SELECT TRY_CAST(t AS TIMESTAMPTZ)", "postgres")
    True
    """
    if dialect not in _POSTGRES or not isinstance(node, exp.TryCast) or \
            not node.to.is_type("timestamptz"):
        return node
    template = _postgres(_TIME_TEXT.format(iso=_ISO, offset=_OFFSET))
    return exp.Paren(this=_fill(template, t=node.this))


def instant_from_micros(node: exp.Expression, dialect: str) -> exp.Expression:
    """``make_timestamp(us)``: sqlglot writes ``TO_TIMESTAMP(us / 10^6)``, a double that
    loses the last microseconds of today's times; an interval product is exact.

    >>> _show("SELECT make_timestamp(us)", "postgres")
    "SELECT TO_TIMESTAMP(0) + us * INTERVAL '1 MICROSECOND'"
    """
    if dialect not in _POSTGRES or not isinstance(node, exp.UnixToTime):
        return node
    scale = node.args.get("scale")
    if scale is None or scale.name not in ("6", exp.UnixToTime.MICROS.name):
        return node
    return _fill(_postgres("TO_TIMESTAMP(0) + __us * INTERVAL '1 microsecond'"), us=node.this)


def wall_clock_in_utc(node: exp.Expression, dialect: str) -> exp.Expression:
    """``CAST(CAST(x AS TIMESTAMP) AS TIMESTAMPTZ)`` (a time without a zone, read as UTC)
    depends on the session's time zone in PostgreSQL; ``AT TIME ZONE 'UTC'`` does not.

    >>> _show("SELECT CAST(CAST(d AS TIMESTAMP) AS TIMESTAMPTZ)", "postgres")
    "SELECT CAST(d AS TIMESTAMP) AT TIME ZONE 'UTC'"
    """
    if dialect not in _POSTGRES or not isinstance(node, exp.Cast) or \
            not node.to.is_type("timestamptz"):
        return node
    inner = node.this
    if not (isinstance(inner, exp.Cast) and inner.to.is_type("timestamp", "timestampntz")):
        return node
    return exp.AtTimeZone(this=inner.copy(), zone=exp.Literal.string("UTC"))


def no_ignore_nulls(node: exp.Expression, dialect: str) -> exp.Expression:
    """PostgreSQL has no ``IGNORE NULLS`` and sqlglot drops it without a word, which once
    left ``session_key`` NULL on every event but the first of a session: refuse instead.
    (The compiler writes these windows another way for PostgreSQL: ``ignore_nulls=False``.)

    >>> _show("SELECT LAST_VALUE(k IGNORE NULLS) OVER (ORDER BY s)", "postgres")
    Traceback (most recent call last):
    ...
    ValueError: IGNORE NULLS cannot be written in postgres: LAST_VALUE(k IGNORE NULLS)
    """
    if dialect in _POSTGRES and isinstance(node, exp.IgnoreNulls):
        raise ValueError(f"IGNORE NULLS cannot be written in {dialect}: {node.sql('duckdb')}")
    return node


def derived_table_alias(node: exp.Expression, dialect: str) -> exp.Expression:
    """PostgreSQL (and Redshift) reject a subquery in ``FROM`` without an alias; every
    engine accepts one, so each gets ``sz``.

    >>> _show("SELECT * FROM (SELECT 1)", "postgres")
    'SELECT * FROM (SELECT 1) AS sz'
    """
    if isinstance(node, exp.Subquery) and not node.alias and \
            isinstance(node.parent, (exp.From, exp.Join)):
        aliased = node.copy()
        aliased.set("alias", exp.TableAlias(this=exp.to_identifier("sz")))
        return aliased
    return node


#: Passes run on every node, in this order, for every dialect except DuckDB.
PASSES: tuple[Pass, ...] = (
    epoch_micros, timestamp_from_micros, instant_types, regexp_full_match, string_index,
    json_text, list_position, last_value_ignore_nulls, arg_max, unit_separator, md5_prefix,
    local_time, zone_names, no_ignore_nulls, ordered_aggregate, byte_order, text_to_instant,
    instant_from_micros, wall_clock_in_utc, derived_table_alias,
)


def rewriter(dialect: str) -> Callable[[exp.Expression], exp.Expression]:
    """A node transform applying every pass for ``dialect`` (for ``Expression.transform``)."""

    def apply(node: exp.Expression) -> exp.Expression:
        original = node
        for one in PASSES:
            node = one(node, dialect)
        if node is not original:  # sqlglot does not descend into a replacement: do it here
            node = node.transform(apply)
        return node

    return apply


def rewrite(tree: exp.Expression, dialect: str) -> exp.Expression:
    """A copy of ``tree`` rewritten for ``dialect`` (DuckDB trees are returned unchanged)."""
    if dialect == "duckdb":
        return tree
    return tree.transform(rewriter(dialect))
