"""Evaluation jobs over the embedding engine: pair scoring, retrieval and free-text search, the scenes benchmark."""
