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


#: Passes run on every node, in this order, for every dialect except DuckDB.
PASSES: tuple[Pass, ...] = (
    epoch_micros, timestamp_from_micros, instant_types, regexp_full_match, string_index,
    json_text, list_position, last_value_ignore_nulls, arg_max, unit_separator, md5_prefix,
    local_time, zone_names,
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
