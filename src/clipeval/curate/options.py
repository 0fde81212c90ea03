"""Curation's limits, importable without numpy or pandas (the command line's defaults)."""

EXACT_LIMIT = 50_000_000  # rows whose scores are gathered in memory (8 bytes each) for an exact cut
