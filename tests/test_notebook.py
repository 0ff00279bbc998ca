"""The starting notebook's output, reproduced exactly by the API and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

import sessionize
from sessionize.cli.main import main

NOTEBOOK_COLUMNS = ["resolved_user", "timestamp", "time_since_last_event", "new_session",
                    "session_id"]

# The notebook's last table before "View User Timelines", as printed in the seed.
EXPECTED = pd.DataFrame({
    "resolved_user": ["user_001", "user_001", "user_001", "user_001", "anon_456", "user_002"],
    "timestamp": pd.to_datetime([
        "2024-01-01 09:00:00+00:00", "2024-01-01 09:02:00+00:00", "2024-01-02 08:30:00+00:00",
        "2024-01-02 08:35:00+00:00", "2024-01-02 10:00:00+00:00", "2024-01-02 10:05:00+00:00",
    ]),
    "time_since_last_event": pd.to_timedelta(
        [None, "0 days 00:02:00", "0 days 23:28:00", "0 days 00:05:00", None, None]),
    "new_session": [True, False, True, False, True, True],
    "session_id": [1, 1, 2, 2, 1, 1],
})


def notebook(path: str) -> pd.DataFrame:
    """The notebook's cells, verbatim."""
    with open(path) as f:
        events = json.load(f)
    df = pd.json_normalize(events)
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df = df.sort_values("timestamp")
    df["resolved_user"] = df["userId"].fillna(df["anonymousId"])
    df["prev_timestamp"] = df.groupby("resolved_user")["timestamp"].shift(1)
    df["time_since_last_event"] = df["timestamp"] - df["prev_timestamp"]
    session_threshold = pd.Timedelta(minutes=30)
    df["new_session"] = (
        (df["time_since_last_event"].isna()) | (df["time_since_last_event"] > session_threshold)
    )
    df["session_id"] = df.groupby("resolved_user")["new_session"].cumsum()
    return df


def same_table(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal values; timestamp resolution (ns in pandas, us here) is not a difference."""
    got = got[NOTEBOOK_COLUMNS].reset_index(drop=True).copy()
    expected = expected[NOTEBOOK_COLUMNS].reset_index(drop=True).copy()
    for frame in (got, expected):
        frame["timestamp"] = frame["timestamp"].astype("datetime64[us, UTC]")
        frame["time_since_last_event"] = frame["time_since_last_event"].astype("timedelta64[us]")
        frame["session_id"] = frame["session_id"].astype("int64")
        frame["resolved_user"] = frame["resolved_user"].astype(object)
    pd.testing.assert_frame_equal(got, expected)


def test_notebook_code_prints_the_seed_table():
    same_table(notebook(sessionize.sample_path()), EXPECTED)


def test_api_reproduces_the_notebook():
    with sessionize.run(sessionize.sample_path()) as result:
        events = result.events.to_pandas()
    same_table(events, EXPECTED)
    same_table(events, notebook(sessionize.sample_path()))


@pytest.mark.parametrize("gap", ["30m", "1800s", "0.5h"])
def test_gap_spellings_agree(gap):
    with sessionize.run(sessionize.sample_path(), gap=gap) as result:
        same_table(result.events.to_pandas(), EXPECTED)


def test_cli_reproduces_the_notebook(tmp_path, capsys):
    assert main(["run", "--sample", "--out", str(tmp_path), "-q"]) == 0
    events = pq.read_table(tmp_path / "events.parquet").to_pandas()
    same_table(events, EXPECTED)


def test_sessions_and_users_of_the_notebook():
    with sessionize.run(sessionize.sample_path()) as result:
        sessions = result.sessions.to_pandas()
        users = result.users.to_pandas()
    assert sessions[["resolved_user", "session_id", "event_count", "start_reason",
                     "first_event", "last_event", "duration_seconds"]].values.tolist() == [
        ["anon_456", 1, 1, "first_event", "Feature Used", "Feature Used", 0.0],
        ["user_001", 1, 2, "first_event", "identify", "Signup Completed", 120.0],
        ["user_001", 2, 2, "inactivity", "Login", "Feature Used", 300.0],
        ["user_002", 1, 1, "first_event", "identify", "identify", 0.0],
    ]
    assert users[["resolved_user", "session_count", "event_count"]].values.tolist() == [
        ["anon_456", 1, 1], ["user_001", 2, 4], ["user_002", 1, 1]]
