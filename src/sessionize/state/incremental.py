"""An incremental run: one batch of events into a state file, exactly.

The state is a DuckDB database file. It holds the tables a full run gives (``events``,
``sessions``, ``users``, ``quarantine``, and ``identities`` under identity policies
other than ``event``), the last run's ``changes`` (``session_key``, ``change``:
inserted / changed / removed), a ``runs`` log, and what the next run needs: every
distinct event delivered so far as it was read (``_sz_raw``, with its id and delivery
order) and the rule set (``_sz_meta``).

A run, in order:

1. read the batch with the engine's reader, parse and validate it with the compiled
   ``prepared`` stage (invalid rows raise, or are quarantined);
2. give every row its id: the messageId, else a hash of the row's content; rows whose id
   the state (or an earlier row of the batch) holds are skipped and counted;
3. with ``max_lateness``, set aside (reason ``too_late``) events older than the newest
   event in the state minus ``max_lateness``;
4. recompute the affected users with the engine (the columnar plan where it applies):
   every stored event of each user the batch touches, plus the new ones, in delivery
   order. Under identity ``stitch`` and ``first`` the users an identification moves
   events between are recomputed whole (:func:`_affected_identified`); under ``graph``
   or with ``user_change`` every user is;
5. compare the users' sessions before and after (``changes``), and replace their rows in
   one DuckDB transaction: a run killed at any point leaves the state as before it or as
   after it.

The tables then equal one full run over the distinct events in delivery order (the
batches in the order they were run, each batch in its own row order): ties on time are
ordered by messageId, then by that order, as in a full run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import IO, Any

import duckdb

from ..durations import parse_duration
from ..engines.duckdb import DuckDB, DuckDBEngine, DuckDBTable
from ..errors import StateError
from ..io.inputs import ROW, LoadedInput
from ..result import Result, Table
from ..rules import Rules
from ..sql.compiler import compile_rules, literal, quote

__all__ = ["IncrementalResult", "STATE_TABLES", "run_incremental"]

#: The layout of the state file; a state of another layout is refused.
STATE_FORMAT = "1"
#: The tables users read (``identities`` only under identity policies other than event).
STATE_TABLES = ("events", "sessions", "users", "quarantine", "identities", "changes", "runs")
RAW = "_sz_raw"     # every distinct event delivered, as read, with the columns below
META = "_sz_meta"   # key/value: format, rules, next_seq
ID, SEQ, USER, TS, REASON = "__sz_id", "__sz_seq", "__sz_user", "__sz_ts", "__sz_reason"
# the event's userId and anonymousId as the rules read them (identity stitch / first)
UID, AID = "__sz_state_uid", "__sz_state_aid"
BOOKKEEPING = (ID, SEQ, USER, TS, REASON, UID, AID)
SCHEMA = "sz_state"  # the state's name in the run's connection
#: Under identity stitch / first, a batch whose users hold more than this share of the
#: stored events recomputes everyone instead (one rebuild beats rewriting most rows).
WHOLE_STATE_SHARE = 0.5

Progress = Callable[[str, "float | None"], None]


@dataclasses.dataclass(frozen=True)
class RunCounts:
    """What one incremental run did (the summary line)."""

    run: int
    new_events: int
    late_events: int
    already_seen: int
    too_late: int
    quarantined: int
    users_affected: int
    inserted: int
    changed: int
    removed: int
    seconds: float
    full_recompute: bool

    def line(self) -> str:
        """The run in one line, e.g. ``run 3: 1,000 new events (12 late), ...``."""
        extra = f", {self.too_late:,} too late" if self.too_late else ""
        extra += f", {self.quarantined:,} quarantined" if self.quarantined else ""
        every = " (all recomputed)" if self.full_recompute else ""
        return (f"run {self.run}: {self.new_events:,} new events ({self.late_events:,} late), "
                f"{self.already_seen:,} already seen{extra}; {self.users_affected:,} users "
                f"affected{every}; sessions {self.inserted:,} inserted, {self.changed:,} "
                f"changed, {self.removed:,} removed; {self.seconds:.2f} s")


class IncrementalResult(Result):
    """A :class:`~sessionize.Result` over the state's tables after an incremental run, with
    the run's ``changes`` (a :class:`~sessionize.result.Table`), its ``counts`` and its
    summary line (:meth:`run_line`). ``write`` also writes ``changes``."""

    def __init__(self, *, changes: Table, counts: RunCounts, state: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.changes = changes
        self.counts = counts
        self.state = state

    def run_line(self) -> str:
        return self.counts.line()

    def summary(self) -> str:
        return self.run_line() + "\n" + super().summary()

    def write(self, out_dir: str | os.PathLike, *, format: str = "parquet",
              on_file: Callable[[str], None] | None = None) -> list[str]:
        """Write the state's tables and this run's ``changes`` to ``out_dir`` atomically."""
        tables = [self.events, self.sessions, self.users, self.changes]
        if len(self.quarantine):
            tables.append(self.quarantine)
        if self.identities is not None:
            tables.append(self.identities)
        return self.engine.write(tables, out_dir, format=format, on_file=on_file)


def run_incremental(source: Any, rules: Rules, state: str | os.PathLike, *, engine: DuckDB,
                    on_invalid: str = "raise", max_lateness: Any = None,
                    progress: Progress | None = None, stdin: IO[bytes] | None = None,
                    ) -> IncrementalResult:
    """Add the events of ``source`` to the state file ``state`` (created on the first run)
    and return the state's tables (module docstring)."""
    if engine.database is not None:
        raise StateError(f"'database' does not apply to an incremental run: the state is the "
                         f"database (got database={os.fspath(engine.database)!r} and "
                         f"state={os.fspath(state)!r})")
    lateness_us = (None if max_lateness is None
                   else parse_duration(max_lateness, name="max_lateness"))
    started = time.perf_counter()
    worker = DuckDB(threads=engine.threads, temp_directory=engine.temp_directory).open(
        progress=progress, events_order="none")
    try:
        return _run(worker, source, rules, os.fspath(state), engine=engine,
                    on_invalid=on_invalid, lateness_us=lateness_us, stdin=stdin,
                    started=started)
    except BaseException:
        worker.close()
        raise


