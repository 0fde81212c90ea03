"""The jobs: what each one writes, records and shows, declared once and listed in :mod:`clipeval.jobs.registry`.

How the slices fit and how to add one: docs/architecture.md.
"""
