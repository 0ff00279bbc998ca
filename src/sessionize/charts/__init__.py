"""Charts as self-contained SVG (svg.py), and PNG through headless Chromium (png.py)."""