def _run(worker: DuckDBEngine, source: Any, rules: Rules, path: str, *, engine: DuckDB,
         on_invalid: str, lateness_us: int | None, stdin: Any, started: float,
         ) -> IncrementalResult:
    con = worker.con
    worker.rules = rules
    loaded = worker.read(source, rules, on_invalid=on_invalid, stdin=stdin)
    fields = worker.fields(loaded, rules)
    compiled = compile_rules(rules, fields, list(loaded.schema), source=loaded.table)
    con.execute(f"CREATE OR REPLACE VIEW sz_prepared AS {compiled.sql('prepared')}")
    worker.check(loaded, fields, on_invalid)  # invalid rows raise unless quarantined
    existing = _attach(con, path)
    meta = _meta(con, path) if existing else {}
    if meta:
        _check_rules(meta, rules, path)
    first = not meta
    seq0 = int(meta.get("next_seq", "0"))
    run_number = int(meta.get("runs", "0")) + 1
    # stitch / first recompute the users an identification moves events between; states
    # made before the raw table kept each event's ids recompute everyone (meta "keys")
    keyed = first or meta.get("keys") == "1"
    stitched = rules.identity in ("stitch", "first") and keyed and not rules.user_change
    full = rules.user_change or (rules.identity != "event" and not stitched)

    # -- 1-3: ids, re-deliveries, lateness ------------------------------------------------
    content = ", ".join(f"{quote(c)} := {quote(c)}" for c in loaded.schema) or "x := 1"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_batch AS
        SELECT *, ROW_NUMBER() OVER (PARTITION BY {ID} ORDER BY
                coalesce({REASON} = 'duplicate_message_id', false), {ROW}) AS __sz_copy
        FROM (SELECT {ROW}, coalesce(__sz_msg, 'content:' || md5(CAST(
                  to_json(struct_pack({content})) AS VARCHAR))) AS {ID},
                  __sz_ts AS {TS}, __sz_user AS {USER}, __sz_invalid AS {REASON},
                  __sz_uid AS {UID}, __sz_aid AS {AID}
              FROM sz_prepared)""")
    watermark = None
    if not first and lateness_us is not None:
        watermark = con.execute(f"SELECT max(last_seen) FROM {SCHEMA}.users").fetchall()[0][0]
    too_late = "false"
    if watermark is not None:
        too_late = (f"b.{TS} < TIMESTAMPTZ '{watermark.isoformat()}' - "
                    f"INTERVAL '{lateness_us} microseconds'")
    # The state's ids are many, the batch's few: probe the state with the batch's ids.
    con.execute(f"CREATE OR REPLACE TEMP TABLE sz_seen ({ID} VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE sz_last (u VARCHAR, last_seen TIMESTAMPTZ)")
    if not first:
        con.execute(f"INSERT INTO sz_seen SELECT r.{ID} FROM {SCHEMA}.{RAW} AS r "
                    f"SEMI JOIN sz_batch AS b ON r.{ID} = b.{ID}")
        con.execute(f"INSERT INTO sz_last SELECT u.resolved_user, u.last_seen "
                    f"FROM {SCHEMA}.users AS u SEMI JOIN sz_batch AS b "
                    f"ON u.resolved_user = b.{USER}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_status AS
        SELECT {ROW}, {ID}, {TS}, {USER}, {REASON}, {UID}, {AID}, status,
            status = 'new' AND {TS} < last_seen AS late
        FROM (
            SELECT b.*, l.last_seen,
                CASE WHEN b.__sz_copy > 1 OR s.{ID} IS NOT NULL THEN 'seen'
                     WHEN b.{REASON} IS NOT NULL THEN 'quarantined'
                     WHEN {too_late} THEN 'too_late'
                     ELSE 'new' END AS status
            FROM sz_batch AS b LEFT JOIN sz_seen AS s ON s.{ID} = b.{ID}
            LEFT JOIN sz_last AS l ON l.u = b.{USER})""")
    counts = dict(con.execute("SELECT status, count(*) FROM sz_status GROUP BY 1").fetchall())
    late = con.execute("SELECT count(*) FROM sz_status WHERE late").fetchall()[0][0]
    n_new = counts.get("new", 0)

    # -- 4: recompute the affected users ----------------------------------------------------
    identified = False  # sz_rows holds the stored rows to read (_affected_identified)
    if full:
        con.execute(f"CREATE OR REPLACE TEMP TABLE sz_affected ({USER} VARCHAR, "
                    "cut_sid BIGINT, cut_ts TIMESTAMPTZ)")
    elif stitched and not first:
        _affected_identified(con)
        # rewriting most of the state row by row costs more than rebuilding it
        rows = con.execute("SELECT count(*) FROM sz_rows").fetchall()[0][0]
        stored = con.execute(f"SELECT count(*) FROM {SCHEMA}.{RAW}").fetchall()[0][0]
        full = rows > WHOLE_STATE_SHARE * stored
        identified = not full
    else:
        _affected(con, rules, first=first)
    recompute = first or n_new > 0
    new_tables: dict[str, Any] = {}
    if recompute:
        new_tables = _recompute(con, loaded, engine, rules, seq0, first=first, full=full,
                                rows_chosen=identified)
        for name, table in new_tables.items():
            con.register(f"sz_new_{name}", table)
        if not (first or full):
            _renumber(con)
    users_affected = (len(new_tables["users"]) if full and recompute else
                      con.execute("SELECT count(*) FROM sz_affected").fetchall()[0][0])

    # -- quarantine: the batch's invalid and too-late rows, and its malformed lines ----------
    worker.create_quarantine(worker.quarantine_sql(
        loaded, fields, 1, joined=f" JOIN sz_status AS s ON s.{ROW} = p.{ROW}",
        reason=f"CASE WHEN s.status = 'too_late' THEN 'too_late' ELSE s.{REASON} END",
        where="s.status IN ('quarantined', 'too_late')"), loaded)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_malformed AS
        SELECT 'malformed:' || md5(coalesce(raw_line, '')) AS {ID}, quarantine_reason
        FROM sz_quarantine WHERE source_row IS NULL""")
    if not first:
        con.execute(f"DELETE FROM sz_quarantine WHERE source_row IS NULL AND "
                    f"'malformed:' || md5(coalesce(raw_line, '')) IN "
                    f"(SELECT {ID} FROM {SCHEMA}.{RAW})")
        con.execute(f"DELETE FROM sz_malformed WHERE {ID} IN (SELECT {ID} FROM {SCHEMA}.{RAW})")
    con.execute("ALTER TABLE sz_quarantine ADD COLUMN quarantine_run BIGINT "
                f"DEFAULT {run_number}")
    quarantined = con.execute("SELECT count(*) FROM sz_quarantine").fetchall()[0][0] \
        - counts.get("too_late", 0)

    # -- 5: the changes, then everything in one transaction ---------------------------------
    if recompute:
        new_sessions = "sz_new_sessions" if first or full else "sz_out_sessions"
        old = (f"(SELECT * FROM {SCHEMA}.sessions"
               + ("" if full else f" AS o SEMI JOIN sz_affected AS c ON o.resolved_user = "
                                  f"c.{USER} AND o.session_id >= c.cut_sid")
               + ")") if not first else "(SELECT * FROM sz_new_sessions WHERE false)"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE sz_changes AS
            SELECT coalesce(n.session_key, o.session_key) AS session_key,
                CASE WHEN o.session_key IS NULL THEN 'inserted'
                     WHEN n.session_key IS NULL THEN 'removed' ELSE 'changed' END AS change,
                coalesce(n.resolved_user, o.resolved_user) AS resolved_user,
                n.session_id AS session_id, CAST({run_number} AS BIGINT) AS run
            FROM {old} AS o FULL JOIN {new_sessions} AS n ON o.session_key = n.session_key
            WHERE o.session_key IS NULL OR n.session_key IS NULL
                OR CAST(to_json(o) AS VARCHAR) <> CAST(to_json(n) AS VARCHAR)
            ORDER BY resolved_user, session_key""")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE sz_changes (session_key VARCHAR, "
                    "change VARCHAR, resolved_user VARCHAR, session_id BIGINT, run BIGINT)")
    changes = dict(con.execute("SELECT change, count(*) FROM sz_changes GROUP BY 1").fetchall())
    next_seq = seq0 + (con.execute(f"SELECT coalesce(max({ROW}) + 1, 0) FROM sz_status")
                       .fetchall()[0][0])
    run_counts = RunCounts(
        run=run_number, new_events=n_new, late_events=late,
        already_seen=counts.get("seen", 0), too_late=counts.get("too_late", 0),
        quarantined=quarantined, users_affected=users_affected,
        inserted=changes.get("inserted", 0), changed=changes.get("changed", 0),
        removed=changes.get("removed", 0), seconds=0.0, full_recompute=full and not first)
    _commit(con, loaded, rules, first=first, full=full, recompute=recompute, keyed=keyed,
            tables=set(new_tables), seq0=seq0, next_seq=next_seq, run_counts=run_counts,
            started=started)
    run_counts = dataclasses.replace(run_counts, seconds=time.perf_counter() - started)

    # -- the result: the state's tables, through this connection -----------------------------
    con.execute("DROP TABLE sz_quarantine")
    con.execute("DROP TABLE sz_changes")
    for name in ("events", "sessions", "users", "quarantine", "changes", "identities"):
        if _has_table(con, name):
            con.execute(f"CREATE OR REPLACE TEMP VIEW sz_{name} AS "
                        f"SELECT * FROM {SCHEMA}.{name}")
    identities = (DuckDBTable(worker, "identities", "sz_identities")
                  if _has_table(con, "identities") else None)
    return IncrementalResult(
        engine=worker, rules=rules, compiled=compiled, plan=worker.plan,
        source=f"the state {path!r}", quarantined=0,
        events=DuckDBTable(worker, "events", "sz_events"),
        sessions=DuckDBTable(worker, "sessions", "sz_sessions"),
        users=DuckDBTable(worker, "users", "sz_users"),
        quarantine=DuckDBTable(worker, "quarantine", "sz_quarantine"),
        identities=identities, changes=DuckDBTable(worker, "changes", "sz_changes"),
        counts=run_counts, state=path)


