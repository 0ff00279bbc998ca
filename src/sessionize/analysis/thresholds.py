"""Threshold analysis: what the data says the inactivity gap should be.

Three things, all computed from the gaps between a user's consecutive events
(``sz_assign`` of a finished run on the SQL plan; the columnar plan's arrays through
:mod:`.gaps`, with identical results), overall and per platform:

``histogram``  the distribution of gaps on a log scale (bins of 1/20 decade);
``curve``      sessions, median session duration and the share of one-event
               sessions for thresholds from 1 second to 30 days;
``recommend``  a threshold per platform, with the method and how sure it is.

Why one pass and not one run per threshold: a session boundary at threshold T is
exactly an event whose gap exceeds T, so the sessions at every threshold follow
from the gaps alone. Every event whose gap exceeds the smallest threshold (and
every user's first event) starts a session at some thresholds; for each such start
the session at threshold T_k ends just before the next start whose gap exceeds
T_k. So one sorted window over the (much smaller) set of starts finds, for every
threshold at once, each session's end and whether it holds one event: exact values,
at a fraction of a run's cost.

Why a mixture: gaps inside a visit (seconds to minutes) and gaps between visits
(hours to days) form humps on a log scale. Halfaker et al. (WWW 2015) model the
log-gaps as a mixture of normal components and cut where the within-visit and
between-visit components are equally likely (:mod:`.mixture`, fitted on the histogram,
so both plans give the same numbers). The flat stretch of the sessions-vs-threshold
curve around that cut is an independent view from the data alone; its width, the
cut's distance from its ends and the fitted groups' overlap are what the confidence
statement rests on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..api import execute
from ..charts.svg import threshold_chart
from ..columnar import gaps
from ..durations import format_duration, parse_duration
from ..durations import short as _short
from ..errors import OptionError
from ..io.inputs import LoadedInput
from ..result import Result, require
from ..sql.compiler import platform_cases
from . import mixture

__all__ = [
    "DEFAULT_GRID",
    "thresholds",
    "Recommendation",
    "ThresholdAnalysis",
    "analyze",
    "platform_of",
    "platform_sql",
]

MINUTE, HOUR, DAY = 60, 3600, 86400
#: Thresholds (seconds) of the sensitivity curve: 1 second to 30 days, in readable steps.
DEFAULT_GRID = (
    1, 10, 30, MINUTE, 2 * MINUTE, 3 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE,
    20 * MINUTE, 30 * MINUTE, 45 * MINUTE, HOUR, 90 * MINUTE, 2 * HOUR, 3 * HOUR, 4 * HOUR,
    6 * HOUR, 8 * HOUR, 12 * HOUR, DAY, 2 * DAY, 3 * DAY, 7 * DAY, 14 * DAY, 30 * DAY)
#: Log-gap histogram: bins of 1/BINS_PER_DECADE decade, from 0.1 s to 10^7 s (116 days).
BINS_PER_DECADE = 20
LOW_BIN, HIGH_BIN = -1 * BINS_PER_DECADE, 7 * BINS_PER_DECADE
ZERO_BIN = LOW_BIN - 1  # gaps of exactly 0 (ties) have no logarithm
#: The mixture is fitted to the bins from here up (0.11 s): the bin below holds every
#: shorter gap, a spike that is within-visit whatever the threshold.
FIT_LOW = LOW_BIN + 1
#: Round recommendations to a threshold people would write down (at most a factor 1.5
#: apart, so rounding moves a threshold by at most 0.09 decade).
NICE_SECONDS = (
    1, 2, 3, 5, 10, 15, 20, 30, 45, MINUTE, 90, 2 * MINUTE, 3 * MINUTE, 4 * MINUTE,
    5 * MINUTE, 6 * MINUTE, 7 * MINUTE, 8 * MINUTE, 10 * MINUTE, 15 * MINUTE, 20 * MINUTE,
    30 * MINUTE, 45 * MINUTE, HOUR,
    90 * MINUTE, 2 * HOUR, 3 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR, 12 * HOUR, 18 * HOUR,
    DAY, 36 * HOUR, 2 * DAY, 3 * DAY, 5 * DAY, 7 * DAY, 10 * DAY, 14 * DAY, 21 * DAY, 30 * DAY)
#: The curve's points that summary() prints.
SUMMARY_POINTS = (10, MINUTE, 5 * MINUTE, 10 * MINUTE, 30 * MINUTE, HOUR, 4 * HOUR, 12 * HOUR,
                  DAY, 7 * DAY, 30 * DAY)
MIN_GAPS = 200  # fewer gaps than this: no recommendation
#: The flat stretch of the sessions curve: sessions within this share of those at the
#: threshold.
FLAT_TOLERANCE = 0.01

PLATFORMS = ("web", "mobile", "server")
# -- platform ---------------------------------------------------------------------------------
def platform_sql(result: Result, platform: str | None = "auto") -> str | None:
    """A SQL expression over ``sz_input`` giving each event's platform name, or None.

    ``"auto"`` reads Segment's ``context.library.name`` when the input has it;
    any other string names a column or dotted path. Library names map to
    ``web`` / ``mobile`` / ``server``; other values are kept (lower-cased), so a
    column already holding ``web`` / ``mobile`` works as is; missing is ``unknown``.
    """
    if platform is None:
        return None
    if not isinstance(platform, str) or not platform.strip():
        raise OptionError(
            f"'platform' must be 'auto', None or a column name / dotted path such as "
            f"'context.library.name' (got {platform!r})")
    path = "context.library.name" if platform == "auto" else platform
    field = _resolve(result, path)
    if field is None:
        if platform == "auto":
            return None
        columns = ", ".join(_input_schema(result))
        raise OptionError(
            f"'platform' must name a column or dotted path of the input (got {platform!r}); "
            f"the input has: {columns}")
    sql, kind = field
    text = f"({sql} ->> '$')" if kind.upper() == "JSON" else f"CAST({sql} AS VARCHAR)"
    return f"coalesce(lower(trim({text})), '')"


def platform_of(raw: str) -> str:
    """SQL mapping a lower-cased library name (``platform_sql``'s text) to its platform.

    Applied to the distinct names only (a handful), never per event: the regular
    expressions would otherwise cost a second per 10M events.
    """
    return f"CASE WHEN {raw} = '' THEN 'unknown' {platform_cases(raw)} ELSE {raw} END"


def _input_schema(result: Result) -> dict[str, str]:
    rel = result.engine.con.table("sz_input")
    return {c: str(t) for c, t in zip(rel.columns, rel.types) if not c.startswith("__sz_")}


def input_row_sql(result: Result) -> str:
    """The column of ``sz_input`` that ``sz_assign.__sz_row`` refers to (input order)."""
    return "__sz_row" if "__sz_row" in result.engine.con.table("sz_input").columns else "rowid"


def _resolve(result: Result, path: str) -> tuple[str, str] | None:
    """(sql, type) of a top-level column or dotted path in ``sz_input`` (the engine's rule)."""
    loaded = LoadedInput(table="sz_input", schema=_input_schema(result),
                         description=result.source, malformed=[])
    field = result.engine.resolve(loaded, path)
    return None if field is None else (field.sql, field.type)



# -- the analysis -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A recommended threshold for one platform, with the evidence behind it."""

    platform: str
    threshold_seconds: float | None
    confidence: str  # "high" | "medium" | "low" | "none"
    statement: str  # plain words: what was found and how sure it is
    method: str
    within_visit_mode_seconds: float | None = None
    between_visit_mode_seconds: float | None = None
    gaps: int = 0
    #: where the fitted within-visit and between-visit groups are equally likely
    crossing_seconds: float | None = None
    #: share of the smaller group that the fitted model puts on the wrong side (0 .. 1)
    overlap: float | None = None
    #: the flat stretch of the sessions curve around the threshold (within 1 %)
    flat_low_seconds: float | None = None
    flat_high_seconds: float | None = None
    flat_decades: float | None = None
    #: distance (decades) from the threshold to the nearer end of the flat stretch
    margin_decades: float | None = None
    #: share of gaps between half and twice the threshold
    near_share: float | None = None
    #: the fitted components, fastest first: weight, median_seconds, sd_decades, group
    components: tuple[dict[str, Any], ...] = ()

    @property
    def threshold(self) -> str | None:
        """The threshold as a duration string (``"30m"``), as ``gap=`` accepts it."""
        if self.threshold_seconds is None:
            return None
        return format_duration(round(self.threshold_seconds * 1_000_000))


METHOD = ("a mixture of 2 to 4 log-normal components fitted to the gaps by EM, chosen by "
          "BIC (Halfaker et al., WWW 2015), cut into the fastest (within-visit) components "
          "and the rest; the threshold is the usual value that recovers the most visits "
          "expected from that fit (where the groups are apart, the middle of the empty "
          "stretch between them; where they form one hump, scored on the fit with the "
          "smallest slow group among those that fit equally well), cross-checked with "
          "the flat stretch of the sessions-vs-threshold curve")
CONFIDENCE_MEASURE = (
    "high: the fitted groups overlap on at most 2 % of the smaller group, the sessions "
    "curve stays within 1 % over at least 1 decade around the threshold, which sits at "
    "least 0.3 decade from either end, with 1,000 gaps or more; medium: overlap at most "
    "10 %, a flat stretch of 0.3 decade and 0.1 decade of margin; low: otherwise, or when "
    "one log-normal hump fits as well as two (BIC)")


@dataclasses.dataclass
class ThresholdAnalysis:
    """Gap histogram, sensitivity curve and recommendations, per platform and ``"all"``.

    ``histogram`` rows: ``platform``, ``low_seconds``, ``high_seconds``, ``gaps``
    (zero gaps are the row with ``low_seconds == high_seconds == 0``).
    ``curve`` rows: ``platform``, ``threshold_seconds``, ``sessions``,
    ``median_duration_seconds``, ``one_event_share``. ``users`` and ``events``: how many
    per platform (a user's platform is that of their first event).
    """

    gap_seconds: float
    platforms: list[str]
    histogram: list[dict[str, Any]]
    curve: list[dict[str, Any]]
    recommendations: dict[str, Recommendation]
    users: dict[str, int]
    #: events per platform (every platform with an event), and ``"all"``
    events: dict[str, int] = dataclasses.field(default_factory=dict)
    #: what the platforms were read from: "platform" (context.library.name), a column
    #: or dotted path, or None (no split); the ``gap_by`` of :meth:`rules`
    platform_column: str | None = None
    #: the columnar plan's gap arrays (gaps.GapArrays), kept for the report
    _gaps: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_arrow(self, table: str = "curve") -> Any:
        """``"curve"``, ``"histogram"`` or ``"recommendations"`` as a ``pyarrow.Table``."""
        import pyarrow as pa

        return pa.Table.from_pylist(self._rows(table))

    def to_pandas(self, table: str = "curve") -> Any:
        """Like :meth:`to_arrow`, as a pandas DataFrame."""
        require("pandas", "to_pandas()")
        return self.to_arrow(table).to_pandas()

    def _rows(self, table: str) -> list[dict[str, Any]]:
        if table == "curve":
            return self.curve
        if table == "histogram":
            return self.histogram
        if table == "recommendations":
            return [{k: v for k, v in dataclasses.asdict(r).items()}
                    | {"threshold": r.threshold} for r in self.recommendations.values()]
        raise OptionError(
            f"'table' must be one of curve, histogram, recommendations (got {table!r})")

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data."""
        return {"gap_seconds": self.gap_seconds, "platforms": self.platforms,
                "users": self.users, "recommendations": self._rows("recommendations"),
                "curve": self.curve, "histogram": self.histogram}

    def rules(self) -> dict[str, Any]:
        """The recommendations as options of :func:`sessionize.run` or a rules file:
        ``gap`` (the recommendation over all events, or the gap in use without one) and,
        with platforms, ``gap_by`` and ``gaps`` (one per platform with a recommendation).

        >>> import sessionize
        >>> sessionize.thresholds(sessionize.sample_path()).rules()
        {'gap': '30m'}
        """
        overall = self.recommendations["all"].threshold or format_duration(
            round(self.gap_seconds * 1_000_000))
        out: dict[str, Any] = {"gap": overall}
        per = {name: rec.threshold for name, rec in self.recommendations.items()
               if name != "all" and rec.threshold}
        if self.platform_column == "platform":  # gap_by="platform" knows these three
            per = {name: gap for name, gap in per.items() if name in PLATFORMS}
        if per and self.platform_column:
            out |= {"gap_by": self.platform_column, "gaps": per}
        return out

    def rules_toml(self) -> str:
        """:meth:`rules` as lines of a ``--config rules.toml`` file."""
        options = self.rules()
        lines = [f'gap = "{options["gap"]}"']
        if "gaps" in options:
            lines.append(f'gap_by = "{options["gap_by"]}"')
            lines.append("gaps = { " + ", ".join(
                f'"{k}" = "{v}"' for k, v in options["gaps"].items()) + " }")
        return "\n".join(lines)

    def rules_python(self) -> str:
        """:meth:`rules` as keyword arguments of ``sessionize.run``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.rules().items())

    def summary(self) -> str:
        """Readable lines: one recommendation per platform, the forms to paste, then the
        curve at a few points."""
        lines = []
        for rec in self.recommendations.values():
            head = (f"{rec.platform}: recommended {rec.threshold} ({rec.confidence} confidence)"
                    if rec.threshold else f"{rec.platform}: no recommendation")
            lines += [head, "  " + rec.statement]
        lines.append(f"method: {METHOD}")
        lines.append(f"confidence: {CONFIDENCE_MEASURE}")
        lines.append("")
        lines.append("as a rules file (--config rules.toml):")
        lines += ["  " + line for line in self.rules_toml().splitlines()]
        lines.append("in Python:")
        lines.append(f"  sessionize.run(source, {self.rules_python()})")
        lines.append("")
        lines.append(f"{'threshold':>9}  {'sessions':>10}  {'median duration':>15}  "
                     f"{'one-event':>9}")
        for row in self.curve:
            if row["platform"] == "all" and row["threshold_seconds"] in SUMMARY_POINTS:
                median = row["median_duration_seconds"]
                lines.append(
                    f"{_short(row['threshold_seconds']):>9}  {row['sessions']:>10,}  "
                    f"{_short(median) if median is not None else '-':>15}  "
                    f"{row['one_event_share']:>9.1%}")
        return "\n".join(lines)

    def plot(self, chart: str = "gaps", *, platform: str | None = None, format: str = "svg"):
        """``"gaps"`` (log-gap histogram, threshold marked) or ``"sensitivity"`` as SVG/PNG."""
        return threshold_chart(self, chart, platform=platform, format=format)

    def _repr_html_(self) -> str:
        import html

        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.summary().splitlines()
                        if line and not line.startswith(" "))
        return f"<div><ul>{items}</ul>{self.plot('gaps')}{self.plot('sensitivity')}</div>"


