"""How derived sessions agree with the sessions a client SDK reported.

Run with ``client_session="context.sessionId"`` (and ``client_session_mode="compare"``
to derive sessions by the other rules only), then::

    >>> import sessionize
    >>> from sessionize.analysis.agreement import client_session_agreement
    >>> result = sessionize.run(sessionize.sample_path(), client_session="properties.feature",
    ...                         client_session_mode="compare")
    >>> client_session_agreement(result)["client_sessions"]
    2

A client session is *split* when its events fall into more than one derived session;
a derived session *merges* client sessions when it holds events of more than one.
Events without a client session id are not counted.
"""

from __future__ import annotations

from typing import Any

from ..errors import OptionError

__all__ = ["client_session_agreement"]


def client_session_agreement(result: Any) -> dict[str, int]:
    """Counts: client_sessions, derived_sessions (with a client id), split, merged, identical."""
    con = result.engine.con
    result.engine.ensure_assign()
    columns = con.table("sz_assign").columns
    if "__sz_client_session" not in columns:
        raise OptionError("client_session_agreement needs a run with client_session= "
                          "(got a run without it)\nHint: sessionize.run(..., "
                          "client_session='context.sessionId', client_session_mode='compare')")
    row = con.execute("""
        WITH pairs AS (
            SELECT DISTINCT __sz_client_session AS client, __sz_key AS derived
            FROM sz_assign WHERE __sz_client_session IS NOT NULL
        ), per_client AS (SELECT client, count(*) AS n FROM pairs GROUP BY client),
        per_derived AS (SELECT derived, count(*) AS n FROM pairs GROUP BY derived)
        SELECT (SELECT count(*) FROM per_client),
               (SELECT count(*) FROM per_derived),
               (SELECT count(*) FROM per_client WHERE n > 1),
               (SELECT count(*) FROM per_derived WHERE n > 1),
               (SELECT count(*) FROM per_client c WHERE n = 1 AND (
                    SELECT n FROM per_derived d JOIN pairs p ON p.derived = d.derived
                    WHERE p.client = c.client) = 1)
    """).fetchall()[0]
    keys = ("client_sessions", "derived_sessions", "split", "merged", "identical")
    return dict(zip(keys, (int(v) for v in row)))
