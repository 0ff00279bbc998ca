"""Write the rules as a dbt package: ``sessionize dbt DIR``.

The package runs with ``dbt build`` as it is (given a profile named ``sessionize``):

- ``models/sources.yml``: the raw events, ``source('segment', 'tracks')`` (schema and
  table set when writing, overridable with the ``sessionize_source_schema`` /
  ``sessionize_source_table`` vars);
- ``models/sessionize_events.sql``: every event with its user and session (the standalone
  events query of :mod:`sessionize.sql.standalone`);
- ``models/sessionize_sessions.sql``: one row per session. It reads the source, not the
  events model: the last event of a session is decided by the full tie order (time,
  messageId, input order), and the events table does not carry the input order;
- ``models/sessionize_users.sql``: one row per user, from the sessions model;
- ``models/schema.yml``: tests (unique and not-null ``session_key``, not-null users,
  accepted ``start_reason`` values, one row per user);
- ``README.md`` and ``dbt_project.yml``.

Files are written to a staging directory and moved into place together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import sqlglot

from ..errors import OptionError
from ..rules import START_REASONS, Rules
from ..sql.dialects import rewrite
from ..sql.standalone import standalone_sql

__all__ = ["write_project"]

_SOURCE = "__sz_dbt_source__"
_JINJA_SOURCE = "{{ source('segment', 'tracks') }}"

PROJECT = """\
name: sessionize_models
version: "1.0.0"
config-version: 2
profile: sessionize
model-paths: ["models"]
models:
  sessionize_models:
    +materialized: table
vars:
  sessionize_source_schema: "{schema}"
  sessionize_source_table: "{table}"
"""

SOURCES = """\
version: 2
sources:
  - name: segment
    schema: "{{ var('sessionize_source_schema') }}"
    tables:
      - name: tracks
        identifier: "{{ var('sessionize_source_table') }}"
"""

SCHEMA = """\
version: 2
models:
  - name: sessionize_events
    description: Every event with its resolved user and session (sessionize run's events).
    columns:
      - name: resolved_user
        data_tests: [not_null]
      - name: session_id
        data_tests: [not_null]
      - name: session_key
        data_tests: [not_null]
      - name: start_reason
        data_tests:
          - accepted_values:
              arguments:
                values: [{reasons}]
  - name: sessionize_sessions
    description: One row per session, with why it started.
    columns:
      - name: session_key
        data_tests: [unique, not_null]
      - name: resolved_user
        data_tests: [not_null]
      - name: start_reason
        data_tests:
          - not_null
          - accepted_values:
              arguments:
                values: [{reasons}]
  - name: sessionize_users
    description: One row per user.
    columns:
      - name: resolved_user
        data_tests: [unique, not_null]
"""

#: The users model: the compiler's users stage over the sessions model.
USERS = """
SELECT resolved_user, count(*) AS session_count, CAST(sum(event_count) AS BIGINT) AS event_count,
    min(session_start) AS first_seen, max(session_end) AS last_seen
FROM __sz_dbt_sessions__ GROUP BY resolved_user ORDER BY resolved_user
"""

README = """\
# sessionize models

Written by `sessionize dbt` (sessionize {version}) for **{dialect}**, with these rules:

```toml
{rules}
```

Models: `sessionize_events` (every event with its user and session), `sessionize_sessions`
(one row per session, with why it started), `sessionize_users` (one row per user). They
give the tables `sessionize run` gives on the same events. The sessions model reads the
source rather than the events model: a session's last event is chosen by the full tie
order (time, messageId, input order), which the events table does not carry.

The raw events are `source('segment', 'tracks')`: schema `{schema}`, table `{table}`
(override with `--vars '{{sessionize_source_schema: raw, sessionize_source_table: events}}'`).

Run it with a profile named `sessionize` in `~/.dbt/profiles.yml`:

```bash
dbt build --project-dir {directory}
```

Regenerate with the same command after changing rules; do not edit the models by hand.
"""


def write_project(rules: Rules, directory: str | os.PathLike, *, dialect: str = "duckdb",
                  source_schema: str = "segment", source_table: str = "tracks",
                  schema: Mapping[str, str] | None = None, order_by: str | None = None,
                  version: str = "") -> list[str]:
    """Write the dbt package for ``rules`` into ``directory``; returns the files written."""
    for name, value in (("source_schema", source_schema), ("source_table", source_table)):
        if not value or not value.replace("_", "").isalnum():
            raise OptionError(f"{name!r} must be a plain SQL name (got {value!r})")

    def model(table: str) -> str:
        sql = standalone_sql(rules, dialect=dialect, source=_SOURCE, table=table,
                             schema=schema, order_by=order_by)
        if "{{" in sql or "{%" in sql:  # never happens with the compiled rules; dbt would
            raise OptionError("the compiled SQL holds Jinja delimiters")  # misread them
        header = f"-- Written by sessionize {version} for {dialect}; regenerate, do not edit.\n"
        return header + sql.replace(_SOURCE, _JINJA_SOURCE).rstrip().rstrip(";") + "\n"

    header = f"-- Written by sessionize {version} for {dialect}; regenerate, do not edit.\n"
    users = rewrite(sqlglot.parse_one(USERS, read="duckdb"), dialect).sql(dialect=dialect,
                                                                          pretty=True)
    users = header + users.replace("__sz_dbt_sessions__", "{{ ref('sessionize_sessions') }}")
    reasons = ", ".join(START_REASONS)
    options = rules.to_options()
    toml = "\n".join(f"{k} = {_toml(v)}" for k, v in options.items()) or "# the notebook's"
    files = {
        "dbt_project.yml": PROJECT.format(schema=source_schema, table=source_table),
        "models/sources.yml": SOURCES,
        "models/schema.yml": SCHEMA.format(reasons=reasons),
        "models/sessionize_events.sql": model("events"),
        "models/sessionize_sessions.sql": model("sessions"),
        "models/sessionize_users.sql": users + "\n",
        "README.md": README.format(version=version, dialect=dialect, rules=toml,
                                   schema=source_schema, table=source_table,
                                   directory=os.fspath(directory)),
    }
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise OptionError(f"output {os.fspath(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sessionize-tmp-", dir=out))
    try:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        written = []
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out / name)
            written.append(os.fspath(out / name))
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
