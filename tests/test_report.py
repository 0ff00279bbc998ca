"""The report: content, escaping, hidden ids, and what a person sees in a real browser."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import sessionize
from sessionize.cli.main import main
from sessionize.reporting import CHARTS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
XSS = "<script>alert(1)</script>"
BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.S)

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="headless Chromium is not installed (apt-get install chromium); CI always has it")


def events() -> list[dict]:
    """Two users on web and mobile, a hostile event name, a duplicate, late and skewed rows."""
    rows = []

    def add(user, minute, name, library, msg=None, sent_delta=0.0, received_delta=1.0):
        ts = 1_704_103_200 + minute * 60  # 2024-01-01T10:00:00Z
        iso = _iso(ts)
        rows.append({"userId": user, "type": "track", "event": name,
                     "messageId": msg or f"m{len(rows)}", "timestamp": iso,
                     "sentAt": _iso(ts + sent_delta), "receivedAt": _iso(ts + received_delta),
                     "context": {"library": {"name": library}}})

    for day in range(3):
        base = day * 1440
        add("alice@example.com", base + 0, "Signed In", "analytics.js")
        add("alice@example.com", base + 3, XSS, "analytics.js")
        add("alice@example.com", base + 9, "Feature Used", "analytics.js")
        add("bob", base + 600, "Application Opened", "analytics-ios", sent_delta=-7200)
        add("bob", base + 601, "Tapped", "analytics-ios", received_delta=5000)
    add("alice@example.com", 12, "Feature Used", "analytics.js", msg="dup")
    add("alice@example.com", 12, "Feature Used", "analytics.js", msg="dup")
    rows.insert(0, rows.pop())  # arrives first, happened later: out of order
    add("carol", 30, "Marathon", "analytics-node")
    add("carol", 32, "Marathon", "analytics-node")
    for i in range(30):
        add("dave", 100 + i * 25, "Polling", "analytics.js")  # 25-min gaps: a 12 h session
    return rows


def _iso(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat().replace(
        "+00:00", "Z")


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "events.json"
    path.write_text(json.dumps(events()))
    return path


@pytest.fixture(scope="module")
def page(events_file) -> sessionize.Result:
    with sessionize.run(str(events_file)) as result:
        return sessionize.report(result)


# --- content -------------------------------------------------------------------------------
def test_every_section_and_chart_is_there(page):
    html = page.html
    for section in ("headline", "q1", "q2", "q3-q4", "q5", "durations", "timelines",
                    "events", "quality", "method"):
        assert f'id="{section}"' in html
    assert sorted(page.charts) == sorted(CHARTS)
    for name, svg in page.charts.items():
        assert svg.startswith("<svg") and 'class="mark"' in svg, name
        assert f'data-chart="{name}"' in html
    assert 'class="marker"' in page.charts["gap_histogram"]  # the threshold is marked
    assert "in use: 30m" in page.charts["gap_histogram"]


def test_user_data_is_escaped(page):
    assert XSS not in page.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html
    assert page.html.count("<script>") == 1  # the page's own probe, nothing else
    for svg in page.charts.values():
        assert XSS not in svg


def test_user_ids_are_hidden_unless_asked(events_file, page):
    assert "alice@example.com" not in page.html and "user 1" in page.html
    shown = sessionize.report(str(events_file), show_user_ids=True)
    assert "alice@example.com" in shown.html or "bob" in shown.html
    with pytest.raises(sessionize.OptionError, match="'show_user_ids' must be True or False"):
        sessionize.report(str(events_file), show_user_ids="yes")


def test_web_vs_mobile_and_data_quality(page):
    q5 = page.html.split('id="q5"')[1].split("</section>")[0]
    for platform in ("web", "mobile", "server"):
        assert f"<td>{platform}</td>" in q5
    quality = page.html.split('id="quality"')[1].split("</section>")[0]
    assert "Duplicate messageIds: 1 ids on 1 extra rows (e.g. dup)" in quality
    assert re.search(r"Out-of-order arrival: [1-9]\d* of", quality)
    assert "Clock skew (receivedAt − sentAt) on" in quality
    assert "3 events reached the server more than 1 h after" in quality
    assert "Very long sessions: 1 last over 4 h" in quality


def test_quarantined_rows_are_counted(tmp_path):
    rows = events() + [{"userId": "x", "timestamp": "soon", "messageId": "bad"}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    built = sessionize.report(str(path), on_invalid="quarantine")
    assert "Quarantined rows: invalid_timestamp 1." in built.html


def test_report_without_platform_or_sent_at():
    built = sessionize.report(sessionize.sample_path(), platform=None)
    assert "gaps_by_platform" not in built.charts
    assert "the input has no sentAt and receivedAt" in built.html
    assert "The input names no platform" in built.html


def test_report_of_a_result_and_errors(events_file, tmp_path):
    with sessionize.run(str(events_file)) as result:
        built = sessionize.report(result, tmp_path / "r.html")
        assert (tmp_path / "r.html").read_text() == built.html
        assert built.chart("durations").startswith("<svg")
        with pytest.raises(sessionize.OptionError, match="'chart' must be one of sessions_per"):
            built.chart("pie")
        with pytest.raises(sessionize.OptionError, match="'format' must be one of svg, png"):
            built.chart("durations", format="gif")
        with pytest.raises(sessionize.OptionError, match="must not be given with a finished"):
            sessionize.report(result, gap="5m")
    assert "<iframe srcdoc=" in sessionize.report(str(events_file))._repr_html_()


def test_png_export_without_chromium_names_the_install(monkeypatch, page):
    monkeypatch.setenv("SESSIONIZE_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        page.chart("durations", format="png")


# --- command line --------------------------------------------------------------------------
def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_cli_report(events_file, tmp_path):
    target = tmp_path / "sub" / "report.html"
    code, out, err = cli("report", str(events_file), "-o", str(target))
    assert code == 0, err
    assert f"wrote {target}" in out and "alice@example.com" not in target.read_text()
    code, _, err = cli("report", str(events_file), "-o", str(target), "--show-user-ids", "-q")
    assert code == 0 and "alice@example.com" in target.read_text()
    assert cli("report", str(events_file))[0] == 2  # -o is required
    assert cli("report", str(tmp_path / "missing.json"), "-o", str(target))[0] == 1


# --- in a real browser ---------------------------------------------------------------------
def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True,
                          timeout=180)


@needs_chromium
def test_report_in_headless_chromium(page, tmp_path):
    path = tmp_path / "report.html"
    page.write(path)
    dom = chromium("--dump-dom", "--virtual-time-budget=5000", path.as_uri(),
                   profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html_tag = re.search(r"<html[^>]*>", dom.stdout).group(0)
    charts = re.search(r'data-charts="(\d+)/(\d+)"', html_tag)
    assert charts, f"the page's probe did not run: {html_tag}"
    assert charts.group(1) == charts.group(2) == str(len(page.charts))  # every chart drew
    assert 'data-errors="0"' in html_tag
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout  # shown as text
    assert "alert(1)</script>" not in dom.stdout.split("</head>", 1)[1]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", "--window-size=1200,6000",
                      path.as_uri(), profile=tmp_path / "profile2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000


@needs_chromium
def test_png_export(page, tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIONIZE_CHROMIUM", CHROMIUM)
    data = page.chart("gap_histogram", format="png")
    assert data.startswith(b"\x89PNG")
    page.charts["durations"].save(str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")


# --- the guide section executes ------------------------------------------------------------
def test_report_docs_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(sessionize.sample_path(), tmp_path / "events.json")
    namespace: dict = {}
    blocks = BLOCK.findall((ROOT / "docs" / "report.md").read_text())
    assert len(blocks) >= 8
    for kind, code in blocks:
        if kind == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, "docs/report.md", "exec"), namespace)  # noqa: S102
            continue
        for line in code.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "sessionize"
            status, _, err = cli(*argv[1:])
            assert status == 0, err
    assert (tmp_path / "report.html").exists() and (tmp_path / "report-ids.html").exists()
    assert (tmp_path / "gaps.svg").read_text().startswith("<svg")


def test_page_is_self_contained(page):
    assert not re.search(r"(src|href)=\"(https?:)?//", page.html)
    assert "@import" not in page.html and "url(" not in page.html
