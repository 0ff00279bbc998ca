"""Assemble the report's one self-contained HTML page from :func:`.data.collect`'s data.

No external resources: styles inline, charts inline SVG, system fonts. The one
inline script only measures, in the browser, that every chart drew something and
that no script error happened, and writes the result on ``<html>`` as
``data-charts`` / ``data-errors`` (what the tests and a curious reader can check).
Every value that comes from the data is escaped with :func:`.charts.esc`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .._version import __version__
from ..analysis.thresholds import CONFIDENCE_MEASURE, METHOD, _short
from ..charts import svg as charts
from ..charts.svg import esc

__all__ = ["render"]

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;
background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:0 0 8px}
section{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:18px 20px;
margin:16px 0}
.muted{color:#666;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 140px;background:#f0f3fa;border-radius:6px;padding:10px 12px}
.card b{display:block;font-size:22px}.charts{display:flex;flex-wrap:wrap;gap:8px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 10px;text-align:left}
th{background:#f3f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.answer{background:#fbfaf3;border-left:3px solid #e0c341;padding:8px 12px;margin:10px 0}
ul{margin:6px 0;padding-left:20px}
"""

PROBE = """(function(){var errors=0;window.addEventListener('error',function(){errors++;
document.documentElement.setAttribute('data-errors',String(errors));});
window.addEventListener('load',function(){var svgs=document.querySelectorAll('svg'),drawn=0;
for(var i=0;i<svgs.length;i++){var m=svgs[i].querySelectorAll('.mark'),ok=false;
for(var j=0;j<m.length&&!ok;j++){var b=m[j].getBBox();ok=b.width>0||b.height>0;}
if(ok)drawn++;}var h=document.documentElement;h.setAttribute('data-charts',drawn+'/'+svgs.length);
h.setAttribute('data-errors',String(errors));});})();"""


def render(data: dict, analysis: Any, *, show_user_ids: bool) -> tuple[str, dict[str, str]]:
    """The page and its charts (name -> SVG) from the collected data."""
    figures = _charts(data, analysis)
    body = "".join([
        _header(data, show_user_ids), _headline(data), _q1(data, figures), _q2(data, figures),
        _q3_q4(data, analysis, figures), _q5(data, analysis, figures),
        _durations(data, figures), _timelines(data, figures), _events(data),
        _quality(data), _method(analysis),
    ])
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>sessionize report: {esc(data['source'])}</title><style>{STYLE}</style>"
            f"<script>{PROBE}</script></head><body><main>{body}</main></body></html>")
    return page, figures


def _charts(data: dict, analysis: Any) -> dict[str, charts.SVG]:
    reasons = data["stats"]["start_reasons"]
    figures = {
        "sessions_per_user": charts.bar_chart(
            [b for b, _ in data["per_user"]], [c for _, c in data["per_user"]],
            title="Users by number of sessions", x_label="sessions per user",
            y_label="users"),
        "start_reasons": charts.bar_chart(
            list(reasons), list(reasons.values()), title="Session starts by reason",
            x_label="start_reason", y_label="sessions", color=charts.PALETTE[1]),
        "gap_histogram": charts.gap_histogram(analysis, "all"),
        "sensitivity_sessions": charts.sensitivity_chart(analysis, "sessions"),
        "sensitivity_median_duration": charts.sensitivity_chart(analysis, "median"),
        "sensitivity_one_event": charts.sensitivity_chart(analysis, "one_event"),
        "durations": charts.bar_chart(
            [b for b, _ in data["durations"]], [c for _, c in data["durations"]],
            title="Session durations", x_label="duration (first to last event)",
            y_label="sessions", color=charts.PALETTE[2], width=640),
        "timelines": charts.timeline_chart(
            data["timelines"], title="Example users: events (ticks) and sessions (bands)"),
    }
    if analysis.platforms:
        figures["gaps_by_platform"] = charts.gap_histogram(analysis, "all",
                                                           overlay_platforms=True)
    return figures


