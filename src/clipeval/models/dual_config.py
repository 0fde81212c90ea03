"""The dual encoder's sizes (no torch import: they build the ``train`` command's flags)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class DualEncoderConfig:
    """Sizes of a dual encoder.

    Attributes:
        embed_dim: dimension of the shared embedding space.
        image_size: side of the square input image in pixels.
        text_dim: DistilBERT hidden size (ignored with ``pretrained``).
        text_layers: DistilBERT layers (ignored with ``pretrained``).
        text_heads: DistilBERT attention heads (ignored with ``pretrained``).
        text_hidden_dim: DistilBERT feed-forward size (ignored with ``pretrained``).
        text_dropout: DistilBERT dropout and attention dropout (ignored with ``pretrained``).
        text_init_std: std of DistilBERT's random weight init (its ``initializer_range``; 0.02
            in BERT). A small text tower needs larger weights at init: with 0.02 the
            end-of-text token barely depends on the other words, captions that differ in one
            word get near-identical embeddings, and training collapses to constant embeddings.
        context_length: the most tokens a caption keeps, ``[CLS]`` and ``[SEP]`` included.
        vocab_size: the most WordPiece tokens in the offline tokenizer's vocabulary.
        pool_heads: attention-pooling heads (must divide EfficientNet-B0's 1280 channels).
        stochastic_depth: EfficientNet-B0 stochastic-depth probability.
        pretrained: start from ``distilbert-base-uncased`` and ImageNet EfficientNet-B0.
    """

    embed_dim: int = field(default=128, metadata={"help": "dimension of the shared embedding space"})
    image_size: int = field(default=48, metadata={"help": "input image side in pixels"})
    text_dim: int = field(default=128, metadata={"help": "DistilBERT hidden size"})
    text_layers: int = field(default=2, metadata={"help": "DistilBERT layers"})
    text_heads: int = field(default=4, metadata={"help": "DistilBERT attention heads"})
    text_hidden_dim: int = field(default=512, metadata={"help": "DistilBERT feed-forward size"})
    text_dropout: float = field(default=0.0, metadata={"help": "DistilBERT dropout"})
    text_init_std: float = field(default=0.1, metadata={"help": "std of DistilBERT's random init"})
    context_length: int = field(default=32, metadata={"help": "most tokens a caption keeps"})
    vocab_size: int = field(default=1000, metadata={"help": "most WordPiece tokens of the offline tokenizer"})
    pool_heads: int = field(default=8, metadata={"help": "attention-pooling heads"})
    stochastic_depth: float = field(default=0.0, metadata={"help": "EfficientNet-B0 stochastic-depth probability"})
    pretrained: bool = field(default=False, metadata={
        "help": "start from distilbert-base-uncased and ImageNet EfficientNet-B0 (needs the network)"})

    @classmethod
    def from_dict(cls, values: dict) -> DualEncoderConfig:
        """Build from a dict, ignoring keys that are not fields (e.g. ``text_config``)."""
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})
