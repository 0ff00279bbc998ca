"""Cost of identity resolution: identity="event" against "stitch" and "graph" (issue 4).

The events are bench/generate.py's, reshaped for identity: each user browses from about one
anonymousId per five events (cookie churn and several devices, so 10M events carry about
2M anonymous ids), some identified events come from a server (no anonymousId), a few
events come from a device another user signed in on (shared devices), and about 1 % of
users renamed themselves once or twice with ``alias`` calls (their earlier events carry
the old userId). Everything is drawn with numpy from (n, seed) and cached as Parquet.

Each run is a fresh interpreter (imports not timed) that sessionizes the file and
materialises events, sessions and users as Arrow; runs are interleaved by policy, the
median is reported with the ratio against ``event``. Run on purpose, not as a test:

    python bench/identity_overhead.py --events 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "src"))  # an installed sessionize wins

import generate  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

GENERATOR_VERSION = 1
POLICIES = ("event", "stitch", "graph")
EVENTS_PER_DEVICE = 5      # a user's anonymousIds: 1 + Binomial(events - 1, 1/5)
SERVER_SHARE = 0.05        # identified events sent from a server: no anonymousId
SHARED_SHARE = 0.001       # events sent from another (random) user's device
ALIAS_SHARE = 0.01         # users who renamed themselves with an alias call
SECOND_ALIAS_SHARE = 0.1   # of those, renamed twice (a chain old2 -> old -> user)
OLD_ID_SHARE = 0.3         # of a renamed user's identified events, sent under the old id


def identity_events(n: int, seed: int = 42):
    """``n`` events (plus one or two alias calls per renamed user) as an Arrow table."""
    base = generate.generate_events(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    user = pc.dictionary_encode(base["anonymousId"]).combine_chunks().indices
    user = user.to_numpy(zero_copy_only=False).astype(np.int64)
    n_users = int(user.max()) + 1 if n else 0
    anonymous = base["userId"].is_null().to_numpy(zero_copy_only=False)
    per_user = _device_counts(rng, user, n_users)
    device = _devices(rng, user, per_user)
    shared = rng.random(n) < SHARED_SHARE
    device[shared] = _devices(rng, rng.integers(0, n_users, shared.sum()), per_user)
    no_device = ~anonymous & (rng.random(n) < SERVER_SHARE)
    renamed = np.flatnonzero(rng.random(n_users) < ALIAS_SHARE)
    twice = renamed[rng.random(len(renamed)) < SECOND_ALIAS_SHARE]
    # userId codes: [0, U) the user, [U, 2U) its old id, [2U, 3U) its oldest id
    code = user.copy()
    old = np.isin(user, renamed) & ~anonymous & (rng.random(n) < OLD_ID_SHARE)
    code[old] += n_users
    oldest = old & np.isin(user, twice) & (rng.random(n) < 0.5)
    code[oldest] += n_users
    names = pa.array([f"{p}user_{i:07d}" for p in ("", "old_", "oldest_")
                      for i in range(n_users)])
    device_ids = generate._hex_ids(rng, int(device.max()) + 1 if n else 0)
    table = base.set_column(base.schema.get_field_index("userId"), "userId",
                            names.take(pa.array(code, mask=anonymous)))
    table = table.set_column(table.schema.get_field_index("anonymousId"), "anonymousId",
                             device_ids.take(pa.array(device, mask=no_device)))
    table = table.append_column("previousId", pa.nulls(n, pa.string()))
    return pa.concat_tables([table, _alias_calls(rng, table, user, renamed, twice, names,
                                                 n_users)])


def _device_counts(rng, user, n_users):
    """How many anonymousIds each user has."""
    events = np.bincount(user, minlength=n_users)
    return 1 + rng.binomial(np.maximum(events - 1, 0), 1 / EVENTS_PER_DEVICE)


def _devices(rng, user, per_user):
    """A device code per event: one of its user's devices, uniformly."""
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    return first[user] + (rng.random(len(user)) * per_user[user]).astype(np.int64)