def _header(data: dict, show_user_ids: bool) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ids = "shown (--show-user-ids)" if show_user_ids else "hidden; users appear as 'user 1', …"
    return (f"<header><h1>Sessions report</h1><p class=\"muted\">{esc(data['source'])} · "
            f"inactivity gap {esc(_short(data['gap_seconds']))} · generated {esc(now)} by "
            f"sessionize {esc(__version__)} · user ids {esc(ids)}</p></header>")


def _headline(data: dict) -> str:
    s, h = data["stats"], data["headline"]
    per = s["sessions_per_user"]
    cards = [
        ("events", f"{s['events']:,}"), ("users", f"{s['users']:,}"),
        ("sessions", f"{s['sessions']:,}"),
        ("sessions per user (mean)", f"{per['mean']:.2f}" if per["mean"] is not None else "-"),
        ("median session", _short(h["median_duration"]) if h["median_duration"] else "0s"),
        ("median events per session", f"{h['median_events'] or 0:g}"),
        ("one-event sessions", f"{h['one_event_share'] or 0:.1%}"),
        ("quarantined rows", f"{sum(s['quarantined'].values()):,}"),
    ]
    span = ""
    if h["first"] is not None:
        span = (f"<p class=\"muted\">events from {esc(h['first'].strftime('%Y-%m-%d %H:%M'))} "
                f"to {esc(h['last'].strftime('%Y-%m-%d %H:%M'))} UTC</p>")
    items = "".join(f"<div class=\"card\"><b>{esc(v)}</b>{esc(k)}</div>" for k, v in cards)
    return f"<section id=\"headline\"><h2>Headline numbers</h2><div class=\"cards\">{items}</div>" \
           f"{span}</section>"


def _figure(figures: dict, *names: str) -> str:
    return "<div class=\"charts\">" + "".join(
        f"<figure data-chart=\"{esc(n)}\" style=\"margin:0\">{figures[n]}</figure>"
        for n in names if n in figures) + "</div>"


def _q1(data: dict, figures: dict) -> str:
    per = data["stats"]["sessions_per_user"]
    text = "No users." if per["mean"] is None else (
        f"Users have {per['mean']:.2f} sessions on average (median {per['median']:g}, "
        f"most {per['max']:,}): as many as their activity has bursts separated by more than "
        f"{_short(data['gap_seconds'])}.")
    return (f"<section id=\"q1\"><h2>1. How many sessions does each user have?</h2>"
            f"<p class=\"answer\">{esc(text)}</p>{_figure(figures, 'sessions_per_user')}"
            "</section>")


def _q2(data: dict, figures: dict) -> str:
    reasons = data["stats"]["start_reasons"]
    total = sum(reasons.values()) or 1
    parts = ", ".join(f"{name} {count:,} ({count / total:.0%})" for name, count in
                      reasons.items())
    text = (f"Every session records why it started: {parts}. first_event is a user's first "
            f"event; inactivity is a gap strictly greater than {_short(data['gap_seconds'])}.")
    return (f"<section id=\"q2\"><h2>2. What causes a new session to start?</h2>"
            f"<p class=\"answer\">{esc(text)}</p>{_figure(figures, 'start_reasons')}</section>")


