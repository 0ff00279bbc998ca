"""Threshold analysis: what the data says the inactivity gap should be.

Three things, all computed from the gaps between a user's consecutive events
(``sz_assign`` of a finished run on the SQL plan; the columnar plan's arrays through
:mod:`.gaps`, with identical results), overall and per platform:

``histogram``  the distribution of gaps on a log scale (bins of 1/20 decade);
``curve``      sessions, median session duration and the share of one-event
               sessions for thresholds from 1 minute to 4 hours;
``recommend``  a threshold per platform, with the method and how sure it is.

Why one pass and not one run per threshold: a session boundary at threshold T is
exactly an event whose gap exceeds T, so the sessions at every threshold follow
from the gaps alone. Every event whose gap exceeds the smallest threshold (and
every user's first event) starts a session at some thresholds; for each such start
the session at threshold T_k ends just before the next start whose gap exceeds
T_k. So one sorted window over the (much smaller) set of starts finds, for every
threshold at once, each session's end and whether it holds one event: exact values,
at a fraction of a run's cost.

Why the valley: gaps inside a visit (seconds to minutes) and gaps between visits
(hours to days) form two humps on a log scale. The threshold that best separates
visits sits in the trough between them, where few gaps fall, so moving it a little
changes few sessions. The knee of the sessions-vs-threshold curve is an independent
view of the same bend, and their agreement (plus the trough's depth and the number
of gaps) is what the confidence statement rests on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ..api import execute
from ..charts.svg import threshold_chart
from ..columnar import gaps
from ..durations import format_duration, parse_duration
from ..durations import short as _short
from ..errors import OptionError
from ..io.inputs import LoadedInput
from ..result import Result, require

__all__ = [
    "DEFAULT_GRID",
    "thresholds",
    "Recommendation",
    "ThresholdAnalysis",
    "analyze",
    "platform_of",
    "platform_sql",
]

MINUTE = 60
#: Thresholds (seconds) of the sensitivity curve: 1 minute to 4 hours, in readable steps.
DEFAULT_GRID = tuple(m * MINUTE for m in (
    1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240))
#: Log-gap histogram: bins of 1/BINS_PER_DECADE decade, from 0.1 s to 10^7 s (116 days).
BINS_PER_DECADE = 20
LOW_BIN, HIGH_BIN = -1 * BINS_PER_DECADE, 7 * BINS_PER_DECADE
ZERO_BIN = LOW_BIN - 1  # gaps of exactly 0 (ties) have no logarithm
#: Round recommendations to a threshold people would write down.
NICE_MINUTES = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240)
MIN_GAPS = 200  # fewer gaps than this: no recommendation

PLATFORMS = ("web", "mobile", "server")
# Segment and RudderStack library names (context.library.name), lower-cased.
_LIBRARIES = {
    "web": ("analytics.js", "analytics-next", "@segment/analytics-next", "analytics-js",
            "rudderlabs-js-sdk", "rudder-sdk-js", "rudderstack-js", "web", "browser"),
    "mobile": ("analytics-ios", "analytics-android", "analytics-swift", "analytics-kotlin",
               "analytics-kotlin-android", "analytics-react-native",
               "@segment/analytics-react-native", "analytics-flutter", "react-native",
               "flutter", "rudder-ios-library", "com.rudderstack.android.sdk.core",
               "mobile", "ios", "android"),
    "server": ("analytics-node", "@segment/analytics-node", "analytics-python",
               "analytics-go", "analytics-ruby", "analytics-java", "analytics-php",
               "analytics.net", "analytics-csharp", "analytics-rust", "analytics-clojure",
               "rudder-sdk-node", "rudder-sdk-python", "rudder-sdk-go", "rudder-sdk-java",
               "server", "backend"),
}
# Fallback patterns for names not listed (new SDK spellings), checked in this order.
_PATTERNS = (
    ("mobile", r"(ios|android|swift|kotlin|react-native|flutter|xamarin|unity|mobile)"),
    ("web", r"(analytics\.js|analytics-next|browser|javascript|web|-js$)"),
    ("server", r"(node|python|analytics-go|ruby|java|php|\.net|csharp|rust|server)"),
)


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
    cases = [f"WHEN {raw} IN ({', '.join(_literal(n) for n in names)}) THEN '{group}'"
             for group, names in _LIBRARIES.items()]
    cases += [f"WHEN regexp_matches({raw}, {_literal(pattern)}) THEN '{group}'"
              for group, pattern in _PATTERNS]
    return f"CASE WHEN {raw} = '' THEN 'unknown' {' '.join(cases)} ELSE {raw} END"


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


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- the analysis -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A recommended threshold for one platform, with the evidence behind it."""

    platform: str
    threshold_seconds: float | None
    confidence: str  # "high" | "medium" | "low" | "none"
    statement: str  # plain words: what was found and how sure it is
    method: str
    valley_seconds: float | None = None
    knee_seconds: float | None = None
    within_visit_mode_seconds: float | None = None
    between_visit_mode_seconds: float | None = None
    gaps: int = 0

    @property
    def threshold(self) -> str | None:
        """The threshold as a duration string (``"30m"``), as ``gap=`` accepts it."""
        if self.threshold_seconds is None:
            return None
        return format_duration(round(self.threshold_seconds * 1_000_000))