def _affected(con: Any, rules: Rules, *, first: bool) -> None:
    """``sz_affected``: each user with new events, and the session their recompute starts
    at (``cut_sid``, from ``cut_ts`` on; 1 and NULL: the whole user).

    A session's boundaries depend only on an event, its predecessor and the session's
    start, so everything before the last session that starts strictly before the user's
    earliest new event stays as it is. Not so where a rule carries a value across
    sessions (campaign, client_session, passive_events: the whole user is recomputed), for
    a session that max_duration started (its windows count from an earlier start: the
    cut moves back to a session another rule started), or when that session's first time
    ties the previous session's last (the tied events' order decides: the whole user).
    """
    firsts = (f"SELECT {USER}, min({TS}) AS first_new FROM sz_status WHERE status = 'new' "
              f"GROUP BY {USER}")
    carried = bool(rules.campaign or rules.passive_events
                   or (rules.client_session and rules.client_session_mode == "split"))
    if first or carried:
        con.execute(f"CREATE OR REPLACE TEMP TABLE sz_affected AS SELECT {USER}, "
                    f"CAST(1 AS BIGINT) AS cut_sid, CAST(NULL AS TIMESTAMPTZ) AS cut_ts, "
                    f"CAST(NULL AS VARCHAR) AS cut_reason, "
                    f"CAST(NULL AS TIMESTAMPTZ) AS prev_end FROM ({firsts})")
        return
    s = SCHEMA
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_affected AS
        WITH f AS ({firsts}),
        c AS (
            SELECT f.{USER}, max(x.session_id) AS sid
            FROM f JOIN {s}.sessions AS x ON x.resolved_user = f.{USER}
                AND x.session_start < f.first_new AND x.start_reason <> 'max_duration'
            GROUP BY f.{USER}
        ),
        t AS (
            SELECT c.{USER}, c.sid, x.session_start AS cut_ts, x.start_reason AS cut_reason,
                p.session_end AS prev_end,
                coalesce(p.session_end >= x.session_start, false) AS tied
            FROM c JOIN {s}.sessions AS x ON x.resolved_user = c.{USER}
                AND x.session_id = c.sid
            LEFT JOIN {s}.sessions AS p ON p.resolved_user = c.{USER}
                AND p.session_id = c.sid - 1
        )
        SELECT f.{USER},
            CASE WHEN t.sid IS NULL OR t.tied THEN 1 ELSE t.sid END AS cut_sid,
            CASE WHEN t.sid IS NULL OR t.tied OR t.sid = 1 THEN NULL ELSE t.cut_ts END
                AS cut_ts,
            t.cut_reason, t.prev_end
        FROM f LEFT JOIN t ON t.{USER} = f.{USER}""")


def _affected_identified(con: Any) -> None:
    """``sz_affected`` and ``sz_rows`` under identity ``stitch`` / ``first``: the users whose
    events an identification in the batch can move, recomputed whole, and the stored rows
    the engine needs for them.

    An anonymousId resolves through the identifications that carry it (the latest or the
    first), so only the devices the batch identifies (``sz_touched``) can change user.
    The users: each new event's own key (the batch's userIds), and for each anonymousId
    of the batch the user it resolved to before (or itself). A touched device's new user
    is one of them: the winning identification (the latest or the first) is either the
    one that won before or one of the batch's. The rows: every event of those users under the
    new resolution (their userIds' events; the anonymous events of devices that resolved
    to one of them, that the batch identifies, or that are one of them), plus every
    identification of each anonymousId among those rows, so that the engine resolves
    each of them as a full run would; what it gives other users is dropped.
    """
    s = SCHEMA
    identities = (f"{s}.identities" if _has_table(con, "identities") else
                  "(SELECT CAST(NULL AS VARCHAR) AS identifier, "
                  "CAST(NULL AS VARCHAR) AS resolved_user WHERE false)")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_touched AS
        SELECT DISTINCT {AID} AS aid FROM sz_status
        WHERE status = 'new' AND {UID} IS NOT NULL AND {AID} IS NOT NULL""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_affected AS
        WITH aids AS (SELECT DISTINCT {AID} AS aid FROM sz_status
                      WHERE status = 'new' AND {AID} IS NOT NULL),
        users AS (
            SELECT {USER} AS u FROM sz_status WHERE status = 'new'
            UNION SELECT coalesce(m.resolved_user, a.aid) FROM aids AS a
                LEFT JOIN {identities} AS m ON m.identifier = a.aid
        )
        SELECT DISTINCT u AS {USER}, CAST(1 AS BIGINT) AS cut_sid,
            CAST(NULL AS TIMESTAMPTZ) AS cut_ts, CAST(NULL AS VARCHAR) AS cut_reason,
            CAST(NULL AS TIMESTAMPTZ) AS prev_end
        FROM users WHERE u IS NOT NULL""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_rows AS
        WITH devices AS (
            SELECT m.identifier AS aid FROM {identities} AS m
                SEMI JOIN sz_affected AS c ON m.resolved_user = c.{USER}
            UNION SELECT aid FROM sz_touched
            UNION SELECT {USER} FROM sz_affected
        )
        SELECT r.rowid AS rid, r.{AID} AS aid FROM {s}.{RAW} AS r
        WHERE r.{REASON} IS NULL AND (
            r.{UID} IN (SELECT {USER} FROM sz_affected)
            OR (r.{UID} IS NULL AND r.{AID} IN (SELECT aid FROM devices)))""")
    con.execute(f"""
        INSERT INTO sz_rows
        SELECT r.rowid, r.{AID} FROM {s}.{RAW} AS r
        WHERE r.{REASON} IS NULL AND r.{UID} IS NOT NULL AND r.{AID} IN (
                SELECT aid FROM sz_rows UNION
                SELECT {AID} FROM sz_status WHERE status = 'new')
            AND r.rowid NOT IN (SELECT rid FROM sz_rows)""")


