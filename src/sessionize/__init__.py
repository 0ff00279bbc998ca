"""sessionize: turn product-analytics events into sessions, exactly and explainably.

>>> import sessionize
>>> result = sessionize.run(sessionize.sample_path(), gap="30m")
>>> result.sessions.to_arrow().column("session_id").to_pylist()
[1, 1, 2, 1]

The front door is a few verbs and the values they take:

- :func:`run` sessionizes a source and returns a :class:`Result` (three tables);
- :func:`thresholds` and :func:`report` analyse a source or a finished result;
- :func:`to_sql` writes the rules as one standalone query per table for a warehouse
  (named so because ``sessionize.sql`` is the package holding the compiler);
- :class:`Rules`, :class:`Columns`, :class:`DuckDB`, :class:`Spark` and :class:`Postgres`
  are the option objects ``run`` takes (each also given as flat keywords: ``run(path, gap="1h")``).

Where things live (docs/architecture.md tells more)::

    rules.py      the rule set and every option, declared once
    io/           reading inputs (inputs.py) and writing outputs (outputs.py)
    sql/          the rules compiled to SQL through sqlglot; dialect rewrites; identity SQL;
                  standalone.py: one query per table for a warehouse
    columnar/     the columnar plan: one (user, time) sort, one scan, on Arrow and numpy
    engines/      base.py (the shared pipeline), duckdb.py, spark.py, postgres.py
    result.py     what a run returns
    api.py        run()
    analysis/     threshold analysis, client-session agreement
    charts/       SVG (and PNG) charts
    report/       the HTML report
    cli/          the command line over the same API
"""

from ._version import __version__
from .analysis.thresholds import thresholds
from .api import run, to_sql
from .durations import parse_duration
from .engines.duckdb import DuckDB
from .engines.postgres import Postgres
from .engines.spark import Spark
from .errors import (
    DataError,
    InputError,
    InvalidEventsError,
    MalformedJSONError,
    OptionError,
    OutputError,
    SessionizeError,
    StateError,
)
from .reporting import report
from .result import Result, Table
from .rules import Columns, Rules
from .sample import sample_path

__all__ = [
    "Columns",
    "DataError",
    "DuckDB",
    "InputError",
    "InvalidEventsError",
    "MalformedJSONError",
    "OptionError",
    "OutputError",
    "Postgres",
    "Result",
    "Rules",
    "SessionizeError",
    "Spark",
    "StateError",
    "Table",
    "__version__",
    "parse_duration",
    "report",
    "run",
    "sample_path",
    "thresholds",
    "to_sql",
]
