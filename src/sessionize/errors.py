"""The exceptions sessionize raises.

Every error states the problem, the offending value and what is allowed, and
subclasses the matching builtin so ``except ValueError`` keeps working::

    SessionizeError
    ├── OptionError (ValueError)          a keyword option or CLI flag is wrong   -> exit 2
    │   └── StateError                    an incremental state made with other rules, or in use
    ├── DataError (ValueError)            the events themselves are wrong         -> exit 1
    │   ├── InputError                    a source cannot be read or lacks a column
    │   ├── MalformedJSONError            a line of JSON does not parse
    │   └── InvalidEventsError            rows with a bad timestamp or no user id
    └── OutputError (OSError)             the output files cannot be written      -> exit 1
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "InputError",
    "InvalidEventsError",
    "MalformedJSONError",
    "OptionError",
    "OutputError",
    "SessionizeError",
    "StateError",
]


class SessionizeError(Exception):
    """Base class of every error sessionize raises on purpose."""


class OptionError(SessionizeError, ValueError):
    """A keyword option (or CLI flag) has a value sessionize does not accept."""


class DataError(SessionizeError, ValueError):
    """The input data cannot be sessionized as it is."""


class InputError(DataError):
    """A source cannot be read, or lacks a column the rules need."""


class MalformedJSONError(DataError):
    """A JSON document or line does not parse; ``line`` is 1-based."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class InvalidEventsError(DataError):
    """Rows whose timestamp does not parse or that carry neither user id.

    ``problems`` lists one dict per offending row (at most a few are kept):
    ``{"row": ..., "file": ..., "line": ..., "message_id": ..., "field": ..., "value": ...,
    "reason": ...}`` (``row`` is 1-based, in input order; ``file`` and ``line`` say where
    a row of a file input came from, ``line`` is ``None`` for Parquet);
    ``count`` is how many rows are invalid in total.
    """

    def __init__(self, message: str, *, problems: list[dict], count: int):
        super().__init__(message)
        self.problems = problems
        self.count = count


class OutputError(SessionizeError, OSError):
    """The tables cannot be written where asked; the output directory is left as it was."""


class StateError(OptionError):
    """An incremental run's state cannot be used as asked: made with other rules, not a
    sessionize state, or in use by another run (exit 2)."""
