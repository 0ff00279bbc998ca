"""Cost of every session rule against the notebook's gap rule alone (issues 3 and 24).

Generates (and caches) a rich Parquet file: bench/generate.py's events with what real
product events carry beside them: each user's time zone, campaigns (UTM), an SDK session
id, page paths and referrers, device and OS, and app lifecycle events on mobile
(``Application Opened``/``Backgrounded``). Then runs the CLI as users do, a fresh process
per run writing its three Parquet tables, with the gap rule alone and with every rule
(:data:`ALL_RULES`), interleaved (bench/ab.py), and prints the medians and the ratio:

    python bench/rules_overhead.py --events 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab  # noqa: E402
import generate  # noqa: E402

RICH_VERSION = 1
ZONES = ["America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin",
         "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney"]
SOURCES = ["google", "newsletter", "facebook", "partner"]
MEDIUMS = ["cpc", "email", "social", "referral"]
PATHS = ["/", "/pricing", "/docs", "/blog", "/signup", "/product", "/cart", "/checkout"]
REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/"]

#: Every rule the rich file supports (the CLI's flags).
ALL_RULES = [
    "--gap-by", "platform", "--gaps", "web=30m", "mobile=5m", "server=30m",
    "--midnight", "event", "--campaign", "--start-event", "Application Opened",
    "--end-event", "Application Backgrounded", "--passive-event", "identify",
    "--max-duration", "24h", "--client-session", "context.sessionId", "--user-change",
    "--enrich", "--first-last", "context.os.name",
]


def rich_file(n: int, seed: int, data_dir: Path = generate.DEFAULT_DATA_DIR) -> Path:
    """The cached rich file for (n, seed), generated on first use."""
    path = Path(data_dir) / f"events-rich-v{generate.GENERATOR_VERSION}.{RICH_VERSION}" \
                            f"-n{n}-s{seed}.parquet"
    if not path.exists():
        generate.write_events(rich_events(n, seed, data_dir), path, "parquet")
    return path


def _pick(rng: np.random.Generator, values: list[str], where: np.ndarray) -> pa.Array:
    """One of ``values`` per event, at random where ``where`` holds, else null."""
    return pa.array(values).take(pa.array(rng.integers(0, len(values), len(where)),
                                          mask=~where))


def rich_events(n: int, seed: int, data_dir: Path = generate.DEFAULT_DATA_DIR) -> pa.Table:
    """bench/generate.py's events with the fields the rules read (module docstring)."""
    base = pq.read_table(generate.events_file(n, seed, "parquet", data_dir))
    rng = np.random.default_rng(seed + 1)
    library = base["context"].combine_chunks().field("library").field("name")
    lib = np.asarray(pc.index_in(library, pa.array(list(generate.LIBRARIES))).fill_null(0))
    mobile = lib > 0
    kind = np.asarray(base["type"].combine_chunks().to_numpy(zero_copy_only=False))
    track, view = kind == "track", np.isin(kind, ["page", "screen"])
    # the user's zone: anonymousIds are one per generated user
    device = np.asarray(pc.dictionary_encode(base["anonymousId"]).combine_chunks().indices)
    zone = pa.array(ZONES).take(pa.array(device % len(ZONES)))
    r = rng.random(n)
    event = base["event"].combine_chunks()
    event = pc.if_else(pa.array(mobile & track & (r < 0.06)), "Application Opened", event)
    event = pc.if_else(pa.array(mobile & track & (r > 0.96)), "Application Backgrounded", event)
    campaign = rng.random(n) < 0.03
    ts_us = np.asarray(base["timestamp"].combine_chunks().cast(pa.int64()))
    context = pa.StructArray.from_arrays([
        pa.StructArray.from_arrays([library], ["name"]),
        zone,
        pa.StructArray.from_arrays([_pick(rng, SOURCES, campaign), _pick(rng, MEDIUMS, campaign),
                                    _pick(rng, ["spring", "launch"], campaign)],
                                   ["source", "medium", "name"]),
        pa.array(ts_us // 1_800_000_000 * 1_800_000),  # an SDK's half-hour session id (ms)
        pa.StructArray.from_arrays([_pick(rng, PATHS, view),
                                    _pick(rng, REFERRERS, view & (rng.random(n) < 0.1))],
                                   ["path", "referrer"]),
        pa.StructArray.from_arrays([pa.array(["", "ios", "android"]).take(
            pa.array(lib, mask=~mobile))], ["type"]),
        pa.StructArray.from_arrays([pa.array(["", "iOS", "Android"]).take(
            pa.array(lib, mask=~mobile))], ["name"]),
    ], ["library", "timezone", "campaign", "sessionId", "page", "device", "os"])
    return base.set_column(base.schema.get_field_index("event"), "event", event) \
               .set_column(base.schema.get_field_index("context"), "context", context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    parser.add_argument("--sessionize", default=str(Path(sys.executable).parent / "sessionize"),
                        help="the CLI to run (default: this environment's)")
    parser.add_argument("--json", type=Path, help="also save every run's record here")
    args = parser.parse_args(argv)
    path = rich_file(args.events, args.seed, args.data_dir)
    cli = f"{shlex.quote(args.sessionize)} run {{file}} --out {{out}}"
    return ab.main([str(path), "--repeats", str(args.repeats),
                    "--tool", f"gap rule={cli}",
                    "--tool", f"every rule={cli} {shlex.join(ALL_RULES)}",
                    *(["--json", str(args.json)] if args.json else [])])


if __name__ == "__main__":
    raise SystemExit(main())
