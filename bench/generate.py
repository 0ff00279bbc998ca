"""Deterministic, Segment-shaped synthetic events for the benchmark suite.

Real exports are private, and a benchmark must be reproducible from (n, seed) alone.
The shape matters more than the values: Zipf-like user activity, bursty visits separated
by long gaps, about 20 % anonymous traffic and exact timestamp ties are what make the
per-user window over string ids expensive and tie ordering observable. Everything is
drawn with numpy and assembled with pyarrow in whole columns, so 10M events take seconds.

Files are cached by (generator version, n, seed, format): repeated benchmark runs reuse
them, and a change to the generator bumps ``GENERATOR_VERSION`` instead of silently
reusing stale data.

    python bench/generate.py --events 1000000 --seed 42 --format all --out bench/data
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
FORMATS = ("parquet", "ndjson", "json")
SUFFIX = {"parquet": ".parquet", "ndjson": ".ndjson", "json": ".json"}
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

EVENTS_PER_USER = 25  # mean; the median user has far fewer (Zipf tail)
ZIPF_EXPONENT, ZIPF_OFFSET = 1.05, 50  # Zipf-Mandelbrot: heavy head, not one giant bot
ANONYMOUS_SHARE = 0.20
ANONYMOUS_ONLY_SHARE = 0.15  # of events, from never-identified visitors; rest are pre-login
EVENTS_PER_VISIT = 6  # mean burst length
TIE_SHARE = 0.03  # in-visit gaps that are exactly zero
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
WINDOW_DAYS = 60
DAY_MS = 86_400_000

LIBRARIES = np.array(["analytics.js", "analytics-ios", "analytics-android"])
LIBRARY_P = [0.6, 0.2, 0.2]
TYPES = ["track", "page", "screen", "identify"]  # page on web, screen on mobile
TRACK_EVENTS = np.array(
    [
        "Product Viewed",
        "Product Clicked",
        "Product Added",
        "Cart Viewed",
        "Checkout Started",
        "Order Completed",
        "Signed In",
        "Signed Out",
        "Search Performed",
        "Feature Used",
        "Button Clicked",
        "Video Played",
    ]
)
TRACK_P = np.array([20, 10, 6, 5, 3, 2, 4, 2, 8, 20, 15, 5], dtype=float)


def generate_events(n: int, seed: int = 42) -> pa.Table:
    """Return ``n`` shuffled Segment-like events as an Arrow table (see module docstring)."""
    rng = np.random.default_rng(seed)
    n_users = max(1, n // EVENTS_PER_USER)

    weights = 1.0 / (np.arange(1, n_users + 1) + ZIPF_OFFSET) ** ZIPF_EXPONENT
    per_user = rng.multinomial(n, weights / weights.sum())
    user = np.repeat(np.arange(n_users), per_user)  # events grouped by user, in time order
    first_of_user = np.r_[True, user[1:] != user[:-1]] if n else np.zeros(0, bool)

    # Visits: a burst starts on a user's first event or with probability 1/EVENTS_PER_VISIT.
    visit_starts = first_of_user | (rng.random(n) < 1 / EVENTS_PER_VISIT)
    visit = np.cumsum(visit_starts) - 1
    visit_user = user[visit_starts]
    visits_per_user = np.bincount(visit_user, minlength=n_users)
    first_visit_of_user = first_of_user[visit_starts]

    # Gaps between visits: hours to days, denser for heavy users (who then sometimes merge).
    mean_gap_ms = np.clip(
        WINDOW_DAYS * DAY_MS / np.maximum(visits_per_user, 1), 3_600_000, 3 * DAY_MS
    )
    visit_gap = np.rint(rng.exponential(mean_gap_ms[visit_user])).astype(np.int64)
    visit_gap[first_visit_of_user] = 0
    user_start = rng.integers(0, WINDOW_DAYS * DAY_MS, n_users)
    visit_start = user_start[visit_user] + _cumsum_within(visit_gap, first_visit_of_user)

    # Gaps inside a visit: seconds to minutes (median 20 s), some exact ties.
    in_visit_gap = np.rint(np.exp(rng.normal(np.log(20_000), 1.2, n))).astype(np.int64)
    in_visit_gap[visit_starts | (rng.random(n) < TIE_SHARE)] = 0
    ts_ms = visit_start[visit] + _cumsum_within(in_visit_gap, visit_starts)

    anonymous_visit = _anonymous_visits(rng, visit_user, per_user, first_visit_of_user, n)
    anonymous = anonymous_visit[visit]

    library = rng.choice(len(LIBRARIES), size=n_users, p=LIBRARY_P)[user]
    kind = rng.random(n)
    is_identify = (kind < 0.05) & ~anonymous
    is_view = ~is_identify & (kind < 0.22)
    type_code = np.where(is_identify, 3, np.where(is_view, np.where(library == 0, 1, 2), 0))
    event_code = rng.choice(len(TRACK_EVENTS), size=n, p=TRACK_P / TRACK_P.sum())

    # Shuffle the integer codes, not the strings: Arrow builds each string column once.
    shuffle = rng.permutation(n)
    user, ts_ms, anonymous = user[shuffle], ts_ms[shuffle], anonymous[shuffle]
    library, type_code, event_code = library[shuffle], type_code[shuffle], event_code[shuffle]

    user_ids = pa.array([f"user_{i:07d}" for i in range(n_users)])
    anonymous_ids = _hex_ids(rng, n_users)
    library_name = pa.array(LIBRARIES).take(pa.array(library))
    return pa.table(
        {
            "messageId": _hex_ids(rng, n, unique_suffix=True),
            "type": pa.array(TYPES).take(pa.array(type_code)),
            "event": pa.array(TRACK_EVENTS).take(pa.array(event_code, mask=type_code != 0)),
            "userId": user_ids.take(pa.array(user, mask=anonymous)),
            "anonymousId": anonymous_ids.take(pa.array(user)),
            "timestamp": pa.array(START_US + ts_ms * 1000, pa.timestamp("us", tz="UTC")),
            "context": pa.StructArray.from_arrays(
                [pa.StructArray.from_arrays([library_name], ["name"])], ["library"]
            ),
        }
    )


def _cumsum_within(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` that restarts wherever ``starts`` is true."""
    total = np.cumsum(values)
    start = np.maximum.accumulate(np.where(starts, np.arange(len(values)), 0))
    return total - total[start] + values[start]


