"""Charts as self-contained SVG, drawn here: no plotting library, no fonts, no scripts.

Why hand-made: the report must open offline and stay one file, and notebooks display
SVG natively. Every drawn data element carries ``class="mark"`` so a test (or a
person reading the DOM) can tell a chart with data from an empty frame. All text
that may come from user data goes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from ..durations import short as _short
from ..errors import OptionError
from .png import svg_to_png

__all__ = ["SVG", "bar_chart", "esc", "histogram_chart", "line_chart", "threshold_chart",
           "timeline_chart"]

PALETTE = ("#3867d6", "#eb8c34", "#20a386", "#c0392b", "#8e5ea2", "#7f8c8d")
# Fitted components: within-visit ones dark, between-visit ones warm.
COMPONENT_COLORS = ("#1b2a4a", "#8e5ea2", "#b9770e", "#6d4c41")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
# Log-axis ticks for durations (seconds), labelled the way people say them.
DURATION_TICKS = ((0.1, "0.1s"), (1, "1s"), (10, "10s"), (60, "1m"), (600, "10m"),
                  (3600, "1h"), (6 * 3600, "6h"), (86400, "1d"), (7 * 86400, "1w"),
                  (30 * 86400, "30d"))


def esc(value: Any) -> str:
    """Escape text for HTML and SVG (quotes included: it may land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


class SVG(str):
    """An SVG document: a string that notebooks display, with PNG export.

    PNG export renders the SVG in headless Chromium (see :mod:`.png`).
    """

    def _repr_svg_(self) -> str:
        return str(self)

    def to_png(self, path: str | None = None) -> bytes:
        """The chart as PNG bytes (written to ``path`` when given); needs Chromium."""
        return svg_to_png(str(self), path)

    def save(self, path: str) -> None:
        """Write the SVG (``.svg``) or a PNG (``.png``) file."""
        if str(path).lower().endswith(".png"):
            self.to_png(path)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(str(self))


class _Frame:
    """Plot area and scales of one chart."""

    def __init__(self, width: int, height: int, *, left: int = 56, right: int = 16,
                 top: int = 34, bottom: int = 42):
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y grows downwards in SVG
        self.parts: list[str] = []

    def sx(self, t: float) -> float:  # t in [0, 1]
        return self.x0 + t * (self.x1 - self.x0)

    def sy(self, t: float) -> float:
        return self.y0 - t * (self.y0 - self.y1)

    def add(self, part: str) -> None:
        self.parts.append(part)

    def text(self, x: float, y: float, text: str, *, anchor: str = "middle", size: int = 11,
             color: str = "#333", extra: str = "") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
                 f'fill="{color}"{extra}>{esc(text)}</text>')

    def axes(self, title: str, x_label: str, y_label: str) -> None:
        self.text(self.x0, 18, title, anchor="start", size=13,
                  extra=' font-weight="600"')
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" '
                 'stroke="#999"/>')
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" '
                 'stroke="#999"/>')
        self.text((self.x0 + self.x1) / 2, self.height - 6, x_label)
        self.text(14, (self.y0 + self.y1) / 2, y_label,
                  extra=f' transform="rotate(-90 14 {(self.y0 + self.y1) / 2:.1f})"')

    def y_ticks(self, top: float, fmt=None) -> None:
        fmt = fmt or _count
        for i in range(5):
            v = top * i / 4
            y = self.sy(i / 4)
            self.add(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
            self.text(self.x0 - 4, y + 4, fmt(v), anchor="end", size=10)

    def render(self, label: str) -> SVG:
        body = "".join(self.parts)
        return SVG(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{esc(label)}" style="{FONT};background:#fff">'
            f"<title>{esc(label)}</title>{body}</svg>")


def _count(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M".replace(".0M", "M")
    if v >= 1e3:
        return f"{v / 1e3:.1f}k".replace(".0k", "k")
    return f"{v:.0f}" if v == int(v) else f"{v:.2f}"


def _percent(v: float) -> str:
    return f"{v:.0%}"


def _nice_top(v: float) -> float:
    if v <= 0:
        return 1.0
    exp10 = 10 ** math.floor(math.log10(v))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= step * exp10:
            return step * exp10
    return 10 * exp10


def _empty(frame: _Frame, title: str) -> SVG:
    frame.axes(title, "", "")
    frame.text((frame.x0 + frame.x1) / 2, (frame.y0 + frame.y1) / 2, "no data")
    return frame.render(title)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, x_label: str = "",
              y_label: str = "", width: int = 520, height: int = 260,
              fmt=None, color: str = PALETTE[0]) -> SVG:
    """Vertical bars, one per label, value printed on top."""
    frame = _Frame(width, height)
    if not values or max(values) <= 0:
        return _empty(frame, title)
    top = _nice_top(max(values))
    frame.axes(title, x_label, y_label)
    frame.y_ticks(top, fmt)
    slot = (frame.x1 - frame.x0) / len(values)
    for i, (label, value) in enumerate(zip(labels, values)):
        x = frame.x0 + i * slot + slot * 0.15
        y = frame.sy(value / top)
        frame.add(f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                  f'height="{frame.y0 - y:.1f}" fill="{color}"><title>{esc(label)}: '
                  f'{esc((fmt or _count)(value))}</title></rect>')
        frame.text(x + slot * 0.35, frame.y0 + 14, label, size=10)
        frame.text(x + slot * 0.35, y - 3, (fmt or _count)(value), size=9, color="#555")
    return frame.render(title)


def _log_axis(frame: _Frame, lo: float, hi: float) -> Any:
    llo, lhi = math.log10(lo), math.log10(hi)

    def sx(seconds: float) -> float:
        return frame.sx((math.log10(max(seconds, lo)) - llo) / (lhi - llo))

    for seconds, label in DURATION_TICKS:
        if lo <= seconds <= hi:
            x = sx(seconds)
            frame.add(f'<line x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" y2="{frame.y1}" '
                      'stroke="#eee"/>')
            frame.text(x, frame.y0 + 14, label, size=10)
    return sx


def histogram_chart(bins: Sequence[tuple[float, float, float]], *, title: str,
                    x_label: str = "gap between consecutive events (log scale)",
                    y_label: str = "share of gaps",
                    markers: Sequence[tuple[float, str, str]] = (),
                    overlays: dict[str, Sequence[tuple[float, float, float]]] | None = None,
                    components: dict[str, Sequence[tuple[float, float, float]]] | None = None,
                    lo: float = 0.1, hi: float = 30 * 86400, width: int = 640,
                    height: int = 280) -> SVG:
    """Bars over a log-seconds axis (``(low, high, share)``), vertical markers, overlay lines.

    Markers are ``(seconds, label, color)``: the threshold in use, the recommendation.
    Overlays draw other series (e.g. per platform) as lines over the same bins;
    ``components`` draws fitted model components as dashed curves, labelled at their peak.
    """
    frame = _Frame(width, height)
    series = [b for b in bins if b[0] > 0]
    overlays = overlays or {}
    components = components or {}
    peak = max([b[2] for b in series] + [b[2] for s in overlays.values() for b in s if b[0] > 0]
               + [b[2] for s in components.values() for b in s] or [0])
    if peak <= 0:
        return _empty(frame, title)
    top = _nice_top(peak)
    frame.axes(title, x_label, y_label)
    frame.y_ticks(top, _percent)
    sx = _log_axis(frame, lo, hi)
    for low, high, share in series:
        if high < lo or low > hi:
            continue
        x, x2, y = sx(low), sx(high), frame.sy(share / top)
        frame.add(f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{max(x2 - x, 0.8):.1f}" '
                  f'height="{frame.y0 - y:.1f}" fill="{PALETTE[0]}" fill-opacity="0.55"/>')
    for i, (name, line) in enumerate(overlays.items(), start=1):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{sx(math.sqrt(low * high)):.1f},{frame.sy(share / top):.1f}"
                          for low, high, share in line if low > 0 and lo <= low <= hi)
        if points:
            frame.add(f'<polyline class="mark" points="{points}" fill="none" stroke="{color}" '
                      'stroke-width="1.6"/>')
            frame.text(frame.x1 - 4, frame.y1 + 14 * i, name, anchor="end", color=color)
    for i, (name, line) in enumerate(components.items()):
        color = COMPONENT_COLORS[i % len(COMPONENT_COLORS)]
        inside = [(math.sqrt(low * high), share) for low, high, share in line
                  if low > 0 and lo <= low <= hi]
        if not inside:
            continue
        points = " ".join(f"{sx(x):.1f},{frame.sy(share / top):.1f}" for x, share in inside)
        frame.add(f'<polyline class="component" points="{points}" fill="none" '
                  f'stroke="{color}" stroke-width="1.8" stroke-dasharray="3 2"/>')
        x, share = max(inside, key=lambda p: p[1])
        frame.text(sx(x), frame.sy(share / top) - 4, name, color=color, size=10)
    for j, (seconds, label, color) in enumerate(markers):
        x = sx(seconds)
        frame.add(f'<line class="marker" x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" '
                  f'y2="{frame.y1}" stroke="{color}" stroke-width="2" stroke-dasharray="5 3"/>')
        frame.text(x + 4, frame.y1 + 12 + 13 * j, label, anchor="start", color=color, size=10)
    return frame.render(title)


