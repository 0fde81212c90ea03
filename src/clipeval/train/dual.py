"""Train the dual encoder on the captioned scenes (the training loop only; docs/dual-encoder.md, "Training").

CLIP's recipe, optionally NegCLIP's hard negatives, seeded and deterministic on the CPU. Validation goes
through the same embedding path as any evaluation (:mod:`clipeval.embed.engine`); the benchmark of a trained
model is :func:`clipeval.eval.scenes_benchmark.evaluate_scenes`.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.data.scenes import read_scenes_retrieval
from clipeval.embed.engine import embed_texts, encode_pixels, prepare_pixels
from clipeval.eval.scenes_benchmark import KS, summarize_retrieval
from clipeval.models.dual import (
    DualEncoder,
    DualEncoderModel,
    build_dual_encoder,
    image_transform,
    save_dual,
)
from clipeval.models.encoder import resolve_device
from clipeval.paths import DUAL_MODEL_DIR, SCENES_DIR
from clipeval.progress import progress_bar
from clipeval.train.common import build_optimizer, contrastive_loss, deterministic
from clipeval.train.options import TrainConfig


@torch.inference_mode()
def _validation_scores(model: DualEncoderModel, tokenizer, pixels: torch.Tensor, val: RetrievalSet,
                       batch_size: int, device: torch.device) -> np.ndarray:
    """Cosine scores ``(queries, images)`` of the validation split, images preprocessed once.

    The model is wrapped as the :class:`~clipeval.models.dual.DualEncoder` that ``dual:``
    loads and encoded through :mod:`clipeval.embed.engine`, so the numbers are those of scoring
    the saved model (eval mode); it is put back in train mode afterwards.
    """
    encoder = DualEncoder(model, tokenizer, "dual:<training>", device)
    images = encode_pixels(encoder, pixels, batch_size)
    texts = embed_texts(encoder, val.queries["text"].tolist(), batch_size)
    model.train()
    return (texts.of(np.arange(len(val.queries))) @ images.T).numpy()


@dataclass
class TrainingScenes:
    """The training split, one entry per scene."""

    images: list[Path]
    captions: list[list[str]]
    negatives: list[list[str]]


def _training_scenes(scenes_dir: Path) -> TrainingScenes:
    """Per training scene: its image, its true captions and its hard negatives."""
    pairs = pd.read_csv(scenes_dir / "pairs_train.csv", keep_default_na=False)
    grouped = pairs[pairs["match"]].groupby("scene_id", sort=False)
    ids = list(grouped.groups)
    negatives = pairs[~pairs["match"]].groupby("scene_id")["caption"].apply(list).reindex(ids)
    return TrainingScenes(images=[scenes_dir / image for image in grouped["image"].first()],
                          captions=grouped["caption"].apply(list).tolist(),
                          negatives=[value if isinstance(value, list) else [] for value in negatives])


def _flatten(groups: list[list[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The strings of all groups in one list, with each group's offset and count in it."""
    counts = torch.tensor([len(group) for group in groups])
    return [text for group in groups for text in group], torch.cumsum(counts, 0) - counts, counts


def _pick(offsets: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random index into each group of a flattened list (see :func:`_flatten`)."""
    return offsets + (torch.rand(len(offsets), generator=generator) * counts).long()


def train_step(model: DualEncoderModel, optimizer: torch.optim.Optimizer, pixels: torch.Tensor,
               input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """One optimisation step on a batch of matching (image, caption) pairs; returns the loss before the step.

    ``input_ids`` and ``attention_mask`` are ``(N + M, L)``, right-padded: the N captions of the images, then
    M >= 0 hard negatives that describe none of them.
    """
    images, texts, logit_scale = model(pixels, input_ids, attention_mask)
    n = len(images)
    loss = contrastive_loss(images, texts[:n], logit_scale, texts[n:] if len(texts) > n else None)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_dual(scenes_dir: str | Path = SCENES_DIR, output_dir: str | Path = DUAL_MODEL_DIR,
               config: TrainConfig | None = None) -> Path:
    """Train a dual encoder on the scenes' training split and save it as a ``dual:`` folder, replaced atomically
    at the end; returns ``output_dir``."""
    config = config or TrainConfig()
    scenes_dir, device = Path(scenes_dir), resolve_device(config.device)
    started = time.perf_counter()
    with deterministic(config.seed, device):
        train = _training_scenes(scenes_dir)
        if config.hard_negatives and not all(train.negatives):
            missing = sum(not negatives for negatives in train.negatives)
            raise ValueError(f"{missing} training scenes in {scenes_dir} have no hard-negative caption; "
                             "regenerate the scenes, or train without hard negatives (no --hard-negatives)")
        flat, offsets, counts = _flatten(train.captions)
        flat_negatives, negative_offsets, negative_counts = _flatten(train.negatives)
        model, tokenizer = build_dual_encoder(config.model, flat)
        model.to(device).train()
        pixels = prepare_pixels(train.images, image_transform(config.model.image_size))
        tokens = tokenizer(flat + (flat_negatives if config.hard_negatives else []), padding=True, truncation=True,
                           max_length=config.model.context_length, return_tensors="pt")
        negative_offsets += len(flat)
        val = read_scenes_retrieval(scenes_dir, "val")
        val_pixels = prepare_pixels(val.images["image"].tolist(), image_transform(config.model.image_size),
                                    val.base_dir)
        steps_per_epoch = len(train.images) // config.batch_size
        optimizer, scheduler = build_optimizer(model.named_parameters(), config.lr, config.weight_decay,
                                               config.warmup_fraction, steps_per_epoch * config.epochs)
        generator = torch.Generator().manual_seed(config.seed)
        history = {"config": asdict(config), "scenes_dir": str(scenes_dir), "n_train_scenes": len(train.images),
                   "n_train_captions": len(flat), "n_train_hard_negatives": len(flat_negatives),
                   "n_val_queries": len(val.queries), "device": str(device),
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                   "epochs": []}
        bar = progress_bar(total=steps_per_epoch * config.epochs, desc="train dual", unit="batch",
                           disable=not config.progress)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(train.images), generator=generator)
            choice = _pick(offsets[order], counts[order], generator)
            if config.hard_negatives:
                negative_choice = _pick(negative_offsets[order], negative_counts[order], generator)
            losses = []
            for step in range(steps_per_epoch):
                batch = slice(step * config.batch_size, (step + 1) * config.batch_size)
                rows = choice[batch]
                if config.hard_negatives:
                    rows = torch.cat([rows, negative_choice[batch]])
                mask = tokens["attention_mask"][rows]
                width = int(mask.sum(1).max())
                ids, mask = tokens["input_ids"][rows, :width].to(device), mask[:, :width].to(device)
                losses.append(train_step(model, optimizer, pixels[order[batch]].to(device), ids, mask))
                scheduler.step()
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
            scores = _validation_scores(model, tokenizer, val_pixels, val, config.eval_batch_size, device)
            metrics = summarize_retrieval(scores, val).loc["all"]
            history["epochs"].append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                      "logit_scale": model.temperature().detach().item(),
                                      "lr": scheduler.get_last_lr()[0],
                                      **{f"val_{key}": float(metrics[key])
                                         for key in (*[f"hit_rate@{k}" for k in KS], "mrr")},
                                      "seconds": time.perf_counter() - started})
        bar.close()
        history["train_seconds"] = time.perf_counter() - started
        return save_dual(model.cpu().eval(), tokenizer, output_dir, history)
