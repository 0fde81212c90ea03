"""Notebook studies: what only the narrative notebooks call (curation, sharded runs, pseudo-labels)."""
