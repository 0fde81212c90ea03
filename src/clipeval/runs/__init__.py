"""Runs: one step per notebook job (:mod:`~clipeval.runs.steps`), the notebook runner, the
manifest and the command line. The only layer that may import every other one.
"""
