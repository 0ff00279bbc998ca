"""Rule and column options from the command line and from a TOML rules file (``--config``).

Nothing here lists an option: the flags and the file's keys are made from the one
declaration in :mod:`sessionize.rules` (``RULE_OPTIONS``, ``COLUMN_OPTIONS``), so a new
option gets its flag and its key by being declared. The flag wins over the file. A
rules file holds the same keys as ``sessionize.run``'s keywords::

    profile = "saas"
    gap = "30m"
    midnight = "Europe/Berlin"
    start_events = ["Application Opened"]
    max_duration = "24h"
    user_id = "uid"

    [gaps]
    web = "30m"
    mobile = "5m"
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..rules import COLUMN_OPTIONS, RULE_OPTIONS, Option

__all__ = ["FILE_KEYS", "add_option_arguments", "load_config", "rule_options"]

#: Keys a rules file may hold: every rule and column option.
FILE_KEYS = tuple(o.name for o in RULE_OPTIONS + COLUMN_OPTIONS)


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
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise OptionError(f"rules file {path!r} has unknown keys {', '.join(unknown)}; "
                          f"valid keys: {', '.join(sorted(FILE_KEYS))}")
    return data


def _gap_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"must be VALUE=DURATION such as mobile=5m (got {text!r})")
    return key, value


def _add(group: Any, option: Option) -> None:
    """One declared option as a flag; its default stays None so a rules file can set it."""
    shown = option.default not in (None, (), False)
    help = option.help + (f" (default: {option.default})" if shown else "")
    if option.kind == "flag":
        group.add_argument(option.cli_flag, dest=option.name, action="store_true",
                           default=None, help=help)
    elif option.kind == "flag_or_names":
        group.add_argument(option.cli_flag, dest=option.name, nargs="*",
                           metavar=option.metavar, help=help)
    elif option.kind == "names":
        group.add_argument(option.cli_flag, dest=option.name, action="append",
                           metavar=option.metavar, help=help + " (repeatable)")
    elif option.kind == "pairs":
        group.add_argument(option.cli_flag, dest=option.name, type=_gap_pair, nargs="+",
                           metavar=option.metavar, help=help)
    elif option.kind == "choice":
        group.add_argument(option.cli_flag, dest=option.name, choices=option.choices,
                           help=help)
    else:
        group.add_argument(option.cli_flag, dest=option.name,
                           type=int if option.kind == "count" else str,
                           metavar=option.metavar or ("DURATION" if option.kind == "duration"
                                                      else None), help=help)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """The rule and column flags of every command that sessionizes."""
    rules = parser.add_argument_group("session rules (docs/rules.md; default: the notebook's)")
    rules.add_argument("--config", metavar="FILE",
                       help="read rule and column options from a TOML file")
    for option in RULE_OPTIONS:
        _add(rules, option)
    columns = parser.add_argument_group("column names (defaults follow the Segment spec)")
    for option in COLUMN_OPTIONS:
        _add(columns, option)


def rule_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for sessionize.run from the rules file and the flags."""
    options = load_config(args.config) if getattr(args, "config", None) else {}
    for option in RULE_OPTIONS + COLUMN_OPTIONS:
        value = getattr(args, option.name, None)
        if value is None:
            continue
        if option.kind == "flag_or_names":
            value = value or True  # the switch alone, or the names given after it
        options[option.name] = dict(value) if option.kind == "pairs" else value
    return options