def _renumber(con: Any) -> None:
    """The recomputed tails as the whole users' rows: session ids continue from the
    untouched sessions, and each tail's first event keeps its predecessor and the reason
    its session started (``sz_out_events``, ``sz_out_sessions``)."""
    # The tail's first event: its predecessor is the last event of the session before
    # (that session's end), and its session started for the reason stored.
    first = "n.prev_timestamp IS NULL AND c.cut_sid > 1"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_out_events AS
        SELECT n.* REPLACE (
            n.session_id + c.cut_sid - 1 AS session_id,
            CASE WHEN {first} THEN c.prev_end ELSE n.prev_timestamp END AS prev_timestamp,
            CASE WHEN {first} THEN c.cut_ts - c.prev_end ELSE n.time_since_last_event END
                AS time_since_last_event,
            CASE WHEN {first} THEN c.cut_reason ELSE n.start_reason END AS start_reason)
        FROM sz_new_events AS n JOIN sz_affected AS c ON c.{USER} = n.resolved_user""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sz_out_sessions AS
        SELECT n.* REPLACE (
            n.session_id + c.cut_sid - 1 AS session_id,
            CASE WHEN n.session_id = 1 AND c.cut_sid > 1 THEN c.cut_reason
                 ELSE n.start_reason END AS start_reason)
        FROM sz_new_sessions AS n JOIN sz_affected AS c ON c.{USER} = n.resolved_user""")


def _recompute(con: Any, loaded: LoadedInput, engine: DuckDB, rules: Rules, seq0: int, *,
               first: bool, full: bool, rows_chosen: bool = False) -> dict[str, Any]:
    """The affected users' tables, by the engine, from their stored and new events in
    delivery order (the arrow tables ``events``, ``sessions``, ``users``, ``identities``)."""
    batch = (f"SELECT i.* EXCLUDE ({ROW}), CAST({seq0} + i.{ROW} AS BIGINT) AS {SEQ} "
             f"FROM {loaded.table} AS i JOIN sz_status AS s ON s.{ROW} = i.{ROW} "
             "WHERE s.status = 'new'")
    parts = [batch]
    if not first:
        stored = ", ".join(f"r.{c}" for c in BOOKKEEPING if c != SEQ)
        which = ""
        if rows_chosen:  # sz_rows holds them already (_affected_identified)
            which = " SEMI JOIN sz_rows AS k ON r.rowid = k.rid"
        elif not full:
            # Two passes: the rows' ids from the narrow bookkeeping columns, then the rows
            # themselves by id. The id join's filter reaches the scan, so the wide input
            # columns are decoded only for the rows read, not for every row of the users.
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE sz_rows AS
                SELECT r.rowid AS rid FROM {SCHEMA}.{RAW} AS r
                SEMI JOIN sz_affected AS c ON r.{USER} = c.{USER}
                    AND (c.cut_ts IS NULL OR r.{TS} >= c.cut_ts)
                WHERE r.{REASON} IS NULL""")
            which = " SEMI JOIN sz_rows AS k ON r.rowid = k.rid"
        parts.insert(0, f"SELECT r.* EXCLUDE ({stored}) FROM {SCHEMA}.{RAW} AS r{which} "
                        f"WHERE r.{REASON} IS NULL")
    union = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
    table = con.sql(f"SELECT * FROM ({union}) ORDER BY {SEQ}").to_arrow_table()
    table = table.drop_columns([SEQ])
    runner = dataclasses.replace(engine, database=None).open(events_order="none")
    try:
        result = runner.run(table, rules, on_invalid="raise")
        out = {"events": result.events.to_arrow(), "sessions": result.sessions.to_arrow(),
               "users": result.users.to_arrow()}
        if result.identities is not None:
            out["identities"] = result.identities.to_arrow()
        return out
    finally:
        runner.close()


