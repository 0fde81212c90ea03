"""The run report: one self-contained HTML page per run folder, read through the run-folder layout."""