def thresholds(source: Any, *, platform: str | None = "auto", grid: Sequence[Any] | None = None,
               **options: Any) -> ThresholdAnalysis:
    """How the sessions depend on the threshold, and which threshold the data suggests.

    ``source`` is anything :func:`sessionize.run` takes (other keyword options, such as
    ``user_id=``, go to it), or a finished :class:`~sessionize.Result`. ``platform``:
    ``"auto"`` reads Segment's ``context.library.name`` (web / mobile / server), a
    column name or dotted path chooses another, None analyses all events as one.
    ``grid``: the thresholds of the curve (default 1 s to 30 days); the run's ``gap`` is
    always added.

    >>> import sessionize
    >>> analysis = sessionize.thresholds(sessionize.sample_path())
    >>> [(r["threshold_seconds"], r["sessions"]) for r in analysis.curve
    ...  if r["platform"] == "all" and r["threshold_seconds"] in (60, 300, 1800)]
    [(60, 6), (300, 4), (1800, 4)]
    """
    if isinstance(source, Result):
        if options:
            raise OptionError(
                f"run options ({', '.join(sorted(options))}) must not be given with a finished "
                "Result (got a Result); pass them to sessionize.run() instead")
        return analyze(source, platform=platform, grid=grid)
    # nobody reads this run's events table: skip its time order and its columns
    options.setdefault("events_order", "none")
    with execute(source, events_table=False, **options) as result:
        return analyze(result, platform=platform, grid=grid)


