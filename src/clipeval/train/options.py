"""Training's options: training the dual encoder, the scenes' classifier, fine-tuning and its data (no torch
import: they build the commands' flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipeval.embed.options import device_option, precision_option, progress_option
from clipeval.models.dual_config import DualEncoderConfig

MODES = ("full", "lit", "lora")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run: the command line's flags are these fields, their help says what each does
    (docs/fine-tuning.md, "Training")."""

    mode: str = field(default="full", metadata={"choices": MODES, "help": "full fine-tuning, lit (locked image "
                                                                          "tower) or lora (attention adapters)"})
    epochs: int = field(default=1, metadata={"help": "passes over the training images"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps (overrides --epochs)"})
    batch_size: int = field(default=32, metadata={"help": "pairs per micro-batch"})
    accumulate: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.1, metadata={"help": "share of steps warming up"})
    hard_negatives: bool = field(default=False, metadata={
        "help": "add one hard-negative caption per image: the pairs' rows with match=False (NegCLIP)"})
    negative_kinds: tuple[str, ...] = field(default=(), metadata={
        "flag": "--negative-kind", "help": "keep only hard negatives of this negative_kind (repeatable)"})
    lora_rank: int = field(default=8, metadata={"help": "adapter rank with --mode lora"})
    lora_alpha: float = field(default=16.0, metadata={"help": "adapter scale numerator"})
    seed: int = field(default=0, metadata={"help": "seed of the batches, captions and adapter init"})
    device: str = device_option()
    precision: str = precision_option()
    eval_batch_size: int = field(default=64, metadata={"help": "batch size when scoring evaluation sets"})
    save_every: int = field(default=0, metadata={
        "help": "steps between saved states for --resume (0: at each epoch's end)"})
    progress: bool = progress_option()

    def check(self) -> None:
        """Raise ``ValueError`` on settings that cannot run."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("epochs", "batch_size", "accumulate", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


@dataclass(frozen=True)
class FinetuneData:
    """Where the training pairs and the evaluation sets come from (the command line's flags are these fields)."""

    pairs: str | None = field(default=None, metadata={
        "help": "training pairs (required): any pairs source (table, folder, COCO, HF dataset); rows with "
                "match=False are hard negatives"})
    eval_set: str | None = field(default=None, metadata={"help": "held-out set: an eval-set folder "
                                                                 "(build-evalset)"})
    eval_pairs: str | None = field(default=None, metadata={"help": "held-out set: a pairs source"})
    holdout: float | None = field(default=None, metadata={
        "help": "held-out set: this share of the training images (default 0.2 when no other is given)"})
    forget_set: str | None = field(default=None, metadata={
        "help": "a second set the fine-tuning never sees (what it forgot): an eval-set folder"})
    forget_pairs: str | None = field(default=None, metadata={"help": "the same, as a pairs source"})


@dataclass
class TrainConfig:
    """Training the dual encoder from scratch (the ``train`` command's flags are these fields and the model's).

    ``hard_negatives`` adds one hard-negative caption per image to the image-to-text side of the loss
    (:func:`clipeval.train.common.contrastive_loss`); every training scene must then have one.
    """

    epochs: int = field(default=20, metadata={"help": "passes over the training scenes"})
    batch_size: int = field(default=64, metadata={"help": "pairs per batch"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "share of the steps warming up"})
    hard_negatives: bool = field(default=False, metadata={
        "help": "add one hard-negative caption per image to the loss"})
    seed: int = field(default=0, metadata={"help": "seed of the init, the batch order and the captions"})
    device: str = device_option("cpu")
    eval_batch_size: int = field(default=256, metadata={"help": "batch size when encoding the validation split"})
    progress: bool = progress_option()
    model: DualEncoderConfig = field(default_factory=DualEncoderConfig)


@dataclass
class ClassifierConfig:
    """Training the scenes' classifier (the ``train-scene-classifier`` command's flags are these fields)."""

    architecture: str = field(default="resnet10t", metadata={"help": "a timm architecture, trained from scratch"})
    image_size: int = field(default=64, metadata={"help": "input side in pixels"})
    epochs: int = field(default=4, metadata={"help": "passes over the training scenes"})
    batch_size: int = field(default=64, metadata={"help": "images per batch"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "weight init and batch order"})
    device: str = device_option()
