"""The rule set: what makes a session, and where its inputs live.

A :class:`Rules` value is everything the SQL compiler needs besides the input's
schema. It is built once from the keyword options of :func:`sessionize.run` (or
the CLI flags) and compiled to SQL for whichever engine runs it, so every engine
applies exactly the same rules.
"""

from __future__ import annotations

import dataclasses

from .durations import parse_duration
from .errors import OptionError

__all__ = ["Columns", "Rules", "OUTPUT_EVENT_COLUMNS"]

#: Columns sessionize adds to every event, in this order, after the input columns.
OUTPUT_EVENT_COLUMNS = (
    "resolved_user",
    "prev_timestamp",
    "time_since_last_event",
    "new_session",
    "session_id",
    "session_key",
    "start_reason",
)

TIMESTAMP_UNITS = ("auto", "s", "ms", "us")
ON_INVALID = ("raise", "quarantine")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where the rules find each field; defaults follow the Segment spec.

    A name may be a top-level column (``"userId"``, or ``"context.library.name"``
    as pandas' ``json_normalize`` flattens it) or a dotted path into a nested
    struct (``"context.traits.userId"``).
    """

    user_id: str = "userId"
    anonymous_id: str = "anonymousId"
    timestamp: str = "timestamp"
    message_id: str = "messageId"
    event: str = "event"
    type: str = "type"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str) or not value.strip():
                raise OptionError(
                    f"{field.name!r} must be a non-empty column name (got {value!r})"
                )


@dataclasses.dataclass(frozen=True)
class Rules:
    """The session rules. ``gap_us`` is the inactivity threshold in microseconds:
    a gap strictly greater than it starts a new session, an equal gap does not."""

    gap_us: int = 30 * 60 * 1_000_000
    columns: Columns = dataclasses.field(default_factory=Columns)
    timestamp_unit: str = "auto"

    def __post_init__(self) -> None:
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise OptionError(
                f"'timestamp_unit' must be one of {', '.join(TIMESTAMP_UNITS)} "
                f"(got {self.timestamp_unit!r})"
            )

    @classmethod
    def from_options(cls, *, gap: object = "30m", timestamp_unit: str = "auto",
                     **columns: str) -> Rules:
        return cls(
            gap_us=parse_duration(gap, name="gap"),
            columns=Columns(**columns),
            timestamp_unit=timestamp_unit,
        )