def analyze(result: Result, *, platform: str | None = "auto",
            grid: Sequence[Any] | None = None, keep_gaps: bool = False) -> ThresholdAnalysis:
    """Compute the threshold analysis of a finished run (see the module docstring).

    The run's own gap is always added to the grid, so the curve has its exact figures.
    ``keep_gaps`` leaves the per-event table ``sz_th_gaps`` for the report to reuse.
    """
    con = getattr(result.engine, "con", None)
    if con is None:
        raise OptionError(
            f"the threshold analysis and the report must run on the DuckDB engine (got "
            f"{type(result.engine).__name__}); run sessionize.run() without engine= for them")
    thresholds = sorted({*_grid(grid), result.rules.gap_us / 1e6})
    platform_expr = platform_sql(result, platform)
    columnar = getattr(result.engine, "columnar", None)
    arrays = None
    if columnar is not None:  # the same figures from the columnar plan's arrays
        arrays = gaps.gap_arrays(con, columnar, platform_expr, platform_of,
                                 input_row_sql(result))
        histogram = _histogram_rows(gaps.histogram(
            arrays, by_platform=bool(platform_expr), bins_per_decade=BINS_PER_DECADE,
            low_bin=LOW_BIN, high_bin=HIGH_BIN, zero_bin=ZERO_BIN))
        curve, users = _curve_rows(*gaps.curve(
            arrays, _micros(thresholds), by_platform=bool(platform_expr)), thresholds)
        events = gaps.events_per_platform(arrays)
    else:
        result.engine.ensure_assign()
        _create_gap_table(con, platform_expr, input_row_sql(result))
        try:
            histogram = _histogram(con, by_platform=bool(platform_expr))
            curve, users = _curve(con, thresholds, by_platform=bool(platform_expr))
            events = dict(con.execute(
                "SELECT platform, count(*) FROM sz_th_gaps GROUP BY 1").fetchall())
        finally:
            if not keep_gaps:
                con.execute("DROP TABLE IF EXISTS sz_th_gaps")
    events["all"] = sum(events.values())
    platforms = sorted(name for name in users if name != "all")
    recommendations = {
        name: recommend([r for r in histogram if r["platform"] == name], name,
                        users=users.get(name, 0))
        for name in ["all", *platforms]}
    column = None if not platform_expr else (
        "platform" if platform == "auto" else platform)
    return ThresholdAnalysis(result.rules.gap_us / 1e6, platforms, histogram, curve,
                             recommendations, users, events, column, arrays)


