"""Parse the session gap and other durations.

Accepts polars-style duration strings (``90s``, ``30m``, ``1h30m``, ``1d``,
``500ms``, ``1w``), :class:`datetime.timedelta`, or a number of seconds, and
returns whole microseconds, the unit every engine compares in.
"""

from __future__ import annotations

import datetime as dt
import re

from .errors import OptionError

__all__ = ["format_duration", "parse_duration"]

_UNITS_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 7 * 86_400_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)")
_ALLOWED = "a duration string such as '90s', '30m', '1h30m', '1d' (units us, ms, s, m, h, d, w), " \
    "a datetime.timedelta, or a number of seconds"


def parse_duration(value: object, *, name: str = "gap", allow_zero: bool = False) -> int:
    """Return ``value`` as a whole number of microseconds.

    >>> parse_duration("30m")
    1800000000
    >>> parse_duration("1h30m") == parse_duration(dt.timedelta(minutes=90))
    True
    >>> parse_duration(1.5)
    1500000
    """
    if isinstance(value, bool):
        raise OptionError(f"{name!r} must be {_ALLOWED} (got {value!r})")
    if isinstance(value, dt.timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, (int, float)):
        us = round(value * 1_000_000)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, us, parts = 0, 0.0, 0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            us += float(match.group(1)) * _UNITS_US[match.group(2)]
            pos, parts = match.end(), parts + 1
        if not text or pos != len(text) or parts == 0:
            raise OptionError(f"{name!r} must be {_ALLOWED} (got {value!r})")
        us = round(us)
    else:
        raise OptionError(f"{name!r} must be {_ALLOWED} (got {type(value).__name__} {value!r})")
    if us < 0 or (us == 0 and not allow_zero):
        raise OptionError(f"{name!r} must be a positive duration (got {value!r})")
    return int(us)


def format_duration(us: int) -> str:
    """Render microseconds in the same compact notation ``parse_duration`` reads.

    >>> format_duration(5_400_000_000)
    '1h30m'
    >>> format_duration(1_500_000)
    '1s500ms'
    """
    if us == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s", "ms", "us"):
        size = _UNITS_US[unit]
        if us >= size:
            out.append(f"{us // size}{unit}")
            us %= size
    return "".join(out)


def short(seconds: float) -> str:
    """A compact human duration, for charts and summaries: 45s, 12m, 1.5h, 2.1d.

    >>> short(45), short(720), short(5400)
    ('45s', '12m', '1.5h')
    """
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m" if seconds >= 600 else f"{seconds / 60:.1f}m".replace(
            ".0m", "m")
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}h".replace(".0h", "h")
    return f"{seconds / 86400:.1f}d".replace(".0d", "d")