METHOD = ("the valley (lowest point) of the smoothed log-gap histogram between its "
          "within-visit and between-visit modes, rounded to a usual value, cross-checked "
          "with the knee of the sessions-vs-threshold curve")


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

    def summary(self) -> str:
        """Readable lines: one recommendation per platform, then the curve at a few points."""
        lines = []
        for rec in self.recommendations.values():
            head = (f"{rec.platform}: recommended {rec.threshold} ({rec.confidence} confidence)"
                    if rec.threshold else f"{rec.platform}: no recommendation")
            lines += [head, "  " + rec.statement]
        lines.append(f"method: {METHOD}")
        lines.append("")
        lines.append(f"{'threshold':>9}  {'sessions':>10}  {'median duration':>15}  "
                     f"{'one-event':>9}")
        for row in self.curve:
            if row["platform"] == "all" and row["threshold_seconds"] in (
                    60, 300, 600, 900, 1800, 3600, 7200, 14400):
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
    ``grid``: the thresholds of the curve (default 1 min to 4 h); the run's ``gap`` is
    always added.

    >>> import sessionize
    >>> analysis = sessionize.thresholds(sessionize.sample_path())
    >>> [r["sessions"] for r in analysis.curve if r["platform"] == "all"][:3]
    [6, 4, 4]
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
    return ThresholdAnalysis(result.rules.gap_us / 1e6, platforms, histogram, curve,
                             recommendations, users, events, arrays)


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
    return _curve_rows(measures, {row[0]: row[1] for row in rows}, thresholds)


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
def recommend(histogram: list[dict[str, Any]], platform: str, *, users: int = 0,
              low: float = 60.0, high: float = 4 * 3600.0) -> Recommendation:
    """Recommend a threshold from a log-gap histogram (rows of one platform).

    1. Smooth the histogram (Gaussian kernel, 0.15 decade) over 1 s .. 10^7 s.
    2. Split it where the two sides are best separated on the log scale (Otsu's
       method); the highest point on each side is a mode: within-visit, between-visit.
    3. The valley is the lowest smoothed point between the modes; its depth relative
       to the smaller mode says how clearly the data separates.
    4. The knee of sessions(T) = users + gaps above T (log T, 1 min .. 4 h) is found
       as the point farthest below the chord; it should land near the valley.
    5. The valley, clamped to ``low`` .. ``high``, is rounded to a usual value.
    """
    counts = {_bin_of(r["low_seconds"]): r["gaps"] for r in histogram if r["low_seconds"] > 0}
    total = sum(r["gaps"] for r in histogram)
    if total < MIN_GAPS:
        return Recommendation(
            platform, None, "none",
            f"Only {total:,} gaps between consecutive events; at least {MIN_GAPS} are needed "
            "to see where visits end. Keep the default or choose from product knowledge.",
            METHOD, gaps=total)
    bins = list(range(0, HIGH_BIN + 1))  # 1 s .. 10^7 s; sub-second gaps are all within-visit
    raw = [counts.get(b, 0) for b in bins]
    raw[0] += sum(c for b, c in counts.items() if b < 0)
    smooth = _smooth(raw, sigma=3)
    split = _otsu(raw)
    left_mode = max(range(0, split), key=lambda i: smooth[i])
    right_mode = max(range(split, len(bins)), key=lambda i: smooth[i])
    between = range(left_mode + 1, right_mode) if right_mode - left_mode > 1 else [split]
    valley = min(between, key=lambda i: smooth[i])
    depth = smooth[valley] / max(min(smooth[left_mode], smooth[right_mode]), 1e-12)
    valley_s = _center(valley)
    knee_s = _knee(raw, users, low, high)
    clamped = min(max(valley_s, low), high)
    threshold = _nice(clamped)
    def sessions_at(seconds: float) -> int:
        return users + sum(raw[i] for i in bins if _center(i) > seconds)

    # The knee marks where merging within-visit gaps stops paying off; it agrees with the
    # valley when both sit on the same flat stretch of the curve (few sessions between).
    agree = knee_s is not None and knee_s <= 2 * valley_s and abs(
        sessions_at(knee_s) - sessions_at(valley_s)) <= 0.1 * max(sessions_at(valley_s), 1)
    swing = (sessions_at(threshold / 2) - sessions_at(threshold * 2)) / max(
        sessions_at(threshold), 1)
    if depth < 0.25 and agree and total >= 1000 and low <= valley_s <= high:
        confidence = "high"
    elif depth < 0.6 and (agree or total >= 1000):
        confidence = "medium"
    else:
        confidence = "low"
    modes = (f"within-visit gaps peak near {_short(_center(left_mode))} and between-visit gaps "
             f"near {_short(_center(right_mode))}")
    words = {
        "high": "High confidence: the gaps fall into two clearly separate groups",
        "medium": "Medium confidence: two groups of gaps are visible but overlap",
        "low": "Low confidence: the gaps do not split cleanly into within-visit and "
               "between-visit groups, so any threshold is a convention here",
    }[confidence]
    knee_text = (f"the sessions curve bends at {_short(knee_s)}"
                 + (" (agrees)" if agree else " (does not agree)")) if knee_s else \
        "the sessions curve shows no clear knee"
    clamp_text = "" if clamped == valley_s else (
        " The valley lies outside 1 min .. 4 h, so the nearest end of that range is used.")
    statement = (
        f"{words}; {modes}, with the valley at {_short(valley_s)}; {knee_text}. "
        f"Halving or doubling {_short(threshold)} moves about {swing:.1%} of sessions "
        f"({total:,} gaps).{clamp_text}")
    return Recommendation(
        platform, float(threshold), confidence, statement, METHOD, valley_s, knee_s,
        _center(left_mode), _center(right_mode), total)