def _q3_q4(data: dict, analysis: Any, figures: dict) -> str:
    rec = analysis.recommendations["all"]
    gap = data["gap_seconds"]
    near = _share_between(analysis, gap / 2, gap * 2)
    recs = "".join(f"<li><b>{esc(r.platform)}</b>: "
                   f"{esc(r.threshold or 'no recommendation')} "
                   f"({esc(r.confidence)} confidence). {esc(r.statement)}</li>"
                   for r in analysis.recommendations.values())
    why = ("Every event has a timestamp, while start and end events are unreliable (tabs are "
           "closed, apps killed, beacons lost). The gaps below show the two scales of time in "
           "this data: pauses inside a visit and pauses between visits.")
    assumes = (f"A {_short(gap)} threshold assumes that a pause longer than {_short(gap)} ends a "
               f"visit and a shorter one does not, for every user and platform alike, and that "
               f"timestamps are accurate. Here {near:.1%} of gaps lie between {_short(gap / 2)} "
               f"and {_short(gap * 2)}: that is how many boundaries depend on the exact choice.")
    return (f"<section id=\"q3-q4\"><h2>3–4. Why time-based, and what does a {esc(_short(gap))} "
            f"threshold assume?</h2><p class=\"answer\">{esc(why)}</p>"
            f"{_figure(figures, 'gap_histogram')}<p class=\"answer\">{esc(assumes)}</p>"
            f"{_figure(figures, 'sensitivity_sessions', 'sensitivity_median_duration', 'sensitivity_one_event')}"  # noqa: E501
            f"<h3>Recommended threshold</h3><ul>{recs}</ul>"
            f"<p>As a rules file (<code>--config rules.toml</code>):</p>"
            f"<pre class=\"rules\">{esc(analysis.rules_toml())}</pre><p>In Python:</p>"
            f"<pre class=\"rules\">sessionize.run(source, {esc(analysis.rules_python())})</pre>"
            f"<p class=\"muted\">Method: {esc(METHOD)}. Confidence: {esc(CONFIDENCE_MEASURE)}. "
            f"Recommended overall: {esc(rec.threshold or 'none')}.</p></section>")


def _share_between(analysis: Any, low: float, high: float) -> float:
    rows = [r for r in analysis.histogram if r["platform"] == "all"]
    total = sum(r["gaps"] for r in rows) or 1
    inside = sum(r["gaps"] for r in rows if r["low_seconds"] > 0
                 and low < (r["low_seconds"] * r["high_seconds"]) ** 0.5 <= high)
    return inside / total


def _q5(data: dict, analysis: Any, figures: dict) -> str:
    head = ("<tr><th>platform</th><th>users</th><th>events</th><th>sessions</th>"
            "<th>events / session</th><th>median duration</th><th>one-event sessions</th>"
            "<th>recommended threshold</th></tr>")
    body = "".join(
        f"<tr><td>{esc(p['platform'])}</td><td class=\"n\">{p['users']:,}</td>"
        f"<td class=\"n\">{p['events']:,}</td><td class=\"n\">{p['sessions']:,}</td>"
        f"<td class=\"n\">{_num(p['events_per_session'])}</td>"
        f"<td class=\"n\">{esc(_short(p['median_duration']) if p['median_duration'] else '0s')}"
        f"</td><td class=\"n\">{_pct(p['one_event_share'])}</td>"
        f"<td>{esc(p['recommendation'].threshold or '-')} "
        f"({esc(p['recommendation'].confidence)})</td></tr>" for p in data["platforms"])
    if analysis.platforms:
        note = ("Platforms come from context.library.name (analytics.js → web; analytics-ios, "
                "analytics-android, react-native, flutter → mobile; analytics-node, -python, "
                "-go, -ruby, -java → server) or the column given with --platform.")
    else:
        note = ("The input names no platform (no context.library.name), so all events are "
                "compared as one group. Name a column with --platform to split them.")
    text = ("Mobile apps pause and resume (short idle expectations, batched late events); web "
            "apps sit in open tabs. Compare the gap shapes and the recommended thresholds per "
            "platform below before using one threshold for all.")
    return (f"<section id=\"q5\"><h2>5. Web vs mobile</h2><p class=\"answer\">{esc(text)}</p>"
            f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
            f"<p class=\"muted\">{esc(note)}</p>{_figure(figures, 'gaps_by_platform')}</section>")


def _durations(data: dict, figures: dict) -> str:
    return ("<section id=\"durations\"><h2>Session durations</h2><p class=\"muted\">From the "
            "first to the last event of a session; a one-event session lasts 0 s.</p>"
            f"{_figure(figures, 'durations')}</section>")


