"""The report: one self-contained HTML page answering the notebook's questions.

``build_report(result)`` runs the threshold analysis, collects the figures
(:mod:`.data`, :mod:`.quality`), draws the charts as inline SVG (:mod:`.charts`)
and assembles the page (:mod:`.page`). Charts are also available one by one as
SVG, or PNG through headless Chromium (:mod:`.png`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..analysis.thresholds import ThresholdAnalysis, analyze
from ..api import execute
from ..charts.svg import SVG
from ..errors import OptionError
from ..result import Result
from .data import collect
from .page import render

__all__ = ["CHARTS", "Report", "build_report", "report"]

CHARTS = ("sessions_per_user", "start_reasons", "gap_histogram", "sensitivity_sessions",
          "sensitivity_median_duration", "sensitivity_one_event", "durations", "timelines",
          "gaps_by_platform")


class Report:
    """A built report: ``html`` (the page), ``charts`` (name -> SVG) and the analysis."""

    def __init__(self, html: str, charts: dict[str, SVG], analysis: ThresholdAnalysis):
        self.html = html
        self.charts = charts
        self.analysis = analysis

    def write(self, path: str | os.PathLike) -> str:
        """Write the page to ``path`` atomically (staged beside it, then renamed)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        staged = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(staged, "w", encoding="utf-8") as fh:
            fh.write(self.html)
        os.replace(staged, path)
        return path

    def chart(self, name: str, *, format: str = "svg") -> SVG | bytes:
        """One chart as SVG (a ``str``) or PNG bytes (``format="png"``, needs Chromium)."""
        if format not in ("svg", "png"):
            raise OptionError(f"'format' must be one of svg, png (got {format!r})")
        if name not in self.charts:
            raise OptionError(f"'chart' must be one of {', '.join(self.charts)} (got {name!r})")
        svg = self.charts[name]
        return svg.to_png() if format == "png" else svg

    def __str__(self) -> str:
        return self.html

    def _repr_html_(self) -> str:
        # Notebooks sandbox the page poorly as a fragment; an iframe keeps its styles apart.
        import html

        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
                'style="width:100%;height:720px;border:1px solid #ddd"></iframe>')


def build_report(result: Result, *, show_user_ids: bool = False,
                 platform: str | None = "auto") -> Report:
    """Build the report of a finished run (see the module docstring)."""
    if not isinstance(show_user_ids, bool):
        raise OptionError(f"'show_user_ids' must be True or False (got {show_user_ids!r})")
    con = result.engine.con
    analysis = analyze(result, platform=platform, keep_gaps=True)
    try:
        data = collect(result, analysis, show_user_ids=show_user_ids)
    finally:
        con.execute("DROP TABLE IF EXISTS sz_th_gaps")
        for view in ("sz_th_sample", "sz_keys", "sz_assign_users"):  # the columnar plan's
            with contextlib.suppress(Exception):
                con.unregister(view)
    page, charts = render(data, analysis, show_user_ids=show_user_ids)
    return Report(page, charts, analysis)


def report(source: Any, path: str | os.PathLike | None = None, *, show_user_ids: bool = False,
           platform: str | None = "auto", **options: Any) -> Report:
    """Sessionize ``source`` and build the report; write it to ``path`` when given.

    ``source`` is anything :func:`sessionize.run` takes (other keyword options, such as
    ``gap=`` or ``user_id=``, go to it), or a finished :class:`~sessionize.Result`.
    User ids are replaced by ``user 1``, ``user 2``, ... unless ``show_user_ids=True``;
    ``platform`` is ``"auto"`` (Segment's ``context.library.name``), a column or dotted
    path, or None for no split.

    >>> import sessionize
    >>> page = sessionize.report(sessionize.sample_path())
    >>> "Sessions report" in page.html and "user_001" not in page.html
    True
    """
    if isinstance(source, Result):
        if options:
            raise OptionError(
                f"run options ({', '.join(sorted(options))}) must not be given with a finished "
                "Result (got a Result); pass them to sessionize.run() instead")
        built = build_report(source, show_user_ids=show_user_ids, platform=platform)
    else:
        # nobody reads this run's events table: skip its time order and its columns
        options.setdefault("events_order", "none")
        with execute(source, events_table=False, **options) as result:
            built = build_report(result, show_user_ids=show_user_ids, platform=platform)
    if path is not None:
        built.write(path)
    return built
