"""Data: pairs sources, image reading and fetching, caption checks, embedded datasets, retrieval-set tables.

Imports nothing of clipeval but :mod:`clipeval.paths` and :mod:`clipeval.atomic`; no torch.
"""
