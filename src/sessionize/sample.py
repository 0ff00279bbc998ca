"""The bundled sample: the starting notebook's six events."""

from __future__ import annotations

from importlib import resources

__all__ = ["sample_path"]


def sample_path() -> str:
    """Path of the bundled sample events (a JSON array, the notebook's input format).

    >>> sample_path().endswith("notebook_events.json")
    True
    """
    return str(resources.files("sessionize") / "data" / "notebook_events.json")
