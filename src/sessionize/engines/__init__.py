"""Engines run the compiled rules. DuckDB is the embedded default."""