def line_chart(series: dict[str, Sequence[tuple[float, float]]], *, title: str,
               x_label: str = "threshold (log scale)", y_label: str = "", fmt=None,
               markers: Sequence[tuple[float, str, str]] = (), lo: float = 60,
               hi: float = 4 * 3600, width: int = 420, height: int = 240) -> SVG:
    """One line per series over a log-seconds axis, with dots at the measured points."""
    frame = _Frame(width, height)
    values = [y for s in series.values() for _, y in s if y is not None]
    if not values:
        return _empty(frame, title)
    top = _nice_top(max(values))
    frame.axes(title, x_label, y_label)
    frame.y_ticks(top, fmt)
    sx = _log_axis(frame, lo, hi)
    for i, (name, points) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        xy = [(sx(x), frame.sy(y / top)) for x, y in points if y is not None and lo <= x <= hi]
        if not xy:
            continue
        frame.add(f'<polyline class="mark" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in xy)}"'
                  f' fill="none" stroke="{color}" stroke-width="1.8"/>')
        frame.add("".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{color}"/>'
                          for x, y in xy))
        if len(series) > 1:
            frame.text(frame.x1 - 4, frame.y1 + 12 * (i + 1), name, anchor="end", color=color,
                       size=10)
    for seconds, label, color in markers:
        x = sx(seconds)
        frame.add(f'<line class="marker" x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" '
                  f'y2="{frame.y1}" stroke="{color}" stroke-dasharray="4 3"/>')
        frame.text(x + 3, frame.y0 - 6, label, anchor="start", color=color, size=10)
    return frame.render(title)


