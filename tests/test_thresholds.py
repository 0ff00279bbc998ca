"""Threshold analysis: the one-pass curve equals full runs; recommendations find known visits."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from reference import platform as reference_platform

import sessionize
from sessionize.analysis.thresholds import ThresholdAnalysis, platform_of, recommend
from sessionize.cli.main import main
from sessionize.sql.compiler import platform_sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from generate import generate_events  # noqa: E402

START = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


def visits(n_users: int, *, library: str, within: float, between: float, seed: int,
           visits_per_user: int = 8, events_per_visit: int = 6, sigma: float = 0.7):
    """Events with a known visit structure: log-normal gaps inside and between visits.

    Returns the rows and the true number of visits.
    """
    rng = np.random.default_rng(seed)
    rows, true_visits = [], 0
    for u in range(n_users):
        t = START.timestamp() + rng.uniform(0, 86400 * 5)
        for v in range(visits_per_user):
            if v:
                t += float(np.exp(rng.normal(np.log(between), sigma)))
            true_visits += 1
            for e in range(max(1, rng.poisson(events_per_visit))):
                if e:
                    t += float(np.exp(rng.normal(np.log(within), sigma)))
                rows.append({"userId": f"{library}-{u}", "type": "track", "event": "Tapped",
                             "messageId": f"{library}-{u}-{len(rows)}",
                             "timestamp": round(t * 1000),
                             "context": {"library": {"name": library}}})
    return rows, true_visits


def curve_at(analysis: ThresholdAnalysis, seconds: float, platform: str = "all") -> dict:
    return next(r for r in analysis.curve
                if r["platform"] == platform and r["threshold_seconds"] == seconds)


@pytest.fixture(scope="module")
def generated():
    return generate_events(30_000, seed=7)


@pytest.mark.parametrize("gap", ["1s", "10s", "1m", "5m", "30m", "2h", "4h", "7d"])
def test_one_pass_curve_equals_full_runs(generated, gap):
    analysis = sessionize.thresholds(generated)
    with sessionize.run(generated, gap=gap) as full:
        sessions, median, one = full.engine.con.execute(
            "SELECT count(*), median(duration_seconds), avg((event_count = 1)::INT) "
            "FROM sz_sessions").fetchall()[0]
    point = curve_at(analysis, sessionize.parse_duration(gap) / 1e6)
    assert point["sessions"] == sessions
    assert point["median_duration_seconds"] == pytest.approx(median, abs=1e-6)
    assert point["one_event_share"] == pytest.approx(one, abs=1e-12)


def test_platform_curves_add_up_and_use_the_library(generated):
    analysis = sessionize.thresholds(generated)
    assert analysis.platforms == ["mobile", "web"]
    for seconds in (60, 1800, 14400):
        parts = sum(curve_at(analysis, seconds, p)["sessions"] for p in analysis.platforms)
        assert parts == curve_at(analysis, seconds)["sessions"]
    assert sum(analysis.users[p] for p in analysis.platforms) == analysis.users["all"]


def test_gap_exactly_at_a_threshold_stays_in_the_session():
    rows = [{"userId": "u", "timestamp": "2024-01-01T10:00:00Z"},
            {"userId": "u", "timestamp": "2024-01-01T10:30:00Z"},  # exactly 30m: same session
            {"userId": "u", "timestamp": "2024-01-01T11:00:00.001Z"}]  # 30m + 1ms: splits
    analysis = sessionize.thresholds(pa.Table.from_pylist(rows), grid=["30m", "31m"])
    assert curve_at(analysis, 1800)["sessions"] == 2
    assert curve_at(analysis, 1860)["sessions"] == 1
    assert curve_at(analysis, 1800)["median_duration_seconds"] == pytest.approx(900.0005)


def test_histogram_counts_every_gap_once(generated):
    analysis = sessionize.thresholds(generated, platform=None)
    assert analysis.platforms == []
    total = sum(r["gaps"] for r in analysis.histogram)
    assert total == len(generated) - analysis.users["all"]


def test_recommendation_recovers_known_visits_per_platform():
    web, web_visits = visits(300, library="analytics.js", within=30, between=86400, seed=1)
    mobile, mobile_visits = visits(300, library="analytics-ios", within=5, between=2 * 3600,
                                   seed=2)
    events = pa.Table.from_pylist(web + mobile)
    analysis = sessionize.thresholds(events)
    rec_web, rec_mobile = analysis.recommendations["web"], analysis.recommendations["mobile"]
    assert rec_web.confidence == "high", rec_web.statement
    assert rec_mobile.confidence in ("high", "medium"), rec_mobile.statement
    assert 10 * 60 <= rec_web.threshold_seconds <= 2 * 3600
    assert 60 <= rec_mobile.threshold_seconds <= 15 * 60
    assert rec_mobile.threshold_seconds < rec_web.threshold_seconds
    # The recommended threshold reproduces the true visits almost exactly.
    for rows, truth, rec in ((web, web_visits, rec_web), (mobile, mobile_visits, rec_mobile)):
        with sessionize.run(pa.Table.from_pylist(rows), gap=rec.threshold) as result:
            assert abs(len(result.sessions) - truth) <= 0.02 * truth
    assert "log-normal components" in rec_web.statement and "High confidence" in rec_web.statement
    assert "overlap" in rec_web.statement and "decades" in rec_web.statement


def test_recommendation_on_the_benchmark_generator_is_between_its_modes(generated):
    rec = sessionize.thresholds(generated).recommendations["all"]
    assert 5 * 60 <= rec.threshold_seconds <= 2 * 3600
    assert rec.within_visit_mode_seconds < 120 < 3600 < rec.between_visit_mode_seconds


def test_unimodal_gaps_are_not_called_confident():
    rng = np.random.default_rng(3)
    rows, t = [], START.timestamp()
    for i in range(3000):
        t += float(rng.exponential(600))
        rows.append({"userId": f"u{i % 30}", "timestamp": round(t * 1000)})
    rec = sessionize.thresholds(pa.Table.from_pylist(rows)).recommendations["all"]
    assert rec.confidence in ("low", "medium")


def test_too_few_gaps_give_no_recommendation():
    analysis = sessionize.thresholds(sessionize.sample_path())
    rec = analysis.recommendations["all"]
    assert rec.threshold is None and rec.confidence == "none"
    assert "at least 200" in rec.statement
    assert recommend([], "all").threshold_seconds is None


def test_platform_from_json_struct_and_flattened_columns_agree(tmp_path):
    web, _ = visits(5, library="analytics-next", within=30, between=86400, seed=4)
    server, _ = visits(5, library="analytics-python", within=30, between=86400, seed=5)
    rows = web + server
    (tmp_path / "e.json").write_text(json.dumps(rows))
    import pandas as pd

    from_json = sessionize.thresholds(str(tmp_path / "e.json"))
    from_struct = sessionize.thresholds(pa.Table.from_pylist(rows))
    from_flat = sessionize.thresholds(pd.json_normalize(rows))
    assert from_json.platforms == from_struct.platforms == from_flat.platforms == \
        ["server", "web"]
    assert from_json.curve == from_struct.curve == from_flat.curve


def test_platform_column_named_by_the_user():
    rows = [{"userId": "a", "timestamp": 1_700_000_000 + i * 10, "device": "Mobile"}
            for i in range(5)] + [{"userId": "b", "timestamp": 1_700_000_000, "device": None}]
    analysis = sessionize.thresholds(pa.Table.from_pylist(rows), platform="device")
    assert analysis.platforms == ["mobile", "unknown"]


def test_bad_options_name_the_valid_choices():
    with pytest.raises(sessionize.OptionError, match="'platform' must name a column.*has: "):
        sessionize.thresholds(sessionize.sample_path(), platform="nope")
    with pytest.raises(sessionize.OptionError, match="'grid' must be a non-empty list"):
        sessionize.thresholds(sessionize.sample_path(), grid=[])
    with pytest.raises(sessionize.OptionError, match="'table' must be one of"):
        sessionize.thresholds(sessionize.sample_path()).to_arrow("nope")
    with sessionize.run(sessionize.sample_path()) as result:
        with pytest.raises(sessionize.OptionError, match="must not be given with a finished"):
            sessionize.thresholds(result, gap="5m")
        assert sessionize.thresholds(result).curve == sessionize.thresholds(
            sessionize.sample_path()).curve


def test_tables_and_plots():
    analysis = sessionize.thresholds(sessionize.sample_path())
    curve = analysis.to_pandas()
    assert list(curve.columns) == ["platform", "threshold_seconds", "sessions",
                                   "median_duration_seconds", "one_event_share"]
    assert analysis.to_arrow("recommendations").num_rows == 1 + len(analysis.platforms)
    svg = analysis.plot("gaps")
    assert svg.startswith("<svg") and 'class="mark"' in svg and svg._repr_svg_() == svg
    assert 'class="mark"' in analysis.plot("sensitivity", platform="web")
    with pytest.raises(sessionize.OptionError, match="'chart' must be one of gaps, sens"):
        analysis.plot("pie")
    assert "<svg" in analysis._repr_html_()


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_cli_thresholds_prints_recommendations_and_json():
    code, out, err = cli("thresholds", "--sample")
    assert code == 0, err
    assert "all: no recommendation" in out and "threshold" in out and "30m" in out
    code, out, _ = cli("thresholds", "--sample", "--json", "--platform", "none")
    data = json.loads(out)
    assert code == 0 and data["platforms"] == [] and data["curve"][0]["sessions"] == 6
    assert cli("thresholds", "--sample", "--platform", "nope")[0] == 2
    assert cli("thresholds", "--sample", "--gap", "soon")[0] == 2
    assert cli("thresholds")[0] == 2


LIBRARY_NAMES = ["analytics.js", "Analytics.JS ", "analytics-next", "rudder-sdk-js",
                 "@segment/analytics-next", "analytics-ios", "analytics-kotlin-android",
                 "Xamarin.Forms", "unity-sdk", "analytics-node", "analytics-python",
                 "my-web-sdk", "something-js", "javascript", "analytics.net", "roku", "",
                 "   ", None]


def test_rules_and_analysis_map_library_names_to_the_same_platform():
    # gap_by="platform" and enrich's platform (the compiled SQL), the threshold analysis
    # (its own per-name mapping) and the reference read one table of names and patterns
    # (rules.PLATFORM_LIBRARIES / PLATFORM_PATTERNS), so the analysis's per-platform
    # recommendations paste into gaps= as they are
    con = duckdb.connect()
    con.execute("CREATE TABLE libs (name VARCHAR)")
    con.executemany("INSERT INTO libs VALUES (?)", [[n] for n in LIBRARY_NAMES])
    analysis_text = "coalesce(lower(trim(name)), '')"  # as thresholds.platform_sql reads
    rows = con.execute(f"SELECT name, {platform_sql('name')}, {platform_of(analysis_text)} "
                       "FROM libs").fetchall()
    seen = {}
    for name, rule, analysis in rows:
        seen[name] = rule
        assert rule == reference_platform(name), name
        if analysis in ("web", "mobile", "server"):
            assert rule == analysis, (name, rule, analysis)
        elif analysis == "unknown":
            assert rule is None, name
        else:  # a name neither the list nor a pattern knows: kept by the analysis
            assert rule == "server" and analysis == name.strip().lower(), (name, analysis)
    assert seen["rudder-sdk-js"] == "web" and seen["Xamarin.Forms"] == "mobile"
    assert seen["roku"] == "server" and seen["   "] is None
