"""Rule options from the command line and from a TOML rules file (``--config``).

Every rule option of :func:`sessionize.run` has a flag and a key; the flag wins
over the file. A rules file looks like::

    profile = "saas"
    gap = "30m"
    midnight = "Europe/Berlin"
    start_events = ["Application Opened"]
    max_duration = "24h"

    [gaps]
    web = "30m"
    mobile = "5m"
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import OptionError

__all__ = ["RULE_KEYS", "add_rule_arguments", "load_config", "rule_options"]

#: Keys a rules file may hold (all keyword options of sessionize.run about rules).
RULE_KEYS = {
    "gap", "profile", "gap_by", "gaps", "midnight", "timezone_column", "campaign",
    "start_events", "end_events", "client_session", "client_session_mode", "identity",
    "identity_cap", "user_change",
    "passive_events", "max_duration", "enrich", "bounce", "first_last", "dedupe",
    "time_column", "clock_skew",
}


def load_config(path: str) -> dict[str, Any]:
    """Read a TOML rules file; unknown keys are an error naming the valid ones."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OptionError(f"rules file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"rules file {path!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - RULE_KEYS)
    if unknown:
        raise OptionError(f"rules file {path!r} has unknown keys {', '.join(unknown)}; "
                          f"valid keys: {', '.join(sorted(RULE_KEYS))}")
    return data


def _gap_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"must be VALUE=DURATION such as mobile=5m (got {text!r})")
    return key, value


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """The rule flags of ``run`` (and of the commands that sessionize first)."""
    rules = parser.add_argument_group("session rules (docs/rules.md; default: the notebook's)")
    rules.add_argument("--config", metavar="FILE", help="read rule options from a TOML file")
    rules.add_argument("--profile", choices=["web", "mobile", "saas"],
                       help="defaults for a kind of product")
    rules.add_argument("--gap-by", metavar="COL",
                       help="choose the gap per event by this column, or 'platform'")
    rules.add_argument("--gaps", metavar="VALUE=DURATION", type=_gap_pair, nargs="+",
                       help="gaps per value of --gap-by, e.g. web=30m mobile=5m")
    rules.add_argument("--midnight", metavar="ZONE",
                       help="split at local midnight in an IANA zone, or 'event'")
    rules.add_argument("--timezone-column", metavar="COL",
                       help="the events' zone for --midnight event (default: context.timezone)")
    rules.add_argument("--campaign", action="store_true",
                       help="split when the UTM campaign changes")
    rules.add_argument("--start-event", dest="start_events", action="append", metavar="NAME",
                       help="an event that starts a session (repeatable)")
    rules.add_argument("--end-event", dest="end_events", action="append", metavar="NAME",
                       help="an event after which the next one starts a session (repeatable)")
    rules.add_argument("--passive-event", dest="passive_events", action="append",
                       metavar="NAME", help="an event that does not extend a session")
    rules.add_argument("--client-session", metavar="COL",
                       help="the SDK's session id; a change starts a session")
    rules.add_argument("--client-session-mode", choices=["split", "compare"])
    rules.add_argument("--max-duration", metavar="DURATION",
                       help="cut longer sessions into windows this long, e.g. 24h")
    rules.add_argument("--identity", choices=["event", "stitch", "first", "graph"],
                       help="how events get a user (default: event, the notebook's; "
                            "docs/identity.md)")
    rules.add_argument("--identity-cap", type=int, metavar="N",
                       help="identity graph: the most people (userIds) one device or "
                            "component may merge (default: 1)")
    rules.add_argument("--user-change", action="store_true",
                       help="start a session where a device's resolved user changes")
    rules.add_argument("--enrich", action="store_true",
                       help="add landing/exit page, referrer, UTM, device, bounces to sessions")
    rules.add_argument("--first-last", action="append", metavar="COL",
                       help="add first_<COL>/last_<COL> to sessions (repeatable)")
    rules.add_argument("--dedupe", action="store_true",
                       help="set repeated messageIds aside (earliest receivedAt kept)")
    rules.add_argument("--time-column", metavar="COL",
                       help="timestamp, originalTimestamp or receivedAt")
    rules.add_argument("--clock-skew", choices=["segment"],
                       help="receivedAt - (sentAt - originalTimestamp)")


def rule_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for sessionize.run from the rules file and the flags."""
    options = load_config(args.config) if getattr(args, "config", None) else {}
    flags = {
        "profile": args.profile, "gap_by": args.gap_by,
        "gaps": dict(args.gaps) if args.gaps else None, "midnight": args.midnight,
        "timezone_column": args.timezone_column, "campaign": args.campaign or None,
        "start_events": args.start_events, "end_events": args.end_events,
        "passive_events": args.passive_events, "client_session": args.client_session,
        "client_session_mode": args.client_session_mode, "max_duration": args.max_duration,
        "identity": args.identity, "identity_cap": args.identity_cap,
        "user_change": args.user_change or None, "enrich": args.enrich or None,
        "first_last": args.first_last, "dedupe": args.dedupe or None,
        "time_column": args.time_column, "clock_skew": args.clock_skew,
    }
    options.update({key: value for key, value in flags.items() if value is not None})
    return options
