"""The front door: :func:`run`."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from .engines.duckdb import DuckDBEngine, check_events_order
from .errors import OptionError
from .result import Result
from .rules import ON_INVALID, Rules

__all__ = ["run"]


def run(
    source: Any,
    *,
    gap: str | dt.timedelta | float | None = None,
    profile: str | None = None,
    gap_by: str | None = None,
    gaps: Mapping[str, str | dt.timedelta | float] | None = None,
    midnight: str | None = None,
    timezone_column: str = "context.timezone",
    campaign: bool | str | Sequence[str] = False,
    start_events: Sequence[str] = (),
    end_events: Sequence[str] = (),
    client_session: str | None = None,
    client_session_mode: str = "split",
    identity: str = "event",
    identity_cap: int | None = None,
    user_change: bool = False,
    passive_events: Sequence[str] = (),
    max_duration: str | dt.timedelta | float | None = None,
    enrich: bool = False,
    bounce: str | dt.timedelta | float = "10s",
    first_last: Sequence[str] = (),
    dedupe: bool = False,
    time_column: str | None = None,
    clock_skew: str | None = None,
    user_id: str = "userId",
    anonymous_id: str = "anonymousId",
    timestamp: str = "timestamp",
    message_id: str = "messageId",
    event: str = "event",
    type: str = "type",
    previous_id: str = "previousId",
    timestamp_unit: str = "auto",
    on_invalid: str = "raise",
    database: str | os.PathLike | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_directory: str | os.PathLike | None = None,
    engine: str = "duckdb",
    plan: str = "auto",
    events_order: str = "time",
    spark: Any = None,
    progress: Callable[[str, float | None], None] | None = None,
    stdin: IO[bytes] | None = None,
    _events_table: bool = True,
) -> Result:
    """Sessionize events: every event with its user and session, plus sessions and users.

    ``source`` is a path (JSON array, NDJSON, ``.gz``, Parquet, CSV), a directory,
    a glob, a list of those, ``"-"`` for NDJSON on stdin, or a pandas/polars
    DataFrame, a pyarrow Table or a DuckDB relation.

    A new session starts at a user's first event and after a gap strictly greater
    than ``gap`` (default ``"30m"``; ``"1h30m"``, ``"90s"``, ``"1d"``, a ``timedelta``
    or seconds). The user is ``userId`` if set, else ``anonymousId``. Ties on time
    are ordered by ``messageId``, then input order.

    Further rules, all optional (docs/rules.md): ``profile`` (``"web"``, ``"mobile"``,
    ``"saas"``); ``gap_by`` + ``gaps`` (a gap per event, chosen by a column's value or
    by ``"platform"``); ``midnight`` (split at local midnight in an IANA zone, or
    ``"event"`` for each event's ``timezone_column``); ``campaign`` (split when the
    UTM campaign changes); ``start_events`` / ``end_events``; ``client_session``
    (split where the SDK's session id changes; with ``client_session_mode="compare"``
    only compare, see ``sessionize.analysis.agreement``); ``passive_events`` (events such as
    ``identify`` that join the open session but do not keep it alive); ``max_duration``
    (a longer session is cut into windows that long). Each records its ``start_reason``.
    ``enrich=True`` adds landing/exit page, referrer, UTM values, device, platform,
    ``page_views``, ``screens`` and ``is_bounce`` (at most one view and shorter than
    ``bounce``) to the sessions table; ``first_last=[col, ...]`` adds
    ``first_<col>`` / ``last_<col>``.

    ``identity="event"`` (default) resolves each event on its own, as the notebook;
    ``"stitch"`` (latest identification wins) and ``"first"`` resolve anonymous events
    through the userId their anonymousId was identified as; ``"graph"`` merges the
    connected components of userIds, anonymousIds and ``alias`` calls (``previousId``),
    never merging more than ``identity_cap`` people (default 1: a device seen with two
    users is a shared device). ``user_change=True`` starts a session (reason
    ``user_change``) where a device's resolved user changes (docs/identity.md).

    Time and duplicates (both off by default): ``dedupe=True`` sets repeated
    ``messageId`` copies aside (the earliest ``receivedAt`` is kept; the others go to
    ``quarantine`` with reason ``duplicate_message_id``, counted in the summary);
    ``time_column=`` picks ``"timestamp"``, ``"originalTimestamp"`` or ``"receivedAt"``
    (an alias of ``timestamp=``); ``clock_skew="segment"`` uses
    ``receivedAt - (sentAt - originalTimestamp)`` where all three exist.

    ``on_invalid="raise"`` (default) fails on rows with a bad or missing timestamp
    or no user id, naming them; ``"quarantine"`` sets them aside in
    ``result.quarantine`` with a reason each. ``database`` keeps the engine's
    tables in a DuckDB file instead of memory; ``memory_limit`` (e.g. ``"4GB"``),
    ``threads`` and ``temp_directory`` tune DuckDB.

    ``plan`` chooses how DuckDB assigns sessions: ``"sql"`` runs the compiled SQL
    (it spills to disk under ``memory_limit``); ``"columnar"`` runs the same rules on
    Arrow arrays with numpy from one sort by (user, time), several times faster, for
    the rules whose boundaries are the gap alone (one gap or a gap per event, any
    identity policy); ``"auto"`` (default) picks the columnar plan when it runs the rules,
    the run is in memory (no ``database``, no ``memory_limit``) and the input fits in
    memory, else the SQL plan. Both give identical tables; ``result.plan`` tells which
    ran.

    ``events_order`` is the events table's row order: ``"time"`` (default; by time,
    ties by user, messageId, input order, as the notebook shows them) or ``"none"``
    (no sort: the same rows in the input's order on the columnar plan, in the engine's
    order otherwise; the fastest way to write events to files or a warehouse, where
    row order carries no meaning). Sessions and users are always in user order.

    ``_events_table`` (internal) is False when the caller never reads the events table
    (``report``, ``thresholds``): the columnar plan then reads only the narrow keys,
    not the input's columns along with them.

    ``engine="spark"`` runs the same compiled rules as Spark SQL on ``spark`` (a
    SparkSession; default: the active one) and returns a result whose tables live on
    the cluster (docs/spark.md); ``source`` may then also be a Spark DataFrame or
    cluster URIs (``s3a://...``).

    >>> import sessionize
    >>> result = sessionize.run(sessionize.sample_path())
    >>> len(result.events), len(result.sessions), len(result.users)
    (6, 4, 3)
    """
    if on_invalid not in ON_INVALID:
        raise OptionError(
            f"'on_invalid' must be one of {', '.join(ON_INVALID)} (got {on_invalid!r})")
    check_events_order(events_order)
    if engine not in ("duckdb", "spark"):
        raise OptionError(f"'engine' must be one of duckdb, spark (got {engine!r})")
    if engine == "spark" and plan == "columnar":
        raise OptionError("plan='columnar' runs on the DuckDB engine only; Spark runs the "
                          "compiled SQL (plan='auto' or 'sql')")
    if spark is not None and engine != "spark":
        raise OptionError(f"'spark' (a SparkSession) needs engine='spark' (got engine={engine!r})"
                          "\nHint: sessionize.run(source, engine='spark', spark=spark)")
    rules = Rules.from_options(
        gap=gap, profile=profile, gap_by=gap_by, gaps=gaps, midnight=midnight,
        timezone_column=timezone_column, campaign=campaign, start_events=start_events,
        end_events=end_events, client_session=client_session,
        client_session_mode=client_session_mode, identity=identity,
        identity_cap=identity_cap, user_change=user_change,
        passive_events=passive_events,
        max_duration=max_duration, enrich=enrich,
        bounce=bounce, first_last=first_last, dedupe=dedupe,
        time_column=time_column, clock_skew=clock_skew, timestamp_unit=timestamp_unit,
        user_id=user_id, anonymous_id=anonymous_id, timestamp=timestamp,
        message_id=message_id, event=event, type=type, previous_id=previous_id)
    if engine == "spark":
        from .engines.spark import run_spark

        return run_spark(source, rules, spark=spark, on_invalid=on_invalid, progress=progress,
                         duckdb_options={"database": database, "memory_limit": memory_limit,
                                         "threads": threads, "temp_directory": temp_directory},
                         events_order=events_order)
    engine = DuckDBEngine(database=database, memory_limit=memory_limit, threads=threads,
                          temp_directory=temp_directory, progress=progress, plan=plan,
                          events_order=events_order, events_table=_events_table)
    try:
        outcome = engine.run(source, rules, on_invalid=on_invalid, stdin=stdin)
    except BaseException:
        engine.close()
        raise
    return Result(engine, gap_us=rules.gap_us, compiled=outcome["compiled"],
                  source=outcome["loaded"].description, quarantined=outcome["invalid_count"])