def _anonymous_visits(rng, visit_user, per_user, first_visit_of_user, n) -> np.ndarray:
    """Pick never-identified visitors from the tail, then pre-login visits, to reach ~20 %."""
    n_users = len(per_user)
    order = rng.permutation(n_users)
    order = order[order >= max(1, n_users // 100)]  # the top 1 % are all signed-in users
    reached = np.searchsorted(np.cumsum(per_user[order]), ANONYMOUS_ONLY_SHARE * n)
    anonymous_user = np.zeros(n_users, bool)
    anonymous_user[order[:reached]] = True
    share = per_user[anonymous_user].sum() / max(n, 1)
    rest = max(0.0, (ANONYMOUS_SHARE - share) / (1 - share)) if share < 1 else 0.0
    # Pre-login traffic is most often a user's first visit.
    p_visit = np.where(first_visit_of_user, min(1.0, 4 * rest), rest * 0.8)
    return anonymous_user[visit_user] | (rng.random(len(visit_user)) < p_visit)


def _hex_ids(rng: np.random.Generator, n: int, unique_suffix: bool = False) -> pa.Array:
    """UUID-shaped lowercase hex strings; with ``unique_suffix`` the last 8 digits are the row."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    if unique_suffix:
        raw[:, 12:] = np.arange(n, dtype=">u4").view(np.uint8).reshape(n, 4)
    digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    hex_chars = np.empty((n, 32), dtype="S1")
    hex_chars[:, 0::2], hex_chars[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    dash = np.full((n, 1), b"-", dtype="S1")
    parts = [
        hex_chars[:, :8],
        dash,
        hex_chars[:, 8:12],
        dash,
        hex_chars[:, 12:16],
        dash,
        hex_chars[:, 16:20],
        dash,
        hex_chars[:, 20:],
    ]
    joined = np.ascontiguousarray(np.hstack(parts)).view("S36").ravel()
    return pa.array(joined, pa.binary(36)).cast(pa.string())


def write_events(table: pa.Table, path: Path, fmt: str) -> None:
    """Write ``table`` as Parquet, NDJSON or a JSON array (atomically, via a temp file)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    else:
        _write_json(table, tmp, lines=fmt == "ndjson")
    tmp.replace(path)


def _write_json(table: pa.Table, path: Path, lines: bool) -> None:
    try:
        import orjson

        dumps = orjson.dumps
    except ImportError:  # pragma: no cover - orjson is optional
        import json

        def dumps(obj):
            return json.dumps(obj, separators=(",", ":")).encode()

    iso = pc.strftime(
        table["timestamp"].cast(pa.timestamp("ms", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ"
    )
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", iso)
    with open(path, "wb") as out:
        out.write(b"" if lines else b"[")
        for i, batch in enumerate(table.to_batches(max_chunksize=50_000)):
            rows = batch.to_pylist()
            if lines:
                out.write(b"".join(dumps(row) + b"\n" for row in rows))
            else:
                out.write((b"," if i else b"") + b",".join(dumps(row) for row in rows))
        out.write(b"" if lines else b"]")


def events_file(
    n: int, seed: int = 42, fmt: str = "parquet", data_dir: Path | str = DEFAULT_DATA_DIR
) -> Path:
    """Path of the cached file for (n, seed, fmt), generating it on first use."""
    return events_files(n, seed, [fmt], data_dir)[fmt]


def events_files(n: int, seed: int, formats, data_dir: Path | str = DEFAULT_DATA_DIR):
    """Like :func:`events_file` for several formats, generating the table at most once."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {f: data_dir / f"events-v{GENERATOR_VERSION}-n{n}-s{seed}{SUFFIX[f]}" for f in formats}
    table = None
    for fmt, path in paths.items():
        if not path.exists():
            table = generate_events(n, seed=seed) if table is None else table
            write_events(table, path, fmt)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="parquet")
    parser.add_argument("--out", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    formats = FORMATS if args.format == "all" else [args.format]
    for path in events_files(args.events, args.seed, formats, args.out).values():
        print(path)


if __name__ == "__main__":
    main()