def timeline_chart(users: Sequence[dict[str, Any]], *, title: str, width: int = 760) -> SVG:
    """One row per user: sessions as bands, events as ticks, on the user's own time axis.

    ``users``: ``{"label", "sessions": [(start_us, end_us, reason)], "events": [ts_us]}``.
    Each row has its own axis (users' activity spans differ by orders of magnitude),
    labelled with the first and last event times.
    """
    row_h = 46
    frame = _Frame(width, 40 + row_h * max(len(users), 1), left=110, top=30, bottom=10)
    frame.text(frame.x0, 18, title, anchor="start", size=13, extra=' font-weight="600"')
    if not users:
        frame.text(width / 2, 50, "no users")
        return frame.render(title)
    for r, user in enumerate(users):
        y = 34 + r * row_h
        events = user["events"]
        first, last = min(events), max(events)
        span = max(last - first, 1)

        def sx(ts: int, first=first, span=span) -> float:
            return frame.sx((ts - first) / span)

        frame.text(frame.x0 - 8, y + 16, user["label"], anchor="end")
        frame.add(f'<line x1="{frame.x0}" y1="{y + 12}" x2="{frame.x1}" y2="{y + 12}" '
                  'stroke="#ddd"/>')
        for i, (start, end, reason) in enumerate(user["sessions"]):
            color = PALETTE[i % 2]
            x = sx(start)
            frame.add(f'<rect class="mark" x="{x - 2:.1f}" y="{y + 2}" '
                      f'width="{max(sx(end) - x, 0) + 4:.1f}" height="20" rx="3" fill="{color}" '
                      f'fill-opacity="0.25" stroke="{color}"><title>session {i + 1}: '
                      f'{esc(reason)}</title></rect>')
        frame.add("".join(f'<line class="mark" x1="{sx(ts):.1f}" y1="{y + 4}" x2="{sx(ts):.1f}" '
                          f'y2="{y + 20}" stroke="#222" stroke-width="1.2"/>' for ts in events))
        frame.text(frame.x0, y + 36, user["first_label"], anchor="start", size=9, color="#777")
        frame.text(frame.x1, y + 36, user["last_label"], anchor="end", size=9, color="#777")
    return frame.render(title)