def _alias_calls(rng, table, user, renamed, twice, names, n_users):
    """One alias call (old -> user) per renamed user, and (oldest -> old) for the twice
    renamed, each a copy of one of the user's events (its time, device and context)."""
    first_row = np.full(n_users, -1)
    first_row[user[::-1]] = np.arange(len(user))[::-1]
    rows = np.concatenate([first_row[renamed], first_row[twice]])
    new = np.concatenate([renamed, twice + n_users])
    previous = np.concatenate([renamed + n_users, twice + 2 * n_users])
    calls = table.take(pa.array(rows))
    k = len(rows)
    replace = {"messageId": generate._hex_ids(rng, k), "type": pa.array(["alias"] * k),
               "event": pa.nulls(k, pa.string()), "userId": names.take(pa.array(new)),
               "previousId": names.take(pa.array(previous))}
    for name, column in replace.items():
        calls = calls.set_column(calls.schema.get_field_index(name), name, column)
    return calls


def identity_file(n: int, seed: int, data_dir: Path) -> Path:
    """The cached Parquet file for (n, seed), generated on first use."""
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"identity-v{GENERATOR_VERSION}-n{n}-s{seed}.parquet"
    if not path.exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        pq.write_table(identity_events(n, seed), tmp)
        tmp.replace(path)
    return path


# -- one run, in a fresh process ---------------------------------------------------------------
def worker(policy: str, path: str, diagnostics: bool) -> dict:
    import sessionize

    started = time.perf_counter()
    with sessionize.run(path, identity=policy) as result:
        result.events.to_arrow()
        result.sessions.to_arrow()
        result.users.to_arrow()
        seconds = time.perf_counter() - started
        record = {"policy": policy, "seconds": seconds, "users": len(result.users),
                  "sessions": len(result.sessions)}
        if diagnostics and result.identities is not None:
            d = result.identity_diagnostics()
            record["diagnostics"] = {k: d[k] for k in (
                "anonymous_ids_stitched", "events_reattributed", "shared_devices",
                "users_on_3_or_more_devices")}
            record["largest_component"] = d["largest_components"][:1]
    return record


def once(policy: str, path: Path, diagnostics: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", policy, str(path)]
    if diagnostics:
        command.append("--diagnostics")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{policy} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(path: Path) -> str:
    import duckdb

    n, anons, users, aliases, shared = duckdb.sql(
        f"SELECT count(*), count(DISTINCT anonymousId), count(DISTINCT userId), "
        f"count(*) FILTER (WHERE type = 'alias'), "
        f"(SELECT count(*) FROM (SELECT anonymousId FROM '{path}' WHERE userId IS NOT NULL "
        f"GROUP BY 1 HAVING count(DISTINCT userId) > 1)) FROM '{path}'").fetchall()[0]
    return (f"{n:,} events, {anons:,} anonymousIds, {users:,} userIds, {aliases:,} alias "
            f"calls, {shared:,} anonymousIds seen with several userIds ({path.name})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--worker", nargs=2, metavar=("POLICY", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--diagnostics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.diagnostics)))
        return
    path = identity_file(args.events, args.seed, args.data)
    print(describe(path))
    print(f"cores {os.cpu_count()}, load before {os.getloadavg()[0]:.2f}")
    times: dict[str, list[float]] = {p: [] for p in POLICIES}
    records: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for policy in POLICIES:
            record = once(policy, path, diagnostics=repeat == 0)
            records.setdefault(policy, record)
            times[policy].append(record["seconds"])
    print("\n| identity | median s | runs (s) | users | sessions |\n|---|---:|---|---:|---:|")
    for policy, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {policy} | {statistics.median(values):.2f} | {runs} | "
              f"{records[policy]['users']:,} | {records[policy]['sessions']:,} |")
    base = statistics.median(times["event"])
    print()
    for policy in POLICIES[1:]:
        print(f"{policy} / event = {statistics.median(times[policy]) / base:.2f}x"
              + (" (target <= 2x)" if policy == "graph" else ""))
    for policy in POLICIES[1:]:
        print(f"{policy}: {records[policy].get('diagnostics')}, largest component "
              f"{records[policy].get('largest_component')}")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
