"""Curation: rules and presets, and one engine that applies them to scored shards (no torch: a contract)."""
