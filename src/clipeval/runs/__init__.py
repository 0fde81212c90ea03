"""Runs: one step per job (params + run folder -> files + manifest), the options, the command line, the notebooks."""
