"""Incremental runs: a state that new, late and re-delivered events update exactly.

``run(source, state="state.duckdb")`` (``sessionize run NEW... --state STATE``) keeps the
tables of every run so far in a DuckDB database file and, for each new batch, recomputes
only the users the batch touches, with the same engine a full run uses
(:mod:`sessionize.state.incremental`; docs/incremental.md).
"""
