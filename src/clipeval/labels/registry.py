"""One switch over the labellers: ``build_labeller("classifier", model=..., threshold=...)``."""

from __future__ import annotations

from collections.abc import Sequence

from clipeval.labels.base import Labeller

LABELLERS = ("classifier", "zero-shot", "captioner", "api")


def build_labeller(kind: str, model: str | None = None, threshold: float | None = None, top_k: int = 1,
                   vocabulary: Sequence[str] = (), device: str = "auto", batch_size: int = 16,
                   generate_kwargs: dict | None = None, progress: bool = True) -> Labeller:
    """A labeller of kind ``classifier`` (timm), ``zero-shot`` (a checkpoint over ``vocabulary``),
    ``captioner`` (transformers image-to-text) or ``api`` (an OpenAI-compatible chat API).

    ``model`` and ``threshold`` default to each labeller's own defaults (``zero-shot`` needs
    ``model``, a checkpoint spec). For the captioner, ``threshold`` is its ``min_confidence``.

    Raises:
        ValueError: an unknown kind, or a zero-shot labeller without a checkpoint or vocabulary.
    """
    from clipeval.eval.embed import EmbedOptions

    settings = {key: value for key, value in (("model", model), ("threshold", threshold)) if value is not None}
    if kind == "classifier":
        from clipeval.labels.classifier import Classifier

        return Classifier(**settings, top_k=top_k, device=device, batch_size=batch_size, progress=progress)
    if kind == "zero-shot":
        from clipeval.labels.zero_shot import ZeroShot

        if model is None:
            raise ValueError("the zero-shot labeller needs --model, a checkpoint spec")
        return ZeroShot(model, vocabulary, threshold if threshold is not None else 0.5, top_k, device,
                        EmbedOptions(batch_size=batch_size))
    if kind == "captioner":
        from clipeval.labels.captioner import Captioner

        return Captioner(**{"model": model} if model else {}, device=device, batch_size=batch_size,
                         generate_kwargs=generate_kwargs, min_confidence=threshold or 0.0, progress=progress)
    if kind == "api":
        from clipeval.labels.api import ApiCaptioner

        return ApiCaptioner(model=model, progress=progress)
    raise ValueError(f"unknown labeller {kind!r}; known: {', '.join(LABELLERS)}")
