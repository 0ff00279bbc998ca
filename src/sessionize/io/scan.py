"""Read JSON object by object, in Python, when DuckDB refused an input.

DuckDB reads JSON fast but all or nothing: one line it cannot take (not JSON, not an
object, a duplicate key, a lone surrogate, nesting deeper than it follows, a key it cannot
name) stops the whole read. This module is the careful second pass: it walks the input
one object at a time, sets aside each object DuckDB would refuse (a
:class:`MalformedLine`, with its 1-based line number and the reason), and writes the
others, unchanged, to a clean NDJSON file DuckDB then reads. It also records the input
line of every object it keeps, so that later errors can name lines rather than rows.

An object is kept when it is a JSON object whose keys are unique (at every level, case
included), non-empty at the top level, and not a different spelling (by case) of a top-level
key an earlier object used (DuckDB's column names ignore case), whose text is valid UTF-8
without lone surrogates, whose numbers are finite, and which nests at most
:data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any

from ..errors import InputError, MalformedJSONError

__all__ = ["MAX_DEPTH", "MalformedLine", "ScannedFile", "malformed_csv_error", "malformed_error",
           "scan_csv", "scan_json"]

#: The deepest nesting the careful pass follows (objects and arrays, the object itself
#: level 1; Python's parser stops near 1,000); deeper objects are malformed there.
MAX_DEPTH = 500

_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK = b" \t\r\n\f\v"


@dataclasses.dataclass(frozen=True)
class MalformedLine:
    """A JSON object or line that could not be read (kept for the quarantine table)."""

    path: str
    line: int
    text: str
    error: str
    reason: str = "malformed_json"  # the quarantine reason: malformed_json or malformed_csv


@dataclasses.dataclass
class ScannedFile:
    """One input file after the careful pass: where its good objects now are (``clean``,
    an NDJSON file, or ``None`` when there are none), their input lines, and the rest."""

    path: str
    clean: str | None
    lines: list[int]
    malformed: list[MalformedLine]


class _Refused(ValueError):
    """An object DuckDB would refuse; the message says why."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused(f"duplicate key {key!r}")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _check(value: Any, spellings: dict[str, str]) -> None:
    """Raise :class:`_Refused` when DuckDB would refuse this parsed object."""
    if not isinstance(value, dict):
        raise _Refused("not a JSON object")
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(key, str) and _SURROGATE.search(key):
                raise _Refused("not valid UTF-8 text (an invalid byte or a lone surrogate)")
            if isinstance(child, str):
                if _SURROGATE.search(child):
                    raise _Refused("not valid UTF-8 text (an invalid byte or a lone surrogate)")
            elif isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    for key in value:
        if key == "":
            raise _Refused("an empty key, which cannot name a column")
        first = spellings.get(key.lower(), key)
        if first != key:
            raise _Refused(f"key {key!r} differs only in case from {first!r}, which an earlier "
                           "object used (column names ignore case)")


def _parse(text: str, spellings: dict[str, str]) -> Any:
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except RecursionError:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _Refused(exc.msg) from None
    _check(value, spellings)
    return value


def _register(value: dict, spellings: dict[str, str]) -> None:
    for key in value:
        spellings.setdefault(key.lower(), key)


