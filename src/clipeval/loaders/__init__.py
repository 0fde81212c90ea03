"""Loaders for external model families (transformers, open_clip)."""
