"""Fuzz the command line with mutated event files (issue 22's promise, checked every run).

A seeded mutator takes a valid event file in one of the input formats (NDJSON, gzipped
NDJSON, JSON array, CSV, TSV, Parquet) and breaks it: lines cut, bytes dropped or inserted
(invalid UTF-8, NUL, quotes, brackets), wrong types, odd timestamps and ids, odd keys
(``$``, empty, duplicate, differing in case), huge and deeply nested values, blank lines,
empty files, truncated gzip. Each file is run in both ``--on-invalid`` modes, and for every
run:

- no traceback, and exit code 0 or 1;
- on 1, a message saying what is wrong (``bad data:`` or ``cannot write:``);
- on 0, ``events + quarantine == input rows``, the input rows counted independently of
  sessionize (non-blank NDJSON lines, array elements, CSV records, Parquet rows).

The size is ``FUZZ_FILES`` (default 60 files, 120 runs, about 15 s; 300 under
``HYPOTHESIS_PROFILE=ci``); the seeds are fixed, so a failure names its seed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sessionize.cli.main import main

FUZZ_FILES = int(os.environ.get(
    "FUZZ_FILES", {"ci": 300, "dev": 30}.get(os.environ.get("HYPOTHESIS_PROFILE", ""), 60)))
FORMATS = ["ndjson", "ndjson.gz", "json", "csv", "tsv", "parquet"]

ODD_TIMESTAMPS = [
    "2024-01-01T10:00:00 UTC", "2024-01-01T10:00:00+25:00", "2024-1-1T1:2:3Z", "20240101",
    "1.7041032e9", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "", " ", "soon",
    "2024-02-30T00:00:00Z", "-1", "1e400", "NaN", "２０２４-01-01", "2024-01-01T24:00:00Z",
]
ODD_VALUES = [None, True, False, 0, -1, 1.5, 1e308, 2**70, "", "\t", "\u00a0", "\u3000", [],
              {}, [1, [2]], {"a": {"b": None}}, "\ud800", "x" * 70_000, "é\u0000",
              "2024-01-01T00:00:00Z"]
ODD_KEYS = ["$insert_id", "", "Timestamp", "USERID", "__sz_row", "a.b", "context",
            "session_id", "\u00e9", " timestamp"]
NOISE = [b"\xff", b"\x00", b"\r", b"\n", b"\n\n", b'"', b",", b"{", b"}", b"[", b"]",
         b"\t", b"\xef\xbb\xbf", b"\\", b"\xed\xa0\x80", b"null", b":"]


def events(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(rng.randint(1, 12)):
        row = {"type": rng.choice(["track", "page", "identify"]),
               "event": rng.choice(["Clicked", "Viewed", None]),
               "messageId": f"m{i}",
               "timestamp": f"2024-01-01T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"}
        if rng.random() < 0.8:
            row["userId"] = f"u{rng.randint(1, 3)}"
        if rng.random() < 0.5:
            row["anonymousId"] = f"a{rng.randint(1, 3)}"
        if rng.random() < 0.5:
            row["context"] = {"library": {"name": rng.choice(["analytics.js", "ios"])}}
        rows.append(row)
    return rows


def deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def mutate_rows(rows: list[dict], rng: random.Random) -> list:
    """Wrong types, odd values and keys, in the rows themselves."""
    rows = [dict(r) for r in rows]
    for _ in range(rng.randint(0, 3)):
        if not rows:
            break
        row = rows[rng.randrange(len(rows))]
        if not isinstance(row, dict):
            continue
        kind = rng.randrange(6)
        if kind == 0:
            row["timestamp"] = rng.choice(ODD_TIMESTAMPS + ODD_VALUES)
        elif kind == 1:
            row[rng.choice(["userId", "anonymousId", "messageId"])] = rng.choice(ODD_VALUES)
        elif kind == 2:
            row[rng.choice(ODD_KEYS)] = rng.choice(ODD_VALUES)
        elif kind == 3:
            row["properties"] = deep(rng.choice([5, 200, 600, 2000]))
        elif kind == 4:
            row.pop(rng.choice(["timestamp", "userId", "anonymousId"]), None)
        else:
            rows[rows.index(row)] = rng.choice([None, 5, "x", [], [dict(row)]])
    return rows


def dumps(value: object) -> str:
    try:
        return json.dumps(value)
    except (RecursionError, ValueError):
        return "[" * 3000 + "]" * 3000


def encode(rows: list, fmt: str, rng: random.Random) -> bytes:
    if fmt in ("ndjson", "ndjson.gz"):
        text = "".join(dumps(r) + "\n" for r in rows)
        if rng.random() < 0.3:  # a duplicate key, spliced in as text
            text = text.replace('"type":', '"type": 1, "type":', 1)
        return text.encode("utf-8", "surrogatepass")
    if fmt == "json":
        return ("[\n" + ",\n".join(dumps(r) for r in rows) + "\n]").encode(
            "utf-8", "surrogatepass")
    delimiter = "\t" if fmt == "tsv" else ","
    columns = ["userId", "anonymousId", "timestamp", "event", "messageId"]
    if rng.random() < 0.3:
        columns.append(rng.choice(ODD_KEYS) or "x")
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(columns)
    for row in rows:
        row = row if isinstance(row, dict) else {}
        writer.writerow([
            json.dumps(v) if isinstance(v := row.get(c), (dict, list)) else
            ("" if v is None else str(v)) for c in columns])
    return out.getvalue().encode("utf-8", "surrogatepass")


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(0, 3)):
        kind = rng.randrange(6)
        at = rng.randint(0, len(data))
        if kind == 0:
            data = data[:at]  # cut short
        elif kind == 1:
            data = data[:at] + data[at + rng.randint(1, 20):]
        elif kind == 2:
            data = data[:at] + rng.choice(NOISE) + data[at:]
        elif kind == 3:
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i] if rng.random() < 0.5 else b"   ")
            data = b"\n".join(lines)
        elif kind == 4:
            lines = data.split(b"\n")
            rng.shuffle(lines)
            data = b"\n".join(lines)
        else:
            data = b""
    return data


def text(value: object) -> str | None:
    """A value Parquet can hold as a string (valid Unicode text), else None."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def parquet_bytes(rows: list, rng: random.Random) -> bytes:
    rows = [r if isinstance(r, dict) else {} for r in rows]
    columns = {
        "userId": pa.array([text(r.get("userId")) for r in rows], pa.string()),
        "timestamp": pa.array([text(r.get("timestamp")) for r in rows], pa.string()),
    }
    kind = rng.randrange(7)
    if kind == 1:
        columns["timestamp"] = pa.array([[1704067200]] * len(rows))
    elif kind == 2:
        columns["timestamp"] = pa.array([rng.choice([0, -1, 2**62, 1704067200])] * len(rows),
                                        pa.int64())
    elif kind == 3:
        columns["userId"] = pa.array([True] * len(rows))
    elif kind == 4:
        columns["timestamp"] = pa.array([{"s": 1}] * len(rows))
    elif kind == 5:
        columns["__sz_row"] = pa.array(range(len(rows)), pa.int64())
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    data = buffer.getvalue()
    return data if rng.random() < 0.8 else data[: rng.randint(0, len(data))]


