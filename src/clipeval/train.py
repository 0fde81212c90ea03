"""Train the dual encoder on the captioned scenes, and evaluate any encoder on a scenes split.

Training (:func:`train_dual`) follows CLIP: batches of (image, caption) pairs, one caption per
image drawn at random from its true captions each epoch, the symmetric contrastive loss over
the batch's N x N similarity matrix, AdamW with linear warm-up and cosine decay. Optionally
(``hard_negatives``) it follows NegCLIP: each image of a batch brings one of its hard-negative
captions (a true caption with a colour, relation or count swapped, from ``pairs_train.csv``) as
an extra candidate in the image-to-text direction. It is seeded and deterministic on the CPU
(``torch.use_deterministic_algorithms``; same seed, same thread count, same weights). After
every epoch the validation split is scored as text-to-image retrieval (a caption's relevant
images are all scenes it truly describes) and logged.

Evaluation (:func:`evaluate_scenes`) works with any :class:`~clipeval.encoder.Encoder`:
retrieval metrics for all, seen and unseen-combination queries, matched vs mismatched cosine
(with the ROC AUC), and hard-negative accuracy (does the true caption beat its swapped twin).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clipeval.compare import roc_auc
from clipeval.dual_encoder import (DualEncoderConfig, DualEncoderModel, build_dual_encoder,
                                   contrastive_loss, image_transform, save_dual)
from clipeval.encoder import Encoder, resolve_device
from clipeval.images import read_images
from clipeval.paths import OUTPUTS_DIR
from clipeval.retrieval_metrics import summarize
from clipeval.retrieval_eval import RetrievalSet, embed_set, retrieval_set_from_pairs
from clipeval.scenes import DEFAULT_ROOT, read_scenes_retrieval
from clipeval.sources import read_pairs

DEFAULT_MODEL_DIR = OUTPUTS_DIR / "offline" / "models" / "dual"
KS = (1, 5, 10)


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        epochs: passes over the training scenes.
        batch_size: pairs per batch (the contrastive matrix is batch_size x batch_size).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings' gains, temperature).
        warmup_fraction: fraction of the steps with a linear learning-rate warm-up.
        hard_negatives: add one hard-negative caption per image to the image-to-text side of
            the loss (see :func:`clipeval.dual_encoder.contrastive_loss`); every training
            scene must then have at least one.
        seed: seeds the model init, the batch order and the caption choice.
        device: ``auto``, ``cpu``, ``cuda``...
        eval_batch_size: batch size when encoding the validation split.
        progress: show a tqdm progress bar.
        model: the model sizes and the ``pretrained`` flag.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    hard_negatives: bool = False
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    progress: bool = True
    model: DualEncoderConfig = field(default_factory=DualEncoderConfig)


@contextlib.contextmanager
def _deterministic(seed: int, device: torch.device):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def load_pixels(refs: list[str | Path], image_size: int, base_dir: str | Path | None = None) -> torch.Tensor:
    """Read and preprocess images exactly as :class:`DualEncoder` does, stacked ``(N, 3, S, S)``.

    Raises:
        ValueError: an image could not be read (the dataset folder is incomplete).
    """
    transform = image_transform(image_size)
    loaded = read_images([str(ref) for ref in refs], Path(base_dir) if base_dir else None)
    unreadable = [f"{ref} ({image.status})" for ref, image in zip(refs, loaded) if image.status != "ok"]
    if unreadable:
        raise ValueError(f"{len(unreadable)} images could not be read, e.g. {unreadable[:3]}; regenerate the scenes")
    return torch.stack([transform(image.image) for image in loaded])


@torch.inference_mode()
def _validation_scores(model: DualEncoderModel, pixels: torch.Tensor, tokens: dict[str, torch.Tensor],
                       batch_size: int, device: torch.device) -> np.ndarray:
    """Cosine scores ``(queries, images)`` of the validation split, from inputs prepared once.

    The same numbers as scoring through :class:`DualEncoder` (eval mode, same preprocessing and
    tokenization), without decoding the images again every epoch.
    """
    model.eval()
    images = torch.cat([model.encode_image(pixels[i:i + batch_size].to(device))
                        for i in range(0, len(pixels), batch_size)])
    texts = torch.cat([model.encode_text(tokens["input_ids"][i:i + batch_size].to(device),
                                         tokens["attention_mask"][i:i + batch_size].to(device))
                       for i in range(0, len(tokens["input_ids"]), batch_size)])
    model.train()
    images, texts = (torch.nn.functional.normalize(x.float(), dim=-1).cpu() for x in (images, texts))
    return (texts @ images.T).numpy()


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


def _optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    warmup = max(1, round(config.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(model: DualEncoderModel, optimizer: torch.optim.Optimizer, pixels: torch.Tensor,
               input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """One optimisation step on a batch of matching (image, caption) pairs.

    Args:
        model: the model, in train mode.
        optimizer: its optimizer.
        pixels: ``(N, 3, S, S)`` preprocessed images.
        input_ids: ``(N + M, L)`` token ids (right-padded): the N captions of the images, then
            M >= 0 hard negatives that describe none of them.
        attention_mask: ``(N + M, L)`` 1 for tokens, 0 for padding.

    Returns:
        The batch's contrastive loss before the step.
    """
    images, texts, logit_scale = model(pixels, input_ids, attention_mask)
    n = len(images)
    loss = contrastive_loss(images, texts[:n], logit_scale, texts[n:] if len(texts) > n else None)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_dual(scenes_dir: str | Path = DEFAULT_ROOT, output_dir: str | Path = DEFAULT_MODEL_DIR,
               config: TrainConfig | None = None) -> Path:
    """Train a dual encoder on the scenes' training split and save it as a ``dual:`` folder.

    Args:
        scenes_dir: dataset folder from :func:`clipeval.scenes.generate_scenes`.
        output_dir: model folder to write (replaced atomically at the end).
        config: the run; defaults to :class:`TrainConfig`.

    Returns:
        ``output_dir``; load it with ``load_encoder(f"dual:{output_dir}")``.
    """
    config = config or TrainConfig()
    scenes_dir, device = Path(scenes_dir), resolve_device(config.device)
    started = time.perf_counter()
    with _deterministic(config.seed, device):
        train = _training_scenes(scenes_dir)
        if config.hard_negatives and not all(train.negatives):
            missing = sum(not negatives for negatives in train.negatives)
            raise ValueError(f"{missing} training scenes in {scenes_dir} have no hard-negative caption; "
                             "regenerate the scenes, or train without hard negatives (no --hard-negatives)")
        flat, offsets, counts = _flatten(train.captions)
        flat_negatives, negative_offsets, negative_counts = _flatten(train.negatives)
        model, tokenizer = build_dual_encoder(config.model, flat)
        model.to(device).train()
        pixels = load_pixels(train.images, config.model.image_size)
        tokens = tokenizer(flat + (flat_negatives if config.hard_negatives else []), padding=True, truncation=True,
                           max_length=config.model.context_length, return_tensors="pt")
        negative_offsets += len(flat)
        val = read_scenes_retrieval(scenes_dir, "val")
        val_pixels = load_pixels(val.images["image"].tolist(), config.model.image_size, val.base_dir)
        val_tokens = tokenizer(val.queries["text"].tolist(), padding=True, truncation=True,
                               max_length=config.model.context_length, return_tensors="pt")
        steps_per_epoch = len(train.images) // config.batch_size
        optimizer, scheduler = _optimizer(model, config, steps_per_epoch * config.epochs)
        generator = torch.Generator().manual_seed(config.seed)
        history = {"config": asdict(config), "scenes_dir": str(scenes_dir), "n_train_scenes": len(train.images),
                   "n_train_captions": len(flat), "n_train_hard_negatives": len(flat_negatives),
                   "n_val_queries": len(val.queries), "device": str(device),
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                   "epochs": []}
        bar = tqdm(total=steps_per_epoch * config.epochs, desc="train dual", unit="batch", disable=not config.progress)
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
            scores = _validation_scores(model, val_pixels, val_tokens, config.eval_batch_size, device)
            metrics = summarize_retrieval(scores, val).loc["all"]
            history["epochs"].append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                      "logit_scale": model.temperature().detach().item(),
                                      "lr": scheduler.get_last_lr()[0],
                                      **{f"val_{key}": float(metrics[key]) for key in (*[f"hit_rate@{k}" for k in KS], "mrr")},
                                      "seconds": time.perf_counter() - started})
        bar.close()
        history["train_seconds"] = time.perf_counter() - started
        return save_dual(model.cpu().eval(), tokenizer, output_dir, history)


def embed_scenes(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed a set's queries and images; every scene image must be readable.

    Returns:
        ``(texts, images)``: L2-normalised embeddings in the order of ``dataset.queries`` and
        ``dataset.images``.

    Raises:
        ValueError: an image could not be read (the dataset folder is incomplete).
    """
    embedded = embed_set(encoder, dataset, batch_size, progress=False)
    if len(embedded.image_positions) != len(dataset.images):
        unreadable = [status for status in embedded.image_status if status != "ok"]
        raise ValueError(f"{dataset.name}: {len(unreadable)} images could not be read ({unreadable[:3]}...); "
                         "regenerate the scenes")
    return embedded.texts, embedded.images


