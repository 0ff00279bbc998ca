"""The rule set: what makes a session, and where its inputs live.

A :class:`Rules` value is everything the SQL compiler needs besides the input's
schema. It is built once from the keyword options of :func:`sessionize.run` (or
the CLI flags) and compiled to SQL for whichever engine runs it, so every engine
applies exactly the same rules.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence

from .durations import parse_duration
from .errors import OptionError

__all__ = ["Columns", "OUTPUT_EVENT_COLUMNS", "PROFILES", "Rules", "START_REASONS"]

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
    received_at: str = "receivedAt"
    sent_at: str = "sentAt"
    original_timestamp: str = "originalTimestamp"
    previous_id: str = "previousId"  # an alias call's previous id (identity="graph")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str) or not value.strip():
                raise OptionError(
                    f"{field.name!r} must be a non-empty column name (got {value!r})"
                )


#: Built-in profiles: defaults for a kind of product, each taken from a tool users know.
#: Options given explicitly override a profile's.
PROFILES: dict[str, dict[str, object]] = {
    # Google Analytics (and dbt's Segment package): 30 minutes of inactivity.
    "web": {"gap": "30m"},
    # Amplitude's mobile SDKs: a new session after 5 minutes in the background; apps
    # mark sessions with lifecycle events (Segment's Application Opened / Backgrounded).
    "mobile": {"gap": "5m", "start_events": ("Application Opened",),
               "end_events": ("Application Backgrounded",)},
    # SaaS products see web and mobile clients in one stream: 30 minutes on the web,
    # 5 on mobile (by the SDK that sent the event), a split at UTC midnight, and at most
    # 24 hours per session (PostHog's and Mixpanel's cap).
    "saas": {"gap": "30m", "gap_by": "platform",
             "gaps": {"web": "30m", "mobile": "5m", "server": "30m"}, "midnight": "UTC",
             "max_duration": "24h"},
}

#: The Segment fields that make up the campaign (UTM parameters).
CAMPAIGN_FIELDS = ("context.campaign.source", "context.campaign.medium", "context.campaign.name",
                   "context.campaign.term", "context.campaign.content")

#: How an event gets its user (docs/identity.md).
IDENTITY_POLICIES = ("event", "stitch", "first", "graph")

#: Why a session starts, in order of precedence when several rules fire at one event.
START_REASONS = ("first_event", "inactivity", "midnight", "campaign_change", "start_event",
                 "client_session", "user_change", "max_duration")


@dataclasses.dataclass(frozen=True)
class Rules:
    """The session rules. ``gap_us`` is the inactivity threshold in microseconds:
    a gap strictly greater than it starts a new session, an equal gap does not.

    ``gaps_us`` maps values of the ``gap_by`` field (a column, or ``"platform"``:
    web / mobile / server from the Segment library) to thresholds; the threshold
    in force after an event is the one its own value selects (the timer an SDK
    starts after each event), ``gap_us`` when its value is not listed.
    """

    gap_us: int = 30 * 60 * 1_000_000
    columns: Columns = dataclasses.field(default_factory=Columns)
    timestamp_unit: str = "auto"
    gap_by: str | None = None
    gaps_us: tuple[tuple[str, int], ...] = ()
    midnight: str | None = None          # an IANA zone, or "event" (each event's own zone)
    timezone_column: str = "context.timezone"
    campaign: tuple[str, ...] = ()       # fields whose change starts a session
    start_events: tuple[str, ...] = ()
    end_events: tuple[str, ...] = ()
    client_session: str | None = None    # the SDK's session id field
    client_session_mode: str = "split"   # "split" where it changes, or only "compare"
    identity: str = "event"              # event | stitch | first | graph (docs/identity.md)
    identity_cap: int = 1                # graph: most people one component may merge
    user_change: bool = False            # split where a device changes resolved user
    passive_events: tuple[str, ...] = ()  # events that join a session but do not extend it
    max_duration_us: int | None = None   # longer sessions are cut into windows this long
    enrich: bool = False                 # landing/exit page, referrer, UTM, device, bounces
    bounce_us: int = 10_000_000          # a bounce: at most one view and shorter than this
    first_last: tuple[str, ...] = ()     # columns whose first/last value each session gets
    dedupe: bool = False                 # drop repeated messageIds (earliest receivedAt kept)
    clock_skew: str | None = None        # "segment": receivedAt - (sentAt - originalTimestamp)

    def __post_init__(self) -> None:
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise OptionError(
                f"'timestamp_unit' must be one of {', '.join(TIMESTAMP_UNITS)} "
                f"(got {self.timestamp_unit!r})"
            )
        if self.gaps_us and self.gap_by is None:
            raise OptionError("'gaps' needs 'gap_by': the column (or 'platform') whose value "
                              "selects the gap (got gap_by=None)")
        if self.midnight not in (None, "event"):
            _check_zone(self.midnight)
        if self.identity not in IDENTITY_POLICIES:
            raise OptionError(f"'identity' must be one of {', '.join(IDENTITY_POLICIES)} "
                              f"(got {self.identity!r})")
        _check_identity_cap(self.identity_cap)
        if self.client_session_mode not in ("split", "compare"):
            raise OptionError("'client_session_mode' must be one of split, compare "
                              f"(got {self.client_session_mode!r})")
        if self.clock_skew not in (None, "segment"):
            raise OptionError(f"'clock_skew' must be None or 'segment' (got {self.clock_skew!r})")

    @property
    def plain(self) -> bool:
        """True when only the notebook's inactivity rule applies."""
        return not (self.gaps_us or self.midnight or self.campaign or self.start_events
                    or self.end_events or self.passive_events
                    or (self.client_session and self.client_session_mode == "split")
                    or self.max_duration_us or self.user_change)

    @classmethod
    def from_options(cls, *, gap: object = None, timestamp_unit: str = "auto",
                     profile: str | None = None, gap_by: str | None = None,
                     gaps: Mapping[str, object] | None = None, midnight: str | None = None,
                     timezone_column: str = "context.timezone",
                     campaign: bool | str | Sequence[str] = False,
                     start_events: Sequence[str] = (), end_events: Sequence[str] = (),
                     client_session: str | None = None, client_session_mode: str = "split",
                     identity: str = "event", identity_cap: int | None = None,
                     user_change: bool = False,
                     passive_events: Sequence[str] = (), max_duration: object = None,
                     enrich: bool = False, bounce: object = "10s",
                     first_last: Sequence[str] = (),
                     dedupe: bool = False,
                     time_column: str | None = None, clock_skew: str | None = None,
                     **columns: str) -> Rules:
        base: dict[str, object] = {}
        if profile is not None:
            if profile not in PROFILES:
                raise OptionError(f"'profile' must be one of {', '.join(PROFILES)} "
                                  f"(got {profile!r})")
            base = dict(PROFILES[profile])
        given = {"gap": gap, "gap_by": gap_by, "gaps": gaps, "midnight": midnight,
                 "max_duration": max_duration,
                 "start_events": start_events or None, "end_events": end_events or None}
        base.update({k: v for k, v in given.items() if v is not None})
        gaps_us = tuple(sorted(
            (str(key), parse_duration(value, name=f"gaps[{key!r}]"))
            for key, value in dict(base.get("gaps") or {}).items()))
        if campaign is True:
            campaign_fields: tuple[str, ...] = CAMPAIGN_FIELDS
        elif campaign is False or campaign is None:
            campaign_fields = ()
        else:
            campaign_fields = (campaign,) if isinstance(campaign, str) else tuple(campaign)
        if time_column is not None:
            # time_column= is the name for timestamp=: which of Segment's times to use
            if columns.get("timestamp", "timestamp") not in ("timestamp", time_column):
                raise OptionError(f"give 'time_column' or 'timestamp', not both (got "
                                  f"{time_column!r} and {columns['timestamp']!r})")
            columns["timestamp"] = time_column
        return cls(
            gap_us=parse_duration(base.get("gap", "30m"), name="gap"),
            columns=Columns(**columns),
            timestamp_unit=timestamp_unit,
            gap_by=base.get("gap_by"),  # type: ignore[arg-type]
            gaps_us=gaps_us,
            midnight=base.get("midnight"),  # type: ignore[arg-type]
            timezone_column=timezone_column,
            campaign=campaign_fields,
            start_events=_names(base.get("start_events", ()), "start_events"),
            end_events=_names(base.get("end_events", ()), "end_events"),
            client_session=client_session,
            client_session_mode=client_session_mode,
            identity=identity,
            identity_cap=_identity_cap(identity_cap, identity),
            user_change=_flag(user_change, "user_change"),
            passive_events=_names(passive_events, "passive_events"),
            max_duration_us=(None if base.get("max_duration") is None
                             else parse_duration(base["max_duration"], name="max_duration")),
            enrich=bool(enrich),
            bounce_us=parse_duration(bounce, name="bounce"),
            first_last=_names(first_last, "first_last"),
            dedupe=bool(dedupe),
            clock_skew=clock_skew,
        )


