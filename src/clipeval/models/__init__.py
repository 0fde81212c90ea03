"""Models: the :class:`~clipeval.models.encoder.Encoder` interface, checkpoint specs and their
registry, the checkpoint catalogue, one module per family (``hf``, ``open_clip``, ``baseline``,
``dual``) and the tiny-checkpoint builder. Imports :mod:`clipeval.data` at most.
"""
