"""One switch over the labellers, and their options: ``build_labeller(LabelOptions("classifier", model=...))``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clipeval.embed.options import EmbedOptions

if TYPE_CHECKING:
    from clipeval.labels.base import Labeller

LABELLERS = ("classifier", "zero-shot", "captioner", "api")


@dataclass(frozen=True)
class LabelOptions:
    """Which labeller labels the images, and how: the ``build-evalset`` flags are these fields (their help and
    docs/eval-sets.md say what each does); ``vocabulary`` is the zero-shot labeller's classes."""

    labeller: str = field(default="classifier", metadata={
        "choices": LABELLERS, "help": "classifier (timm), zero-shot (a checkpoint over --vocabulary), captioner "
                                      "(transformers image-to-text) or api (OpenAI-compatible; CLIPEVAL_LABEL_API_*)"})
    model: str | None = field(default=None, metadata={
        "help": "timm name or folder, checkpoint spec, captioning model or API model (default: the labeller's)"})
    threshold: float | None = field(default=None, metadata={
        "help": "smallest confidence kept (classifier default 0.85, zero-shot 0.5, captioner 0)"})
    top_k: int = field(default=1, metadata={"help": "most probable classes an image may get"})
    vocabulary: tuple[str, ...] = field(default=(), metadata={"cli": False})
    batch_size: int = field(default=16, metadata={"help": "images per forward pass"})


def build_labeller(options: LabelOptions, device: str = "auto", progress: bool = True) -> Labeller:
    """The labeller ``options`` names, on ``device``.

    Raises:
        ValueError: an unknown labeller, or a zero-shot labeller without a checkpoint or vocabulary.
    """
    settings = {key: value for key, value in (("model", options.model), ("threshold", options.threshold))
                if value is not None}
    if options.labeller == "classifier":
        from clipeval.labels.classifier import Classifier

        return Classifier(**settings, top_k=options.top_k, device=device, batch_size=options.batch_size,
                          progress=progress)
    if options.labeller == "zero-shot":
        from clipeval.labels.zero_shot import ZeroShot

        if options.model is None:
            raise ValueError("the zero-shot labeller needs --model, a checkpoint spec")
        return ZeroShot(options.model, options.vocabulary, settings.get("threshold", 0.5), options.top_k,
                        EmbedOptions(batch_size=options.batch_size, device=device))
    if options.labeller == "captioner":
        from clipeval.labels.captioner import Captioner

        return Captioner(**{"model": options.model} if options.model else {}, device=device,
                         batch_size=options.batch_size, min_confidence=options.threshold or 0.0, progress=progress)
    if options.labeller == "api":
        from clipeval.labels.api import ApiCaptioner

        return ApiCaptioner(model=options.model, progress=progress)
    raise ValueError(f"unknown labeller {options.labeller!r}; known: {', '.join(LABELLERS)}")