def _timelines(data: dict, figures: dict) -> str:
    rows = "".join(
        f"<tr><td>{esc(t['label'])}</td><td class=\"n\">{session}</td><td>{esc(name)}</td>"
        f"<td>{esc(ts)}</td><td>{esc(reason or '')}</td></tr>"
        for t in data["timelines"] for session, name, ts, reason in t["rows"])
    return ("<section id=\"timelines\"><h2>User timelines</h2><p class=\"muted\">A few users "
            "with several sessions, as in the notebook's \"View User Timelines\".</p>"
            f"{_figure(figures, 'timelines')}<table><thead><tr><th>user</th><th>session_id</th>"
            "<th>event</th><th>timestamp (UTC)</th><th>start_reason</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def _events(data: dict) -> str:
    rows = "".join(f"<tr><td>{esc(name)}</td><td class=\"n\">{count:,}</td></tr>"
                   for name, count in data["top_events"])
    return ("<section id=\"events\"><h2>Most frequent events</h2><table><thead><tr>"
            "<th>event (name, else type)</th><th>events</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def _quality(data: dict) -> str:
    q = data["quality"]
    items = []
    quarantined = ", ".join(f"{reason} {count:,}" for reason, count in q["quarantine"])
    items.append(f"Quarantined rows: {quarantined or 'none'}.")
    dup = f"Duplicate messageIds: {q['duplicate_ids']:,} ids on {q['duplicate_rows']:,} " \
          "extra rows"
    if q["duplicate_examples"]:
        dup += " (e.g. " + ", ".join(q["duplicate_examples"]) + ")"
    items.append(dup + ". Segment retries can deliver an event twice; duplicates inflate "
                 "event counts but do not split sessions.")
    pairs = q["pairs"] or 1
    items.append(f"Out-of-order arrival: {q['out_of_order']:,} of {q['pairs']:,} consecutive "
                 f"event pairs ({q['out_of_order'] / pairs:.1%}) appear in the input in the "
                 "opposite order to their timestamps (late or batched delivery, merged files). "
                 "sessionize orders by time, so this does not change sessions.")
    ties, gaps = q["ties"]
    items.append(f"Exact timestamp ties: {ties:,} of {gaps:,} gaps are 0 ({ties / (gaps or 1):.1%})"
                 "; they are ordered by messageId, then input order.")
    skew = q["skew"]
    if skew is None:
        items.append("Clock skew: the input has no sentAt and receivedAt, so it cannot be "
                     "checked.")
    else:
        n = skew["events"] or 1
        items.append(
            f"Clock skew (receivedAt − sentAt) on {skew['events']:,} events: median "
            f"{_num(skew['median_seconds'])} s; {skew['over_1m'] / n:.1%} off by more than "
            f"1 min, {skew['over_1h'] / n:.1%} by more than 1 h, {skew['negative'] / n:.1%} "
            f"sent 'after' they were received (device clock ahead). "
            f"{skew['late_over_1h']:,} events reached the server more than 1 h after their "
            "timestamp (batched or offline delivery).")
    long = q["long_sessions"]
    items.append(f"Very long sessions: {long['over_4h']:,} last over 4 h and "
                 f"{long['over_1d']:,} over a day (longest "
                 f"{_short(long['longest_seconds']) if long['longest_seconds'] else '0s'}); "
                 "background polling or bots keep a session alive without a person.")
    sampled = ""
    if q["sampled"]:
        sampled = (f"<p class=\"muted\">Duplicate, order and tie figures are computed on a "
                   f"deterministic sample of users ({q['sample_events']:,} events, 1 user in "
                   f"{q['sample_modulus']}).</p>")
    body = "".join(f"<li>{esc(item)}</li>" for item in items)
    return f"<section id=\"quality\"><h2>Data quality</h2><ul>{body}</ul>{sampled}</section>"


def _method(analysis: Any) -> str:
    return ("<section id=\"method\"><h2>How these figures were computed</h2><p class=\"muted\">"
            "Sessions follow the notebook's rule: per user (userId, else anonymousId), ordered "
            "by time, a new session at the first event and after a gap strictly greater than "
            "the threshold. The sensitivity curves are exact session counts, median durations "
            "and one-event shares at each threshold, computed in one pass over the gaps. "
            f"Recommendation: {esc(METHOD)}.</p></section>")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
