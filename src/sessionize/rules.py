"""The rule set: what makes a session, and where its inputs live.

Every option is **declared once** here, in :data:`RULE_OPTIONS` and
:data:`COLUMN_OPTIONS`. From that one declaration come the fields of the public
:class:`Rules` and :class:`Columns` values, the keyword shorthands of
:func:`sessionize.run` (``run(path, gap="1h")`` is ``run(path, rules=Rules(gap="1h"))``),
the command line's flags, the keys of a ``--config`` rules file and the option table in
docs/rules.md. A new rule option is declared here, then given its SQL (sql/compiler.py),
its reference (tests/reference.py) and its tests.

>>> rules = Rules(profile="mobile", gap="10m")
>>> rules.gap, rules.start_events
(datetime.timedelta(seconds=600), ('Application Opened',))
>>> Rules(gap="30m") == Rules()
True

A :class:`Rules` value is immutable and normalised when built (durations become
``timedelta``, lists become tuples, a profile fills what was left unset), so two rule
sets that mean the same compare equal, and every engine compiles the same value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import numbers
import zoneinfo
from collections.abc import Mapping
from typing import Any

from .durations import format_duration, parse_duration
from .errors import OptionError

__all__ = ["COLUMN_OPTIONS", "Columns", "OUTPUT_EVENT_COLUMNS", "Option", "PROFILES",
           "RULE_OPTIONS", "Rules", "START_REASONS", "options_table"]

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

#: The platform of an SDK's library name (``context.library.name``), for
#: ``gap_by="platform"``, the ``platform`` column of ``enrich`` and the threshold
#: analysis: first the known Segment and RudderStack names (lower-cased, trimmed), then
#: these patterns in order (a regular-expression search, for new SDK spellings); any
#: other name is ``server`` for the rules (the analysis shows it under its own name).
#: Missing or blank names have no platform (the rules use ``gap``).
PLATFORM_LIBRARIES = {
    "web": ("analytics.js", "analytics-next", "@segment/analytics-next", "analytics-js",
            "rudderlabs-js-sdk", "rudder-sdk-js", "rudderstack-js", "web", "browser"),
    "mobile": ("analytics-ios", "analytics-android", "analytics-swift", "analytics-kotlin",
               "analytics-kotlin-android", "analytics-react-native",
               "@segment/analytics-react-native", "analytics-flutter", "react-native",
               "flutter", "rudder-ios-library", "com.rudderstack.android.sdk.core",
               "mobile", "ios", "android"),
    "server": ("analytics-node", "@segment/analytics-node", "analytics-python",
               "analytics-go", "analytics-ruby", "analytics-java", "analytics-php",
               "analytics.net", "analytics-csharp", "analytics-rust", "analytics-clojure",
               "rudder-sdk-node", "rudder-sdk-python", "rudder-sdk-go", "rudder-sdk-java",
               "server", "backend"),
}
#: No backslashes (``[.]`` for a dot), so that every SQL dialect reads them alike.
PLATFORM_PATTERNS = (
    ("mobile", "ios|android|swift|kotlin|react-native|flutter|xamarin|unity|mobile"),
    ("web", "analytics[.]js|analytics-next|browser|javascript|web|-js$"),
    ("server", "node|python|analytics-go|ruby|java|php|[.]net|csharp|rust|server"),
)

#: The Segment fields that make up the campaign (UTM parameters).
CAMPAIGN_FIELDS = ("context.campaign.source", "context.campaign.medium", "context.campaign.name",
                   "context.campaign.term", "context.campaign.content")

#: How an event gets its user (docs/identity.md).
IDENTITY_POLICIES = ("event", "stitch", "first", "graph")

#: Why a session starts, in order of precedence when several rules fire at one event.
START_REASONS = ("first_event", "inactivity", "midnight", "campaign_change", "start_event",
                 "client_session", "user_change", "max_duration")


# -- the declaration ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
    """One option, declared once: its keyword, flag, rules-file key and doc line.

    ``kind`` says how the command line reads it: ``text``, ``duration``, ``flag``
    (a switch), ``flag_or_names`` (a switch, or the names that follow it), ``choice``
    (one of ``choices``), ``names`` (a repeatable flag, singular ``flag`` name),
    ``count`` (a whole number) or ``pairs`` (``VALUE=DURATION`` ...).
    """

    name: str
    help: str
    default: object = None
    kind: str = "text"
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


#: The session rules (fields of :class:`Rules`).
RULE_OPTIONS: tuple[Option, ...] = (
    Option("gap", "inactivity that ends a session: a longer gap starts a new one (an equal "
           "gap does not)", "30m", "duration"),
    Option("profile", "defaults for a kind of product; options given override it", None,
           "choice", tuple(PROFILES)),
    Option("gap_by", "choose the gap per event by this column, or 'platform' (web / mobile / "
           "server from context.library.name)", None, metavar="COL"),
    Option("gaps", "the gap per value of gap_by, e.g. web=30m mobile=5m", None, "pairs",
           metavar="VALUE=DURATION"),
    Option("midnight", "split at local midnight in an IANA zone, or 'event' for each event's "
           "own zone", None, metavar="ZONE"),
    Option("timezone_column", "the events' own zone, read by midnight='event'",
           "context.timezone", metavar="COL"),
    Option("campaign", "split when the UTM campaign changes (or when any of the columns "
           "given changes)", False, "flag_or_names", metavar="COL"),
    Option("start_events", "events that start a session", (), "names", metavar="NAME",
           flag="--start-event"),
    Option("end_events", "events after which the next event starts a session", (), "names",
           metavar="NAME", flag="--end-event"),
    Option("passive_events", "events that join the open session but do not keep it alive",
           (), "names", metavar="NAME", flag="--passive-event"),
    Option("client_session", "the SDK's session id column; a change starts a session", None,
           metavar="COL"),
    Option("client_session_mode", "split where the client session id changes, or only "
           "compare (sessionize.analysis.agreement)", "split", "choice", ("split", "compare")),
    Option("max_duration", "cut longer sessions into windows this long, e.g. 24h", None,
           "duration"),
    Option("identity", "how events get a user (docs/identity.md)", "event", "choice",
           IDENTITY_POLICIES),
    Option("identity_cap", "identity='graph': the most people (userIds) one device or "
           "component may merge", 1, "count", metavar="N"),
    Option("user_change", "start a session where a device's resolved user changes", False,
           "flag"),
    Option("enrich", "add landing/exit page, referrer, UTM, device, platform and bounces to "
           "sessions", False, "flag"),
    Option("bounce", "with enrich: a bounce has at most one view and lasts less than this",
           "10s", "duration"),
    Option("first_last", "columns whose first and last value each session gets "
           "(first_<col>, last_<col>)", (), "names", metavar="COL", flag="--first-last"),
    Option("dedupe", "set repeated messageIds aside (the earliest receivedAt is kept)", False,
           "flag"),
    Option("clock_skew", "'segment': receivedAt - (sentAt - originalTimestamp)", None, "choice",
           ("segment",)),
)

#: Where the rules find each field (fields of :class:`Columns`); defaults follow Segment.
COLUMN_OPTIONS: tuple[Option, ...] = (
    Option("user_id", "the user id column", "userId", metavar="COL"),
    Option("anonymous_id", "the anonymous (device) id column", "anonymousId", metavar="COL"),
    Option("timestamp", "the event time column", "timestamp", metavar="COL"),
    Option("time_column", "which of Segment's times to use: timestamp, originalTimestamp or "
           "receivedAt (another name for timestamp)", None, metavar="COL"),
    Option("timestamp_unit", "the unit of numeric timestamps (auto: by magnitude)", "auto",
           "choice", TIMESTAMP_UNITS),
    Option("message_id", "the message id column (orders ties, dedupe)", "messageId",
           metavar="COL"),
    Option("event", "the event name column", "event", metavar="COL"),
    Option("type", "the call type column (identify, track, page, screen, ...)", "type",
           metavar="COL"),
    Option("previous_id", "an alias call's previous id (identity='graph')", "previousId",
           metavar="COL"),
    Option("received_at", "when Segment received the event (dedupe, clock_skew)",
           "receivedAt", metavar="COL"),
    Option("sent_at", "when the client sent the event (clock_skew)", "sentAt", metavar="COL"),
    Option("original_timestamp", "the client's own event time (clock_skew)",
           "originalTimestamp", metavar="COL"),
)

RULE_KEYS = tuple(o.name for o in RULE_OPTIONS)
COLUMN_KEYS = tuple(o.name for o in COLUMN_OPTIONS)


def options_table() -> str:
    """The option table of docs/rules.md, made from the declaration (a test keeps them equal)."""
    lines = ["| option (Python, rules file) | flag | default | what it does |",
             "|---|---|---|---|"]
    for option in RULE_OPTIONS + COLUMN_OPTIONS:
        default = option.default
        shown = ("" if default in (None, (), False) else
                 f"`{default!r}`" if not isinstance(default, str) else f"`{default}`")
        lines.append(f"| `{option.name}` | `{option.cli_flag}` | {shown} | {option.help} |")
    return "\n".join(lines)


# -- the values -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Columns:
    """Where the rules find each field; defaults follow the Segment spec.

    A name may be a top-level column (``"userId"``, or ``"context.library.name"``
    as pandas' ``json_normalize`` flattens it) or a dotted path into a nested
    struct (``"context.traits.userId"``). ``timestamp_unit`` says how numeric
    timestamps are read (``auto``, ``s``, ``ms``, ``us``).

    >>> Columns(user_id="uid").user_id
    'uid'
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
    timestamp_unit: str = "auto"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "timestamp_unit":
                if value not in TIMESTAMP_UNITS:
                    raise OptionError(f"'timestamp_unit' must be one of "
                                      f"{', '.join(TIMESTAMP_UNITS)} (got {value!r})")
            elif not isinstance(value, str) or not value.strip():
                raise OptionError(
                    f"{field.name!r} must be a non-empty column name (got {value!r})"
                )

    @classmethod
    def from_options(cls, *, time_column: str | None = None, **names: Any) -> Columns:
        """``Columns`` from the keyword shorthands, with ``time_column`` as another name
        for ``timestamp``."""
        if time_column is not None:
            if names.get("timestamp", "timestamp") not in ("timestamp", time_column):
                raise OptionError(f"give 'time_column' or 'timestamp', not both (got "
                                  f"{time_column!r} and {names['timestamp']!r})")
            names["timestamp"] = time_column
        return cls(**{k: v for k, v in names.items() if v is not None})




@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Rules:
    """The session rules (docs/rules.md), immutable and normalised when built.

    Every field is a rule option of :func:`sessionize.run` (the table in docs/rules.md);
    ``columns`` says where the input's fields are. A ``profile`` fills the options left
    unset. Durations accept ``"30m"``, ``"1h30m"``, a ``timedelta`` or seconds and are
    kept as ``timedelta``.

    >>> Rules(profile="saas").max_duration
    datetime.timedelta(days=1)
    >>> Rules(gap_by="platform", gaps={"mobile": "5m"}).gaps
    (('mobile', datetime.timedelta(seconds=300)),)
    """

    gap: dt.timedelta = None  # type: ignore[assignment]  # None: the profile's, else 30m
    profile: str | None = None
    gap_by: str | None = None
    gaps: tuple[tuple[str, dt.timedelta], ...] = ()
    midnight: str | None = None          # an IANA zone, or "event" (each event's own zone)
    timezone_column: str = "context.timezone"
    campaign: tuple[str, ...] = ()       # fields whose change starts a session
    start_events: tuple[str, ...] = ()
    end_events: tuple[str, ...] = ()
    passive_events: tuple[str, ...] = ()  # events that join a session but do not extend it
    client_session: str | None = None    # the SDK's session id field
    client_session_mode: str = "split"   # "split" where it changes, or only "compare"
    max_duration: dt.timedelta | None = None  # longer sessions are cut into windows this long
    identity: str = "event"              # event | stitch | first | graph (docs/identity.md)
    identity_cap: int | None = None      # graph: most people one component may merge (1)
    user_change: bool = False            # split where a device changes resolved user
    enrich: bool = False                 # landing/exit page, referrer, UTM, device, bounces
    bounce: dt.timedelta = dt.timedelta(seconds=10)  # a bounce: one view, shorter than this
    first_last: tuple[str, ...] = ()     # columns whose first/last value each session gets
    dedupe: bool = False                 # drop repeated messageIds (earliest receivedAt kept)
    clock_skew: str | None = None        # "segment": receivedAt - (sentAt - originalTimestamp)
    columns: Columns = dataclasses.field(default_factory=Columns)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.profile is not None:
            if self.profile not in PROFILES:
                raise OptionError(f"'profile' must be one of {', '.join(PROFILES)} "
                                  f"(got {self.profile!r})")
            for name, value in PROFILES[self.profile].items():
                given = getattr(self, name)
                if given is None or (not given and name != "gap"):  # unset: the profile's
                    put(name, value)
        put("gap", _duration(self.gap if self.gap is not None else "30m", "gap"))
        gaps = self.gaps or ()
        if isinstance(gaps, Mapping):
            gaps = gaps.items()
        try:
            pairs = [(str(key), value) for key, value in gaps]
        except (TypeError, ValueError):
            raise OptionError("'gaps' must map values of gap_by to durations, e.g. "
                              f"{{'web': '30m', 'mobile': '5m'}} (got {self.gaps!r})") from None
        put("gaps", tuple(sorted((key, _duration(value, f"gaps[{key!r}]"))
                                 for key, value in pairs)))
        if self.gaps and self.gap_by is None:
            raise OptionError("'gaps' needs 'gap_by': the column (or 'platform') whose value "
                              "selects the gap (got gap_by=None)")
        if self.midnight not in (None, "event"):
            _check_zone(self.midnight)
        put("campaign", _campaign(self.campaign))
        for name in ("start_events", "end_events", "passive_events", "first_last"):
            put(name, _names(getattr(self, name), name))
        if self.client_session_mode not in ("split", "compare"):
            raise OptionError("'client_session_mode' must be one of split, compare "
                              f"(got {self.client_session_mode!r})")
        if self.max_duration is not None:
            put("max_duration", _duration(self.max_duration, "max_duration"))
        if self.identity not in IDENTITY_POLICIES:
            raise OptionError(f"'identity' must be one of {', '.join(IDENTITY_POLICIES)} "
                              f"(got {self.identity!r})")
        if self.identity_cap is not None:
            _check_identity_cap(self.identity_cap)
            if self.identity != "graph":
                raise OptionError(
                    f"'identity_cap' applies to identity='graph' only (got "
                    f"identity_cap={self.identity_cap!r} with identity={self.identity!r})\n"
                    "Hint: sessionize.run(source, identity='graph', identity_cap=2)")
            put("identity_cap", int(self.identity_cap))
        for name in ("user_change", "enrich", "dedupe"):
            _flag(getattr(self, name), name)
        put("bounce", _duration(self.bounce, "bounce"))
        if self.clock_skew not in (None, "segment"):
            raise OptionError(f"'clock_skew' must be None or 'segment' (got {self.clock_skew!r})")
        if not isinstance(self.columns, Columns):
            raise OptionError(f"'columns' must be a sessionize.Columns (got "
                              f"{type(self.columns).__name__})\n"
                              "Hint: Rules(columns=sessionize.Columns(user_id='uid'))")

    @classmethod
    def from_options(cls, **options: Any) -> Rules:
        """Rules from the keyword shorthands of :func:`sessionize.run`: rule options and
        column names (``user_id=``, ``timestamp_unit=``, ``time_column=``, ...) in one
        flat set."""
        unknown = sorted(set(options) - set(RULE_KEYS) - set(COLUMN_KEYS))
        if unknown:
            raise OptionError(f"unknown rule option {unknown[0]!r}; valid options: "
                              f"{', '.join(RULE_KEYS + COLUMN_KEYS)}")
        columns = Columns.from_options(**{k: v for k, v in options.items() if k in COLUMN_KEYS})
        rules = {k: v for k, v in options.items() if k in RULE_KEYS and v is not None}
        return cls(**rules, columns=columns)

    def to_options(self) -> dict[str, Any]:
        """The options that differ from the defaults, as a rules file or ``run()`` takes them
        (durations as text).

        >>> Rules(profile="mobile", gap="10m").to_options()["gap"]
        '10m'
        """
        out: dict[str, Any] = {}
        for option in RULE_OPTIONS:
            value = getattr(self, option.name)
            if option.name == "profile" or value == getattr(_DEFAULT, option.name):
                continue
            if isinstance(value, dt.timedelta):
                value = format_duration(_micros(value))
            elif option.name == "gaps":
                value = {key: format_duration(_micros(gap)) for key, gap in value}
            elif isinstance(value, tuple):
                value = list(value)
            out[option.name] = value
        for option in COLUMN_OPTIONS:
            if option.name != "time_column" and getattr(self.columns, option.name) != \
                    option.default:
                out[option.name] = getattr(self.columns, option.name)
        return out

    def __repr__(self) -> str:
        shown = ({"profile": self.profile} if self.profile else {}) | self.to_options()
        return "Rules(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    # -- what the compiler and the columnar plan read (microseconds) ------------------------
    @property
    def gap_us(self) -> int:
        return _micros(self.gap)

    @property
    def gaps_us(self) -> tuple[tuple[str, int], ...]:
        return tuple((key, _micros(gap)) for key, gap in self.gaps)

    @property
    def max_duration_us(self) -> int | None:
        return None if self.max_duration is None else _micros(self.max_duration)

    @property
    def bounce_us(self) -> int:
        return _micros(self.bounce)

    @property
    def graph_cap(self) -> int:
        """identity='graph': the most people one component may merge (default 1)."""
        return self.identity_cap or 1

    @property
    def timestamp_unit(self) -> str:
        return self.columns.timestamp_unit

    @property
    def plain(self) -> bool:
        """True when only the notebook's inactivity rule applies."""
        return not (self.gaps or self.midnight or self.campaign or self.start_events
                    or self.end_events or self.passive_events
                    or (self.client_session and self.client_session_mode == "split")
                    or self.max_duration or self.user_change)


def _micros(value: dt.timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _duration(value: object, name: str) -> dt.timedelta:
    return dt.timedelta(microseconds=parse_duration(value, name=name))


def _campaign(value: object) -> tuple[str, ...]:
    if value is True:
        return CAMPAIGN_FIELDS
    if value is False or value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        fields = tuple(value)  # type: ignore[call-overload]
    except TypeError:
        fields = (value,)
    if not all(isinstance(f, str) and f for f in fields):
        raise OptionError("'campaign' must be True, False, or a list of column names "
                          f"(got {value!r})")
    return fields


def _check_identity_cap(cap: object) -> None:
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral) or cap < 1:
        raise OptionError("'identity_cap' must be a whole number of at least 1: the most "
                          f"people (userIds) one identity may merge (got {cap!r})")


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{name!r} must be True or False (got {value!r})")
    return value


def _names(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)  # type: ignore[call-overload]
    except TypeError:
        raise OptionError(f"{name!r} must be a list of event names (got {value!r})") from None
    if not all(isinstance(item, str) and item for item in items):
        raise OptionError(f"{name!r} must be a list of event names (got {value!r})")
    return items


def _check_zone(zone: object) -> None:
    try:
        zoneinfo.ZoneInfo(zone)  # type: ignore[arg-type]
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise OptionError(
            f"'midnight' must be an IANA time zone such as 'Europe/Berlin' or 'UTC', or "
            f"'event' for each event's own zone (got {zone!r})") from None


_DEFAULT = Rules()