def relevance_matrix(dataset: RetrievalSet) -> np.ndarray:
    """Dense ``(queries, images)`` boolean relevance of a retrieval set."""
    relevance = np.zeros((len(dataset.queries), len(dataset.images)), dtype=bool)
    relevance[dataset.relevant[:, 0], dataset.relevant[:, 1]] = True
    return relevance


def score_retrieval(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 256) -> np.ndarray:
    """Cosine scores ``(queries, images)`` of a retrieval set (float32, queries as rows)."""
    texts, images = embed_scenes(encoder, dataset, batch_size)
    return (texts @ images.T).numpy()


def summarize_retrieval(scores: np.ndarray, dataset: RetrievalSet) -> pd.DataFrame:
    """Text-to-image retrieval metrics for all queries, and seen vs unseen combinations.

    Args:
        scores: ``(queries, images)`` scores of ``dataset``.
        dataset: a scenes retrieval set (its queries carry ``seen_combination``).

    Returns:
        One row per query subset (``all``, ``seen``, ``unseen``) with the keys of
        :func:`clipeval.retrieval_metrics.summarize` as columns.
    """
    relevance = relevance_matrix(dataset)
    seen = dataset.queries["seen_combination"].to_numpy(dtype=bool)
    subsets = {"all": np.ones(len(scores), dtype=bool), "seen": seen, "unseen": ~seen}
    rows = {name: summarize(scores[keep], relevance[keep], KS) for name, keep in subsets.items() if keep.any()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("queries")


def summarize_match_scores(scores: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """Cosine of matched (caption describes image) vs mismatched pairs over a whole score matrix.

    Returns:
        ``matched_mean``, ``mismatched_mean``, ``gap`` and ``auc`` (P(matched > mismatched)).
    """
    matched, mismatched = scores[relevance], scores[~relevance]
    return {"matched_mean": float(matched.mean()), "mismatched_mean": float(mismatched.mean()),
            "gap": float(matched.mean() - mismatched.mean()), "auc": roc_auc(matched, mismatched)}


def score_pairs_table(encoder: Encoder, scenes_dir: str | Path, split: str, batch_size: int = 256) -> pd.DataFrame:
    """The split's pairs table (true captions and hard negatives) with a ``cosine`` column."""
    pairs = read_pairs(Path(scenes_dir) / f"pairs_{split}.csv")
    dataset = retrieval_set_from_pairs(pairs, f"scenes-{split}-pairs")
    texts, images = embed_scenes(encoder, dataset, batch_size)
    text_index = pd.Index(dataset.queries["text"]).get_indexer(pairs["caption"].astype(str))
    image_index = pd.Index(dataset.images["image"]).get_indexer(pairs["image"].astype(str))
    return pairs.assign(cosine=(texts[text_index] * images[image_index]).sum(dim=1).numpy())


def hard_negative_accuracy(scored: pd.DataFrame) -> pd.DataFrame:
    """How often the true caption beats its swapped twin on the same image.

    Args:
        scored: a pairs table with ``cosine`` (see :func:`score_pairs_table`).

    Returns:
        One row per negative kind and ``all``, for all rows and for seen / unseen combinations,
        columns ``negative_kind``, ``subset``, ``n``, ``accuracy`` (strictly greater cosine).
    """
    positives = scored[scored["match"]].set_index(["scene_id", "caption"])["cosine"]
    negatives = scored[~scored["match"]].copy()
    twins = pd.MultiIndex.from_arrays([negatives["scene_id"], negatives["twin_caption"]])
    negatives["correct"] = positives.reindex(twins).to_numpy() > negatives["cosine"].to_numpy()
    rows = []
    for kind, group in [("all", negatives), *negatives.groupby("negative_kind", sort=True)]:
        for subset, part in (("all", group), ("seen", group[group["seen_combination"]]),
                             ("unseen", group[~group["seen_combination"]])):
            if len(part):
                rows.append({"negative_kind": kind, "subset": subset, "n": len(part),
                             "accuracy": float(part["correct"].mean())})
    return pd.DataFrame(rows)


def evaluate_scenes(encoder: Encoder, scenes_dir: str | Path = DEFAULT_ROOT, split: str = "test",
                    batch_size: int = 256) -> dict:
    """Everything the scenes benchmark reports for one encoder on one split.

    Args:
        encoder: any encoder.
        scenes_dir: dataset folder.
        split: ``val`` or ``test``.
        batch_size: encoding batch size.

    Returns:
        ``retrieval`` (see :func:`summarize_retrieval`), ``match_scores`` (see
        :func:`summarize_match_scores`), ``hard_negatives`` (see :func:`hard_negative_accuracy`),
        the retrieval ``dataset`` and its ``scores`` matrix.
    """
    dataset = read_scenes_retrieval(scenes_dir, split)
    scores = score_retrieval(encoder, dataset, batch_size)
    return {"retrieval": summarize_retrieval(scores, dataset),
            "match_scores": summarize_match_scores(scores, relevance_matrix(dataset)),
            "hard_negatives": hard_negative_accuracy(score_pairs_table(encoder, scenes_dir, split, batch_size)),
            "dataset": dataset, "scores": scores}
