"""Progress on stderr for long runs; the stream and clock are injected so tests can read it.

Data never goes to the progress stream, and nothing is drawn unless asked for
(the CLI asks when stderr is a terminal, or with ``--progress``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Draws ``stage [#####.....] 42%  3.1s`` lines; call it as ``progress(stage, fraction)``."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic,
                 interactive: bool = True, width: int = 24):
        self.stream = stream
        self.clock = clock
        self.interactive = interactive
        self.width = width
        self._start = clock()
        self._stage: str | None = None
        self._lock = threading.Lock()

    def __call__(self, stage: str, fraction: float | None) -> None:
        with self._lock:
            elapsed = self.clock() - self._start
            if fraction is None:
                bar = ""
            else:
                filled = round(fraction * self.width)
                bar = f" [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}"
            line = f"{stage}{bar}  {elapsed:.1f}s"
            if self.interactive:
                self.stream.write("\r\033[K" + line)
            elif stage != self._stage:  # a log, not an animation: one line per stage
                self.stream.write(line + "\n")
            self._stage = stage
            self.stream.flush()

    def done(self) -> None:
        with self._lock:
            if self.interactive and self._stage is not None:
                self.stream.write("\r\033[K")
                self.stream.flush()