def threshold_chart(analysis: Any, chart: str, *, platform: str | None = None,
                    format: str = "svg") -> SVG | bytes:
    """The analysis' ``"gaps"`` histogram or ``"sensitivity"`` curve, as SVG or PNG bytes."""
    if chart not in ("gaps", "sensitivity"):
        raise OptionError(f"'chart' must be one of gaps, sensitivity (got {chart!r})")
    if format not in ("svg", "png"):
        raise OptionError(f"'format' must be one of svg, png (got {format!r})")
    name = platform or "all"
    if name not in analysis.recommendations:
        raise OptionError(f"'platform' must be one of {', '.join(analysis.recommendations)} "
                          f"(got {platform!r})")
    if chart == "gaps":
        svg = gap_histogram(analysis, name)
    else:
        svg = sensitivity_chart(analysis, "sessions", platforms=[name])
    return svg.to_png() if format == "png" else svg


def shares(rows: Sequence[dict[str, Any]]) -> list[tuple[float, float, float]]:
    total = sum(r["gaps"] for r in rows) or 1
    return [(r["low_seconds"], r["high_seconds"], r["gaps"] / total) for r in rows]


def gap_histogram(analysis: Any, platform: str = "all", *, overlay_platforms: bool = False
                  ) -> SVG:
    """Log-gap histogram with the threshold in use, the recommendation and the fitted
    components marked."""
    rows = [r for r in analysis.histogram if r["platform"] == platform]
    rec = analysis.recommendations[platform]
    markers = [(analysis.gap_seconds, f"in use: {_dur(analysis.gap_seconds)}", "#c0392b")]
    if rec.threshold_seconds and rec.threshold_seconds != analysis.gap_seconds:
        markers.append((rec.threshold_seconds, f"recommended: {_dur(rec.threshold_seconds)} "
                        f"({rec.confidence})", "#20a386"))
    overlays = {p: shares([r for r in analysis.histogram if r["platform"] == p])
                for p in analysis.platforms} if overlay_platforms else None
    label = "all events" if platform == "all" else platform
    return histogram_chart(shares(rows), title=f"Gaps between consecutive events ({label})",
                           markers=markers, overlays=overlays,
                           components=None if overlay_platforms else component_curves(rows, rec))


def component_curves(rows: Sequence[dict[str, Any]], rec: Any
                     ) -> dict[str, list[tuple[float, float, float]]]:
    """Each fitted component's expected share of gaps per histogram bin (1/20 decade),
    on the same scale as :func:`shares` (the fit covers the bins from 10^(-19/20) s up,
    as ``analysis.thresholds.FIT_LOW`` says)."""
    total = sum(r["gaps"] for r in rows) or 1
    fitted = sum(r["gaps"] for r in rows if r["low_seconds"] >= 10 ** (-19 / 20) - 1e-9) / total
    out = {}
    for c in rec.components:
        mean, sd = math.log10(c["median_seconds"]), c["sd_decades"]
        line = []
        for b in range(-19, 141):
            low, high = 10 ** (b / 20), 10 ** ((b + 1) / 20)
            x = (b + 0.5) / 20
            density = math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            line.append((low, high, fitted * c["weight"] * density / 20))
        out[f"{c['group']} ~{_dur(c['median_seconds'])}"] = line
    return out


SENSITIVITY = {
    "sessions": ("Sessions vs threshold", "sessions", "sessions", None),
    "median": ("Median session duration vs threshold", "median_duration_seconds",
               "median duration", "duration"),
    "one_event": ("Share of one-event sessions vs threshold", "one_event_share",
                  "one-event sessions", "percent"),
}


def sensitivity_chart(analysis: Any, measure: str, *, platforms: Sequence[str] | None = None
                      ) -> SVG:
    """One measure of the sensitivity curve, a line per platform, the threshold in use marked."""
    title, key, y_label, kind = SENSITIVITY[measure]
    names = list(platforms) if platforms else ["all", *analysis.platforms]
    series = {name: [(r["threshold_seconds"], r[key]) for r in analysis.curve
                     if r["platform"] == name] for name in names}
    fmt = {"duration": _dur, "percent": _percent}.get(kind) if kind else None
    markers = [(analysis.gap_seconds, _dur(analysis.gap_seconds), "#c0392b")]
    rec = analysis.recommendations.get(names[0]) if len(names) == 1 else None
    if rec is not None and rec.threshold_seconds and \
            rec.threshold_seconds != analysis.gap_seconds:
        markers.append((rec.threshold_seconds, f"recommended {_dur(rec.threshold_seconds)}",
                        "#20a386"))
    return line_chart(series, title=title, y_label=y_label, fmt=fmt, markers=markers,
                      lo=1, hi=30 * 86400)


def _dur(seconds: float) -> str:
    return _short(seconds) if seconds else "0s"
