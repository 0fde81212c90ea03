"""clipeval: measure how well captions match images with CLIP-family models."""

__version__ = "0.1.0"