def make_file(seed: int, folder: Path) -> tuple[Path, int | None]:
    """A mutated file and its input rows (None: the file cannot be split into rows, so only
    exit 1 is right)."""
    rng = random.Random(seed)
    fmt = FORMATS[seed % len(FORMATS)]
    rows = mutate_rows(events(rng), rng)
    path = folder / f"fuzz{seed}.{fmt}"
    if fmt == "parquet":
        data = parquet_bytes(rows, rng)
    else:
        data = mutate_bytes(encode(rows, fmt, rng), rng)
    if fmt == "ndjson.gz":
        data = gzip.compress(data, mtime=0)
        if rng.random() < 0.2:
            data = data[: rng.randint(0, len(data))]
    path.write_bytes(data)
    return path, input_rows(data, fmt)


def input_rows(data: bytes, fmt: str) -> int | None:
    """How many rows the file holds, counted without sessionize."""
    if not data:
        return 0
    if fmt == "parquet":
        try:
            return pq.read_metadata(io.BytesIO(data)).num_rows
        except Exception:
            return None
    if fmt == "ndjson.gz":
        try:
            data = gzip.decompress(data)
        except Exception:
            return None
    if fmt in ("ndjson", "ndjson.gz"):
        return sum(1 for line in data.split(b"\n") if line.strip(b" \t\r\n\f\v"))
    text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff")
    if fmt == "json":
        body = text.strip(" \t\r\n")
        if not body:
            return 0
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            value = None
        if body.startswith("["):
            return len(value) if isinstance(value, list) else None
        if isinstance(value, dict):
            return 1
        return sum(1 for line in data.split(b"\n") if line.strip(b" \t\r\n\f\v"))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",",
                        strict=True)
    old = csv.field_size_limit(2**31 - 1)
    try:
        records = [r for r in reader if r]
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(old)
    return max(len(records) - 1, 0)


def placed_rows(out: Path) -> int:
    return sum(pq.read_metadata(out / f"{name}.parquet").num_rows
               for name in ("events", "quarantine") if (out / f"{name}.parquet").exists())


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, err.getvalue()


@pytest.mark.parametrize("seed", range(FUZZ_FILES))
def test_mutated_file_exits_cleanly_and_places_every_row(seed, tmp_path):
    path, rows = make_file(seed, tmp_path)
    for mode in ("quarantine", "raise"):
        out = tmp_path / f"out-{mode}"
        status, err = cli("run", str(path), "--out", str(out), "--on-invalid", mode, "-q")
        where = f"seed {seed} ({path.name}), --on-invalid {mode}: exit {status}\n{err}"
        assert "Traceback" not in err and status in (0, 1), where
        if status == 1:
            assert "bad data: " in err or "cannot write: " in err, where
            assert "internal error" not in err, where
            continue
        assert rows is not None, f"{where}\na file that cannot be split into rows was accepted"
        assert placed_rows(out) == rows, where
        if mode == "raise":
            assert not (out / "quarantine.parquet").exists(), where
    if seed % 6 == 0:  # the other commands read the same way
        status, err = cli("thresholds", str(path), "--json")
        assert "Traceback" not in err and status in (0, 1), f"thresholds, seed {seed}\n{err}"