def _grid(grid: Sequence[Any] | None) -> list[float]:
    if grid is None:
        return list(DEFAULT_GRID)
    if isinstance(grid, (str, bytes)) or not grid:
        raise OptionError(
            f"'grid' must be a non-empty list of durations such as ['5m', '30m', '1h'] "
            f"(got {grid!r})")
    return sorted({parse_duration(g, name="grid") / 1e6 for g in grid})


def _create_gap_table(con: Any, platform_expr: str | None, row: str = "rowid") -> None:
    """One narrow row per event: user, order, time, gap to the previous event, platform.

    The platform needs the input's columns, hence the one join back to the input;
    without a platform the table is a projection of ``sz_assign``.
    """
    if platform_expr:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE sz_th_platforms AS SELECT raw, {platform_of('raw')} "
            f"AS platform FROM (SELECT DISTINCT {platform_expr} AS raw FROM sz_input)")
        source = (f"sz_assign a JOIN (SELECT {row} AS r, {platform_expr} AS raw FROM sz_input) "
                  "i ON i.r = a.__sz_row JOIN sz_th_platforms p ON p.raw = i.raw")
    else:
        source = "(SELECT *, 'all' AS platform FROM sz_assign) a"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE sz_th_gaps AS SELECT a.__sz_user AS u, a.__sz_seq AS seq, "
        "a.__sz_ts_us AS ts, a.__sz_ts_us - epoch_us(a.__sz_prev_ts) AS gap, platform, "
        f"a.__sz_row AS row, a.__sz_msg AS msg FROM {source}")
    con.execute("DROP TABLE IF EXISTS sz_th_platforms")


