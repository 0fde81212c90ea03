"""Evaluation: the one embedding path (:mod:`~clipeval.eval.embed`), pair scoring, retrieval
(block-wise ranking and metrics), bootstrap, checkpoint comparison, the scenes benchmark, and
stage timing. Imports :mod:`clipeval.models` and :mod:`clipeval.data`.
"""