def _read_bytes(path: str) -> Iterator[bytes]:
    """The file's lines as bytes (gzip decompressed); an unreadable file is an InputError."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            yield from fh
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(
            f"cannot read {path!r}: it is not a complete gzip file ({exc}).\n"
            "Hint: the file may have been cut short while it was copied; fetch it again."
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path!r}: {exc}") from None


def _snippet(text: str) -> str:
    return text.rstrip("\r\n")


def scan_json(path: str, fmt: str, workdir: str, spellings: dict[str, str], *,
              stop_at_first: bool = False, shown: str | None = None,
              lines_only: bool = False) -> ScannedFile:
    """The careful pass over one file (``fmt``: ``json`` or ``ndjson``).

    ``spellings`` (lower-case key -> the first spelling seen) is shared by every file of
    an input, so that a key is spelled one way in all of them. ``stop_at_first`` stops at
    the first malformed object (raise mode). ``shown`` is the name errors use.
    A JSON array whose syntax breaks cannot be split into objects: that is a
    :class:`MalformedJSONError` whatever the mode.

    ``lines_only``: only the line of each object, as DuckDB read them (nothing is checked
    or written): for naming the lines of rows in an input DuckDB read at once.
    """
    shown = shown or path
    if fmt == "json":
        data = b"".join(_read_bytes(path))
        text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff")
        body = text.lstrip(" \t\r\n")
        if body.startswith("["):
            return _scan_array(path, text, workdir, spellings, stop_at_first, shown, lines_only)
        if body.startswith("{"):
            try:  # one object, perhaps over several lines (a pretty-printed file)
                value = _parse(body, spellings)
            except _Refused:
                pass
            else:
                _register(value, spellings)
                line = text.count("\n", 0, len(text) - len(body)) + 1
                return _write_clean(path, workdir, [(line, body.replace("\n", " ")
                                                     .replace("\r", " ").encode())], [],
                                    lines_only)
        lines: Iterator[bytes] = iter(data.splitlines(keepends=True))
    else:
        lines = _read_bytes(path)
    good: list[tuple[int, bytes]] = []
    bad: list[MalformedLine] = []
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip(_BLANK)
        if number == 1:
            stripped = stripped.removeprefix(b"\xef\xbb\xbf")
        if not stripped:
            continue
        if lines_only:
            good.append((number, b""))
            continue
        try:
            try:
                line = stripped.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused("not valid UTF-8 text (an invalid byte or a lone surrogate)"
                               ) from None
            value = _parse(line, spellings)
        except _Refused as exc:
            bad.append(MalformedLine(shown, number, _snippet(raw.decode("utf-8", "replace")),
                                     str(exc)))
            if stop_at_first:
                break
            continue
        _register(value, spellings)
        good.append((number, stripped))
    return _write_clean(path, workdir, good, bad, lines_only)


def _scan_array(path: str, text: str, workdir: str, spellings: dict[str, str],
                stop_at_first: bool, shown: str, lines_only: bool = False) -> ScannedFile:
    decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)
    good: list[tuple[int, bytes]] = []
    bad: list[MalformedLine] = []
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def broken(pos: int, why: str) -> MalformedJSONError:
        at = line_at(pos)
        lines = text.splitlines()
        row = lines[at - 1] if 0 < at <= len(lines) else ""
        return malformed_error(MalformedLine(shown, at, row, why), array=True)

    ws = re.compile(r"[ \t\r\n]*")
    pos = ws.match(text, text.index("[") + 1).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            start = pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except RecursionError:
                raise broken(start, f"nested deeper than {MAX_DEPTH} levels") from None
            except json.JSONDecodeError as exc:
                raise broken(exc.pos, exc.msg) from None
            except _Refused as exc:  # a duplicate key or a constant: the element is whole
                value, reason = None, str(exc)
                pos = _skip_value(text, start)
            else:
                reason = None
                try:
                    _check(value, spellings)
                except _Refused as exc:
                    reason = str(exc)
            raw = text[start:pos]
            if lines_only:
                good.append((line_at(start), b""))
            elif reason is None:
                _register(value, spellings)
                good.append((line_at(start), raw.replace("\n", " ").replace("\r", " ")
                             .encode("utf-8")))
            else:
                bad.append(MalformedLine(shown, line_at(start),
                                         raw.encode("utf-8", "replace").decode("utf-8"), reason))
                if stop_at_first:
                    return _write_clean(path, workdir, good, bad, lines_only)
            pos = ws.match(text, pos).end()
            if text.startswith(",", pos):
                pos = ws.match(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise broken(pos, "expecting ',' or ']' between the array's values")
    if text[pos:].strip(" \t\r\n"):
        raise broken(pos, "extra data after the array")
    return _write_clean(path, workdir, good, bad, lines_only)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _skip_value(text: str, start: int) -> int:
    """The end of the JSON value at ``start`` that parsed but was refused (its brackets
    balance; strings are skipped whole)."""
    if text[start] not in "[{":  # NaN, Infinity, -Infinity
        return re.compile(r"[^,\]\s]*").match(text, start).end()
    depth = 0
    for match in _TOKEN.finditer(text, start):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
        if depth == 0:
            return match.end()
    return len(text)


def _write_clean(path: str, workdir: str, good: list[tuple[int, bytes]],
                 bad: list[MalformedLine], lines_only: bool = False) -> ScannedFile:
    if lines_only:
        return ScannedFile(path, None, [number for number, _ in good], bad)
    if not good:
        return ScannedFile(path, None, [], bad)
    fd, clean = tempfile.mkstemp(suffix=".ndjson", dir=workdir)
    with os.fdopen(fd, "wb") as dst:
        for _, raw in good:
            dst.write(raw + b"\n")
    return ScannedFile(path, clean, [number for number, _ in good], bad)


def malformed_error(bad: MalformedLine, *, array: bool = False) -> MalformedJSONError:
    """The error for a malformed object in raise mode (or a broken array in any mode)."""
    snippet = bad.text if len(bad.text) <= 80 else bad.text[:77] + "..."
    hint = ("a JSON array whose syntax breaks cannot be split into objects, so the whole "
            "file is refused; fix the file, or write it as NDJSON (one object a line)"
            if array else
            "every line of NDJSON (and every element of a JSON array) must be one JSON "
            "object; use on_invalid='quarantine' (--on-invalid quarantine) to set such "
            "lines aside and process the rest")
    return MalformedJSONError(
        f"malformed JSON in {bad.path!r} at line {bad.line}: {bad.error}: {snippet!r}\n"
        f"Hint: {hint}.",
        path=bad.path,
        line=bad.line,
    )


# --- CSV --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _any_field_size() -> Iterator[None]:
    """Python's csv module refuses fields over 128 KiB; a CSV field may be any size."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def scan_csv(path: str, delimiter: str, workdir: str, *, stop_at_first: bool = False,
             shown: str | None = None, lines_only: bool = False) -> ScannedFile:
    """The careful pass over one CSV file (RFC 4180: ``"`` quotes, ``""`` escapes one).

    The first record is the header. A record with another number of fields than the header,
    or with text that is not UTF-8, is a :class:`MalformedLine` (reason ``malformed_csv``);
    the others are written to a clean CSV (``clean``, with the header) that DuckDB reads.
    Blank lines are skipped. A quote that never closes cannot be split into records: that
    is an :class:`~sessionize.InputError` naming its line, whatever the mode.
    ``lines_only``: only the line where each record starts (nothing checked or written).
    """
    shown = shown or path
    data = b"".join(_read_bytes(path)).removeprefix(b"\xef\xbb\xbf")
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    good: list[tuple[int, list[str]]] = []
    bad: list[MalformedLine] = []
    header: list[str] | None = None
    with _any_field_size():
        last = 0
        while True:
            start = last + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputError(
                    f"cannot read {shown!r} as CSV from line {start}: {exc}.\n"
                    "Hint: a quote that never closes cannot be split into rows; fix the file "
                    "(RFC 4180: fields with quotes, delimiters or line breaks are quoted, and a "
                    'quote inside one is written twice: "")') from None
            last = reader.line_num
            if not record:  # a blank line
                continue
            if header is None:
                header = record
                continue
            if lines_only:
                good.append((start, []))
                continue
            reason = None
            if any(_SURROGATE.search(field) for field in record):
                reason = "not valid UTF-8 text"
            elif len(record) != len(header):
                reason = f"expected {len(header)} fields (as the header has), found {len(record)}"
            if reason is None:
                good.append((start, record))
                continue
            raw = delimiter.join(record).encode("utf-8", "replace").decode("utf-8")
            bad.append(MalformedLine(shown, start, raw, reason, "malformed_csv"))
            if stop_at_first:
                break
    if header is None or lines_only:
        return ScannedFile(path, None, [number for number, _ in good], bad)
    fd, clean = tempfile.mkstemp(suffix=".csv", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as dst:
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(record for _, record in good)
    return ScannedFile(path, clean, [number for number, _ in good], bad)


def malformed_csv_error(bad: MalformedLine) -> InputError:
    snippet = bad.text if len(bad.text) <= 80 else bad.text[:77] + "..."
    return InputError(
        f"malformed CSV in {bad.path!r} at line {bad.line}: {bad.error}: {snippet!r}\n"
        "Hint: every row of a CSV file needs as many fields as its header; use "
        "on_invalid='quarantine' (--on-invalid quarantine) to set such rows aside and "
        "process the rest.")