def _commit(con: Any, loaded: LoadedInput, rules: Rules, *, first: bool, full: bool,
            recompute: bool, keyed: bool, tables: set[str], seq0: int, next_seq: int,
            run_counts: RunCounts, started: float) -> None:
    """Every change to the state, in one transaction."""
    s = SCHEMA
    raw_rows = (f"SELECT i.* EXCLUDE ({ROW}), s.{ID}, CAST({seq0} + i.{ROW} AS BIGINT) AS {SEQ}, "
                f"s.{USER}, s.{TS}, s.{UID}, s.{AID}, "
                f"CASE s.status WHEN 'new' THEN NULL WHEN 'too_late' "
                f"THEN 'too_late' ELSE s.{REASON} END AS {REASON} "
                f"FROM {loaded.table} AS i JOIN sz_status AS s ON s.{ROW} = i.{ROW} "
                "WHERE s.status <> 'seen'")
    malformed = (f"SELECT {ID}, quarantine_reason AS {REASON} FROM sz_malformed")
    con.execute("BEGIN TRANSACTION")
    try:
        if first:
            con.execute(f"CREATE TABLE {s}.{META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute(f"CREATE TABLE {s}.runs (run BIGINT, finished_at TIMESTAMPTZ, "
                        "new_events BIGINT, late_events BIGINT, already_seen BIGINT, "
                        "too_late BIGINT, quarantined BIGINT, users_affected BIGINT, "
                        "sessions_inserted BIGINT, sessions_changed BIGINT, "
                        "sessions_removed BIGINT, seconds DOUBLE)")
            con.execute(f"CREATE TABLE {s}.{RAW} AS {raw_rows}")
            con.execute(f"INSERT INTO {s}.{RAW} BY NAME {malformed}")
            con.execute(f"CREATE TABLE {s}.quarantine AS SELECT * FROM sz_quarantine")
        else:
            _add_columns(con, f"{s}.{RAW}", f"({raw_rows})")
            con.execute(f"INSERT INTO {s}.{RAW} BY NAME {raw_rows}")
            con.execute(f"INSERT INTO {s}.{RAW} BY NAME {malformed}")
            _add_columns(con, f"{s}.quarantine", "sz_quarantine")
            con.execute(f"INSERT INTO {s}.quarantine BY NAME SELECT * FROM sz_quarantine")
        if recompute:
            for name in ("events", "sessions", "identities", "users"):
                if name not in tables:
                    continue
                if first or full:
                    con.execute(f"CREATE OR REPLACE TABLE {s}.{name} AS "
                                f"SELECT * FROM sz_new_{name}")
                    continue
                if name == "identities":  # exact for every identifier the run read
                    con.execute(f"DELETE FROM {s}.identities WHERE identifier IN "
                                "(SELECT identifier FROM sz_new_identities)")
                    con.execute(f"INSERT INTO {s}.identities BY NAME "
                                "SELECT * FROM sz_new_identities")
                    continue
                if name == "users":  # from the user's sessions, as the compiled users stage
                    con.execute(f"DELETE FROM {s}.users WHERE resolved_user IN "
                                f"(SELECT {USER} FROM sz_affected)")
                    con.execute(f"""INSERT INTO {s}.users BY NAME
                        SELECT resolved_user, count(*) AS session_count,
                            CAST(sum(event_count) AS BIGINT) AS event_count,
                            min(session_start) AS first_seen, max(session_end) AS last_seen
                        FROM {s}.sessions WHERE resolved_user IN
                            (SELECT {USER} FROM sz_affected)
                        GROUP BY resolved_user""")
                    continue
                _add_columns(con, f"{s}.{name}", f"sz_out_{name}")
                con.execute(f"DELETE FROM {s}.{name} AS t USING sz_affected AS c "
                            f"WHERE t.resolved_user = c.{USER} AND t.session_id >= c.cut_sid")
                con.execute(f"INSERT INTO {s}.{name} BY NAME SELECT * FROM sz_out_{name}")
        con.execute(f"CREATE OR REPLACE TABLE {s}.changes AS SELECT * FROM sz_changes")
        c = run_counts
        con.execute(f"INSERT INTO {s}.runs VALUES (?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [c.run, c.new_events, c.late_events, c.already_seen, c.too_late,
                     c.quarantined, c.users_affected, c.inserted, c.changed, c.removed,
                     time.perf_counter() - started])
        values = {"format": STATE_FORMAT, "rules": _rules_json(rules),
                  "next_seq": str(next_seq), "runs": str(c.run)} | (
                      {"keys": "1"} if keyed else {})
        con.executemany(f"INSERT OR REPLACE INTO {s}.{META} VALUES (?, ?)",
                        list(values.items()))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _add_columns(con: Any, target: str, source: str) -> None:
    """Add to ``target`` the columns of ``source`` it lacks (a batch with a new column)."""
    have = {row[0] for row in con.execute(f"DESCRIBE {target}").fetchall()}
    for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall():
        if name not in have:
            con.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {kind}")


