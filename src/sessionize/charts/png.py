"""PNG export through headless Chromium, the browser the report is tested in.

Why not matplotlib: the charts are drawn once, as SVG; rasterising that SVG in a
browser gives the same picture without a second plotting implementation or a new
dependency. Chromium is found as ``$SESSIONIZE_CHROMIUM`` or on ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

__all__ = ["chromium_flags", "find_chromium", "svg_to_png"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("PNG export needs headless Chromium; install it with "
                "'apt-get install chromium' (Debian/Ubuntu) or 'brew install --cask chromium', "
                "or set SESSIONIZE_CHROMIUM to a Chrome/Chromium binary. SVG needs nothing.")


def find_chromium() -> str | None:
    """The Chromium/Chrome binary to use, or None."""
    explicit = os.environ.get("SESSIONIZE_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_flags(profile_dir: str) -> list[str]:
    """Flags for an offline, sandbox-free, quiet headless run (as in CI containers)."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile_dir}"]


def svg_to_png(svg: str, path: str | None = None) -> bytes:
    """Render one SVG at its own size; returns the PNG bytes (also written to ``path``)."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    width = int(float(re.search(r'width="([\d.]+)"', svg).group(1)))
    height = int(float(re.search(r'height="([\d.]+)"', svg).group(1)))
    with tempfile.TemporaryDirectory(prefix="sessionize-png-") as tmp:
        page = os.path.join(tmp, "chart.html")
        out = os.path.join(tmp, "chart.png")
        with open(page, "w", encoding="utf-8") as fh:
            fh.write('<!doctype html><meta charset="utf-8">'
                     f'<body style="margin:0;background:#fff">{svg}</body>')
        subprocess.run(
            [binary, *chromium_flags(os.path.join(tmp, "profile")), f"--screenshot={out}",
             f"--window-size={width},{height}", "--default-background-color=ffffffff",
             "file://" + page],
            check=True, capture_output=True, timeout=120)
        with open(out, "rb") as fh:
            data = fh.read()
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(data)
    return data
