"""A throw-away PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` in a temporary
directory, on loopback, on a free port, stopped when the test run ends.

Test modules take the ``postgres_dsn`` fixture (``from postgres_cluster import
postgres_dsn``). The binaries are found through ``SESSIONIZE_PG_BIN`` (the directory of
``pg_ctl``), else ``pg_config --bindir``, else Debian's ``/usr/lib/postgresql/*/bin``,
else ``PATH``. Without them the tests skip, naming what to install, unless ``CI`` is set:
in CI they must run. As root, the cluster runs as the ``postgres`` user (``initdb``
refuses root). Tests share the one cluster; each gets a database of its own.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

_CLUSTER: dict[str, str] | None = None
__all__ = ["copy_from_duckdb", "dsn", "postgres_dsn", "postgres_server"]


def _bindir() -> str | None:
    given = os.environ.get("SESSIONIZE_PG_BIN")
    if given:
        return given
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        path = found.stdout.strip()
        if found.returncode == 0 and os.path.exists(os.path.join(path, "pg_ctl")):
            return path
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if debian:
        return os.path.dirname(debian[-1])
    on_path = shutil.which("pg_ctl")
    return os.path.dirname(on_path) if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start() -> dict[str, str]:
    """Start the cluster once per test run (an ``atexit`` hook stops it)."""
    global _CLUSTER
    if _CLUSTER is not None:
        return _CLUSTER
    bindir = _bindir()
    if bindir is None:
        reason = ("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: "
                  "apt-get install postgresql, or set SESSIONIZE_PG_BIN")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="sessionize-pg-")
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                                 "--auth=trust", "--encoding=UTF8", "--no-instructions"]),
                   check=True, capture_output=True)
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} -k {root} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    subprocess.run(_as_postgres([os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options,
                                 "-l", os.path.join(root, "log"), "-w", "start"]),
                   check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(_as_postgres([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    _CLUSTER = {"host": "127.0.0.1", "port": str(port), "root": root}
    return _CLUSTER


def dsn(database: str = "postgres") -> str:
    cluster = start()
    return f"postgresql://postgres@{cluster['host']}:{cluster['port']}/{database}"


@pytest.fixture(scope="session")
def postgres_server() -> dict[str, str]:
    return start()


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """A fresh database on the shared cluster (dropped afterwards)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn(), autocommit=True) as con:
        try:  # a linguistic collation, as most servers have: text must still sort by bytes
            con.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
                        "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
        except psycopg.Error:
            con.execute(f"CREATE DATABASE {name}")
    yield dsn(name)
    with psycopg.connect(dsn(), autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


#: DuckDB types as PostgreSQL spells them (nested values travel as JSON).
_PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint",
             "TINYINT": "smallint", "DOUBLE": "double precision", "FLOAT": "real",
             "BOOLEAN": "boolean", "TIMESTAMP WITH TIME ZONE": "timestamptz",
             "TIMESTAMP": "timestamp", "DATE": "date", "JSON": "json", "UUID": "uuid"}


def pg_type(duckdb_type: str) -> str:
    kind = duckdb_type.upper()
    if kind.startswith("DECIMAL"):
        return "numeric"
    if kind.startswith(("TIMESTAMP_", "TIMESTAMP(")):
        return "timestamp"
    return _PG_TYPES.get(kind, "json")


def copy_from_duckdb(duck, relation: str, pg, table: str) -> dict[str, str]:
    """Copy a DuckDB relation into a new PostgreSQL table, row by row in its order
    (PostgreSQL keeps that order in a fresh heap: ctid order). Returns the DuckDB schema."""

    rel = duck.sql(f"SELECT * FROM {relation}")
    schema = {c: str(t) for c, t in zip(rel.columns, rel.types)}
    columns = ", ".join(f'"{c}" {pg_type(t)}' for c, t in schema.items())
    pg.execute(f'CREATE TABLE {table} ({columns})')
    json_cols = [c for c, t in schema.items() if pg_type(t) == "json"]
    selected = ", ".join(f'CAST(to_json("{c}") AS VARCHAR)' if c in json_cols and
                         schema[c] != "JSON" else f'"{c}"' for c in schema)
    rows = duck.sql(f"SELECT {selected} FROM {relation}").fetchall()
    names = ", ".join(f'"{c}"' for c in schema)
    with pg.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    pg.commit()
    return schema