def _sets(*keys: str) -> str:
    """Group per platform and over all platforms at once (the latter has platform NULL)."""
    inner = ", ".join(keys)
    return f"GROUPING SETS ((platform{', ' + inner if inner else ''}), ({inner}))"


def _histogram(con: Any, *, by_platform: bool) -> list[dict[str, Any]]:
    bin_sql = (f"CASE WHEN gap = 0 THEN {ZERO_BIN} ELSE least(greatest(CAST(floor("
               f"log10(gap / 1e6) * {BINS_PER_DECADE}) AS INTEGER), {LOW_BIN}), {HIGH_BIN}) END")
    return _histogram_rows(con.execute(
        f"SELECT coalesce(platform, 'all'), {bin_sql} AS b, count(*) FROM sz_th_gaps "
        f"WHERE gap IS NOT NULL GROUP BY {_sets('b') if by_platform else 'ALL'} ORDER BY 1, 2"
    ).fetchall())


def _histogram_rows(rows: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """(platform, bin, gaps) as the histogram's rows."""
    out = []
    for platform, b, count in rows:
        low, high = (0.0, 0.0) if b == ZERO_BIN else (
            10 ** (b / BINS_PER_DECADE), 10 ** ((b + 1) / BINS_PER_DECADE))
        out.append({"platform": platform, "low_seconds": low, "high_seconds": high,
                    "gaps": count})
    return out


def _curve(con: Any, thresholds: list[float], *, by_platform: bool
           ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sessions, median duration and one-event share at every threshold, exactly.

    The thresholds run in groups spanning less than a factor ``gaps.GROUP_SPAN`` each
    (:func:`.gaps.threshold_groups`): a group reads only the events that start a
    session at its smallest threshold, so the thresholds of seconds, which nearly every
    event passes, do not make every other threshold read every event.
    """
    micros = _micros(thresholds)
    measures: dict[str, list[tuple]] = {}
    users: dict[str, int] = {}
    for group in gaps.threshold_groups(micros):
        part, part_users = _curve_group(con, [thresholds[i] for i in group],
                                        by_platform=by_platform)
        users |= part_users
        for name in part:
            measures.setdefault(name, [])
        for name in measures:
            measures[name] += part.get(name, [(0, None, 0)] * len(group))
    # a platform first seen in a later group has nothing at the earlier thresholds
    measures = {name: [(0, None, 0)] * (len(micros) - len(points)) + points
                for name, points in measures.items()}
    return _curve_rows(measures, users, thresholds)


def _curve_group(con: Any, thresholds: list[float], *, by_platform: bool
                 ) -> tuple[dict[str, list[tuple]], dict[str, int]]:
    """:func:`_curve` for one group of thresholds.

    Only events that start a session at the smallest threshold are read (``starts``);
    each start's level is how many thresholds its gap exceeds (a first event exceeds
    all). At threshold k the session of a start with level >= k ends just before the
    next start with level >= k: the end time is that start's previous-event time. One
    sorted window over the starts finds it for every k (``lead ... IGNORE NULLS``), and
    the next start's sequence number tells one-event sessions apart.
    A user's last session ends at their last event (``sz_users``). Returns the curve
    and the users per platform (the platform of their first event).
    """
    k_count = len(thresholds)
    micros = _micros(thresholds)
    level = " + ".join(f"CAST(gap > {m} AS INTEGER)" for m in micros)
    # lead(... IGNORE NULLS): the previous-event time of the next start at level >= k.
    ends = ", ".join(
        f"lead(CASE WHEN lvl >= {k} THEN ts - gap END IGNORE NULLS) OVER following AS end{k}"
        for k in range(1, k_count + 1))
    measures = ", ".join(
        f"count(*) FILTER (lvl >= {k}), "
        f"median(coalesce(end{k}, last_ts) - ts) FILTER (lvl >= {k}), "
        f"count(*) FILTER (lvl >= {k} AND (seq = last_seq OR (next_seq = seq + 1 "
        f"AND next_lvl >= {k})))"
        for k in range(1, k_count + 1))
    name = "coalesce(platform, 'all')" if by_platform else "'all'"
    group = f"GROUP BY {_sets()}" if by_platform else ""
    rows = con.execute(f"""
        WITH starts AS (
            SELECT u, seq, ts, gap, platform,
                   CASE WHEN gap IS NULL THEN {k_count} ELSE {level} END AS lvl
            FROM sz_th_gaps WHERE gap IS NULL OR gap > {micros[0]}
        ), ends AS (
            SELECT *, {ends}, lead(seq) OVER following AS next_seq,
                   lead(lvl) OVER following AS next_lvl
            FROM starts
            WINDOW following AS (PARTITION BY u ORDER BY seq)
        )
        SELECT {name}, count(*) FILTER (gap IS NULL), {measures}
        FROM ends JOIN (SELECT resolved_user AS u, epoch_us(last_seen) AS last_ts,
                               event_count AS last_seq FROM sz_users) USING (u)
        {group}
    """).fetchall()
    measures = {row[0]: [tuple(row[2 + 3 * k: 5 + 3 * k]) for k in range(k_count)]
                for row in rows}
    return measures, {row[0]: row[1] for row in rows}


def _micros(thresholds: list[float]) -> list[int]:
    return [round(t * 1e6) for t in thresholds]


def _curve_rows(measures: dict[str, list[tuple]], users: dict[str, int],
                thresholds: list[float]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per platform, per threshold (sessions, median duration in us, one-event sessions)
    as the curve's rows, ordered ``all`` first, then by platform and threshold."""
    curve = []
    for platform, points in measures.items():
        for threshold, (sessions, median, one) in zip(thresholds, points):
            curve.append({
                "platform": platform, "threshold_seconds": threshold, "sessions": sessions,
                "median_duration_seconds": None if median is None else median / 1e6,
                "one_event_share": one / sessions if sessions else 0.0,
            })
    curve.sort(key=lambda r: (r["platform"] != "all", r["platform"], r["threshold_seconds"]))
    return curve, users


# -- the recommendation -----------------------------------------------------------------------
def recommend(histogram: list[dict[str, Any]], platform: str, *, users: int = 0
              ) -> Recommendation:
    """Recommend a threshold from a log-gap histogram (rows of one platform).

    1. Fit mixtures of 1 .. 4 log-normal components to the counts of gaps over 0.1 s
       (EM on the bins, :mod:`.mixture`) and keep the one of 2 or more with the lowest
       BIC.
    2. Cut the components into the fastest ones (within a visit) and the rest where
       they separate best; ``crossing_seconds`` is where the two groups are equally
       likely.
    3. The threshold is the usual value (:data:`NICE_SECONDS`) that recovers the most
       visits expected from the fit (:func:`_best_threshold`).
    4. Cross-check with the data alone: the flat stretch of sessions(T) = users + gaps
       above T around the threshold (sessions within 1 % of those at the threshold).
    5. Confidence from the fit's overlap, the flat stretch's width and the threshold's
       distance from its ends, and the number of gaps (:func:`_confidence`).
    """
    total = sum(r["gaps"] for r in histogram)
    if total < MIN_GAPS:
        return Recommendation(
            platform, None, "none",
            f"Only {total:,} gaps between consecutive events; at least {MIN_GAPS} are needed "
            "to see where visits end. Keep the default or choose from product knowledge.",
            METHOD, gaps=total)
    counts = {_bin_of(r["low_seconds"]): r["gaps"] for r in histogram if r["low_seconds"] > 0}
    bins = np.arange(FIT_LOW, HIGH_BIN + 1)  # 0.11 s .. 10^7 s: shorter ones are within-visit
    raw = np.array([counts.get(int(b), 0) for b in bins], float)
    if raw.sum() < MIN_GAPS / 2:
        return Recommendation(
            platform, None, "none",
            f"Only {int(raw.sum()):,} of {total:,} gaps are longer than 0.1 s; too few to see "
            "where visits end. Keep the default or choose from product knowledge.",
            METHOD, gaps=total)
    centres = (bins + 0.5) / BINS_PER_DECADE
    model, bics = mixture.select(centres, raw, width=1 / BINS_PER_DECADE)
    cut = mixture.split(model)
    crossing = cut.threshold_seconds
    sub_second = total - raw.sum()
    threshold = _best_threshold(model, cut.within, centres, raw, sub_second, users)
    # sessions at every bin edge (gaps in a bin above its lower edge), from the histogram
    above = np.concatenate((np.cumsum(raw[::-1])[::-1], [0.0]))  # gaps >= edge i
    def sessions_at(seconds: float) -> float:
        return users + above[_edge(seconds, len(above))]

    flat_low, flat_high = _flat_stretch(above, users, threshold)
    width = math.log10(flat_high / flat_low)
    margin = min(math.log10(threshold / flat_low), math.log10(flat_high / threshold))
    near = (sessions_at(threshold / 2) - sessions_at(threshold * 2)) / total
    within = model.components[:cut.within]
    between = model.components[cut.within:]
    lead_within = max(within, key=lambda c: c.weight)
    lead_between = max(between, key=lambda c: c.weight)
    one_hump = bics[1] <= model.bic
    confidence = _confidence(cut.overlap, width, margin, total, one_hump)
    words = {
        "high": "High confidence: the gaps fall into two clearly separate groups",
        "medium": "Medium confidence: two groups of gaps are visible but overlap",
        "low": "Low confidence: the gaps do not split cleanly into within-visit and "
               "between-visit groups, so any threshold is a convention here; this one "
               "recovers the most visits expected under the fitted model",
    }[confidence]
    comps = "; ".join(
        f"{'within' if i < cut.within else 'between'} {c.weight:.0%} around "
        f"{_short(c.median_seconds)}" for i, c in enumerate(model.components))
    statement = (
        f"{words}. Fitted {len(model.components)} log-normal components (lowest BIC): "
        f"{comps}. They are equally likely at {_short(crossing)}; the components overlap on "
        f"{cut.overlap:.1%} of the smaller group. The sessions curve stays within 1 % from "
        f"{_short(flat_low)} to {_short(flat_high)} ({width:.1f} decades), "
        f"{_short(threshold)} sits {margin:.1f} decades inside it; {near:.1%} of the "
        f"{total:,} gaps lie between half and twice {_short(threshold)}."
        + (" One log-normal hump fits the gaps as well as two (BIC)." if one_hump else ""))
    return Recommendation(
        platform, float(threshold), confidence, statement, METHOD,
        within_visit_mode_seconds=lead_within.median_seconds,
        between_visit_mode_seconds=lead_between.median_seconds, gaps=total,
        crossing_seconds=crossing, overlap=cut.overlap, flat_low_seconds=flat_low,
        flat_high_seconds=flat_high, flat_decades=width, margin_decades=margin,
        near_share=near, components=tuple(
            c.to_dict() | {"group": "within" if i < cut.within else "between"}
            for i, c in enumerate(model.components)))


def _best_threshold(model: mixture.Mixture, within: int, centres: np.ndarray,
                    raw: np.ndarray, sub_second: float, users: int) -> float:
    """The usual value (:data:`NICE_SECONDS`) that recovers the most visits exactly,
    expected from the fitted groups and the observed gaps.

    Each observed gap is within-visit with the fitted posterior probability of its bin.
    At threshold T, ``a`` is the share of within-visit gaps above T (each splits a
    visit) and ``b`` the share of between-visit gaps at or below T (each merges two);
    a visit of L events is recovered exactly when neither of its two boundaries is
    merged and none of its L - 1 inner gaps splits: ``(1 - b)^2 (1 - a)^(L - 1)``, with
    L the mean events per visit the fit implies. Where the groups are apart the score
    is flat over the empty stretch between them, and the value nearest its middle (log
    scale) wins; where they overlap the score trades splits against merges, which the
    equal-likelihood point alone does not (a visit has more inner gaps than
    boundaries).
    """
    dens = model.densities(centres)
    posterior = dens[:within].sum(axis=0) / np.maximum(dens.sum(axis=0), 1e-300)
    within_counts = raw * posterior
    between_counts = raw - within_counts
    within_total = within_counts.sum() + sub_second
    between_total = max(between_counts.sum(), 1e-12)
    # at edge e (T = _edge_seconds(e)): inner gaps above, boundaries below
    a = np.concatenate((np.cumsum(within_counts[::-1])[::-1], [0.0])) / max(within_total, 1e-12)
    b = np.concatenate(([0.0], np.cumsum(between_counts))) / between_total
    length = (within_total + between_total + users) / (between_total + users)
    score = (1 - b) ** 2 * np.clip(1 - a, 0, 1) ** (length - 1)
    best = score.max()
    plateau = np.flatnonzero(score >= best * (1 - 1e-9))
    # the stretch of edges around the first maximum (contiguous), its middle on the log scale
    start = end = int(plateau[0])
    while end + 1 < len(score) and score[end + 1] >= best * (1 - 1e-9):
        end += 1
    middle = math.log10(_edge_seconds(start) * _edge_seconds(end)) / 2
    return float(max(NICE_SECONDS, key=lambda t: (
        round(float(score[_edge(t, len(score))]) / best, 9), -abs(math.log10(t) - middle))))


#: Confidence rules (documented in docs/report.md): overlap of the fitted groups, width
#: of the flat stretch of the sessions curve (decades), the threshold's distance from
#: the nearer end of that stretch (decades).
HIGH = {"overlap": 0.02, "flat_decades": 1.0, "margin_decades": 0.3, "gaps": 1000}
MEDIUM = {"overlap": 0.10, "flat_decades": 0.3, "margin_decades": 0.1}


def _confidence(overlap: float, width: float, margin: float, total: int,
                one_hump: bool) -> str:
    if one_hump:
        return "low"
    if (overlap <= HIGH["overlap"] and width >= HIGH["flat_decades"]
            and margin >= HIGH["margin_decades"] and total >= HIGH["gaps"]):
        return "high"
    if overlap <= MEDIUM["overlap"] and width >= MEDIUM["flat_decades"] \
            and margin >= MEDIUM["margin_decades"]:
        return "medium"
    return "low"


def _flat_stretch(above: np.ndarray, users: int, threshold: float) -> tuple[float, float]:
    """The bin edges around ``threshold`` between which sessions stay within 1 % of the
    sessions at ``threshold`` (at the histogram's resolution)."""
    edges = len(above)
    at = _edge(threshold, edges)
    sessions = users + above
    ref = sessions[at]
    lo = at
    while lo > 0 and sessions[lo - 1] <= ref * (1 + FLAT_TOLERANCE):
        lo -= 1
    hi = at
    while hi < edges - 1 and sessions[hi + 1] >= ref * (1 - FLAT_TOLERANCE):
        hi += 1
    return min(_edge_seconds(lo), threshold), max(_edge_seconds(hi), threshold)


def _edge(seconds: float, edges: int) -> int:
    """Index of the fit's bin edge at or below ``seconds`` (edge i is the lower edge of
    bin FIT_LOW + i), clipped to 0 .. edges - 1."""
    i = math.floor(math.log10(max(seconds, 1e-9)) * BINS_PER_DECADE + 1e-9) - FIT_LOW
    return int(min(max(i, 0), edges - 1))


def _edge_seconds(i: int) -> float:
    return 10 ** ((i + FIT_LOW) / BINS_PER_DECADE)


def _bin_of(low_seconds: float) -> int:
    return round(math.log10(low_seconds) * BINS_PER_DECADE)