def _has_table(con: Any, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [SCHEMA, name]).fetchall()[0][0])


def _attach(con: Any, path: str) -> bool:
    """Open the state file in the run's connection; whether it existed (and held tables)."""
    existed = os.path.exists(path)
    if existed and os.path.isdir(path):
        raise StateError(f"'state' must be a DuckDB database file, not a directory "
                         f"(got {path!r})")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StateError(f"the state's directory {parent!r} does not exist (state={path!r})\n"
                         "Hint: create the directory first; the state file itself is created "
                         "on the first run")
    try:
        con.execute(f"ATTACH {literal(path)} AS {SCHEMA}")
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StateError(f"the state {path!r} is in use by another process (DuckDB: "
                             f"{text.splitlines()[0]})\nHint: one incremental run at a time "
                             "per state; wait for the other to finish.") from None
        raise StateError(f"cannot open the state {path!r}: {text.splitlines()[0]}\nHint: "
                         "give a DuckDB database file that sessionize made, or a new path"
                         ) from None
    except duckdb.Error as exc:
        raise StateError(f"cannot open the state {path!r}: {str(exc).splitlines()[0]}\n"
                         "Hint: give a DuckDB database file that sessionize made, or a new "
                         "path") from None
    return existed


def _meta(con: Any, path: str) -> dict[str, str]:
    names = {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [SCHEMA]).fetchall()}
    if not names:
        return {}
    if META not in names:
        raise StateError(f"{path!r} is a DuckDB database but not a sessionize state (it has "
                         f"the tables {', '.join(sorted(names))})\nHint: give a new path for "
                         "the state, or one an earlier 'sessionize run --state' made")
    meta = dict(con.execute(f"SELECT key, value FROM {SCHEMA}.{META}").fetchall())
    if meta.get("format") != STATE_FORMAT:
        raise StateError(f"the state {path!r} has layout {meta.get('format')!r}; this "
                         f"sessionize reads layout {STATE_FORMAT!r}\nHint: rebuild it: run "
                         "every input again into a new state")
    return meta


def _rules_json(rules: Rules) -> str:
    return json.dumps(rules.to_options(), sort_keys=True, default=str)


def _check_rules(meta: dict[str, str], rules: Rules, path: str) -> None:
    """Refuse a run whose rules differ from the state's, naming each difference."""
    stored = json.loads(meta["rules"])
    now = json.loads(_rules_json(rules))
    if stored == now:
        return
    shown = lambda options, key: (f"{options[key]!r}" if key in options  # noqa: E731
                                  else "the default")
    differences = [f"{key}: {shown(stored, key)} in the state, {shown(now, key)} now"
                   for key in sorted(set(stored) | set(now)) if stored.get(key) != now.get(key)]
    raise StateError(
        f"the state {path!r} was built with other rules:\n  " + "\n  ".join(differences)
        + "\nHint: run with the state's rules, or rebuild: give a new --state (or delete "
          f"{path!r}) and run every input again with the new rules.")