def _check_identity_cap(cap: object) -> None:
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral) or cap < 1:
        raise OptionError("'identity_cap' must be a whole number of at least 1: the most "
                          f"people (userIds) one identity may merge (got {cap!r})")


def _identity_cap(cap: object, identity: str) -> int:
    """The cap given (checked), else 1; it applies to identity='graph' only."""
    if cap is None:
        return 1
    _check_identity_cap(cap)
    if identity != "graph":
        raise OptionError(f"'identity_cap' applies to identity='graph' only (got "
                          f"identity_cap={cap!r} with identity={identity!r})\n"
                          "Hint: sessionize.run(source, identity='graph', identity_cap=2)")
    return int(cap)  # type: ignore[call-overload]


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{name!r} must be True or False (got {value!r})")
    return value


def _names(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)  # type: ignore[call-overload]
    except TypeError:
        raise OptionError(f"{name!r} must be a list of event names (got {value!r})") from None
    if not all(isinstance(item, str) and item for item in items):
        raise OptionError(f"{name!r} must be a list of event names (got {value!r})")
    return items


def _check_zone(zone: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise OptionError(
            f"'midnight' must be an IANA time zone such as 'Europe/Berlin' or 'UTC', or "
            f"'event' for each event's own zone (got {zone!r})") from None
