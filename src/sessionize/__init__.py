"""sessionize: turn product-analytics events into sessions, exactly and explainably.

>>> import sessionize
>>> result = sessionize.run(sessionize.sample_path(), gap="30m")
>>> result.sessions.to_arrow().column("session_id").to_pylist()
[1, 1, 2, 1]
"""

from .analysis.thresholds import thresholds
from .api import run
from .durations import parse_duration
from .errors import (
    DataError,
    InputError,
    InvalidEventsError,
    MalformedJSONError,
    OptionError,
    SessionizeError,
)

# The front-door functions `report` and `thresholds` share their modules' names;
# importing them here binds sessionize.report / sessionize.analysis.thresholds to the functions.
# Reach the modules' contents with `from sessionize.analysis.thresholds import ...`.
from .report import report
from .result import Result, Table
from .sample import sample_path

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "InputError",
    "InvalidEventsError",
    "MalformedJSONError",
    "OptionError",
    "Result",
    "SessionizeError",
    "Table",
    "__version__",
    "parse_duration",
    "report",
    "run",
    "sample_path",
    "thresholds",
]