def _bin_of(low_seconds: float) -> int:
    return round(math.log10(low_seconds) * BINS_PER_DECADE)


def _center(i: int) -> float:
    """Geometric centre (seconds) of bin ``i`` counted from 1 s."""
    return 10 ** ((i + 0.5) / BINS_PER_DECADE)


def _smooth(values: list[float], sigma: float) -> list[float]:
    radius = int(3 * sigma)
    kernel = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)]
    out = []
    for i in range(len(values)):
        acc = weight = 0.0
        for d, k in zip(range(-radius, radius + 1), kernel):
            if 0 <= i + d < len(values):
                acc += values[i + d] * k
                weight += k
        out.append(acc / weight)
    return out


def _otsu(counts: list[float]) -> int:
    """The split index maximising the between-class variance of the log-gaps."""
    total = sum(counts)
    mean_all = sum(i * c for i, c in enumerate(counts)) / total
    best, best_at, w0, sum0 = -1.0, 1, 0.0, 0.0
    for i in range(1, len(counts)):
        w0 += counts[i - 1]
        sum0 += (i - 1) * counts[i - 1]
        w1 = total - w0
        if w0 == 0 or w1 == 0:
            continue
        m0, m1 = sum0 / w0, (mean_all * total - sum0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, best_at = between, i
    return best_at


def _knee(counts: list[float], users: int, low: float, high: float) -> float | None:
    """Kneedle on sessions(T) over log T in [low, high]: the point farthest below the chord."""
    points = []
    above = users + sum(counts)
    for i, c in enumerate(counts):
        above -= c
        edge = 10 ** ((i + 1) / BINS_PER_DECADE)
        if low <= edge <= high:
            points.append((math.log10(edge), above))
    if len(points) < 3 or points[0][1] == points[-1][1]:
        return None
    (x0, y0), (x1, y1) = points[0], points[-1]
    gaps = [((y0 + (y1 - y0) * (x - x0) / (x1 - x0)) - y) / (y0 - y1) for x, y in points]
    best = max(range(len(points)), key=lambda i: gaps[i])
    return 10 ** points[best][0] if gaps[best] > 0.02 else None


def _nice(seconds: float) -> float:
    return min((m * MINUTE for m in NICE_MINUTES),
               key=lambda t: abs(math.log(t) - math.log(seconds)))
