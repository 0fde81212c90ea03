"""Contrastive fine-tuning of any ``hf:``, ``open_clip:`` or ``dual:`` checkpoint on image-caption pairs
(docs/fine-tuning.md: the modes, the training, resuming).

The loop is the dual encoder's generalised to a loaded :class:`~clipeval.models.encoder.Encoder`, run through
:meth:`~clipeval.models.encoder.Encoder.trainable_features` (the hooks its encoder scores with), with the losses
and schedule of :mod:`clipeval.train.common`. The result is saved in the base's own format
(:func:`clipeval.models.registry.save_encoder`) with an info file naming the base.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clipeval.atomic import atomic_path
from clipeval.data.fetch import FetchOptions
from clipeval.data.images import decode_image, read_many_bytes
from clipeval.data.retrieval_sets import RetrievalSet, relevance_matrix
from clipeval.embed.engine import embed_set
from clipeval.embed.options import EmbedOptions
from clipeval.metrics.retrieval import summarize
from clipeval.models.catalogue import describe_checkpoint, write_info_file
from clipeval.models.encoder import PRECISIONS, Encoder, resolve_device, resolve_precision
from clipeval.models.registry import (
    CHECKPOINT_FAMILIES,
    CheckpointError,
    checkpoint_family,
    load_encoder,
    load_progress,
    parse_spec,
    save_encoder,
)
from clipeval.progress import progress_bar
from clipeval.train.adapters import add_adapters, merge_adapters
from clipeval.train.common import build_optimizer, contrastive_loss, deterministic, sigmoid_loss
from clipeval.train.options import FinetuneConfig

VALIDATION_KS = (1, 5, 10)
STATE_FILE = "state.pt"


@dataclass
class TrainingPairs:
    """The training data, one entry per distinct usable image.

    Attributes:
        pixels: ``(U, C, H, W)`` preprocessed images.
        negatives: each image's hard-negative captions (may be empty).
        rows: one row per input pair: ``row_id``, ``image``, ``caption``, ``role`` (``caption``,
            ``negative`` or ``unused``), ``status`` and ``error`` (why a row is not used).
        fingerprint: SHA-256 over the used images' bytes and their captions.
    """

    pixels: torch.Tensor
    captions: list[list[str]]
    negatives: list[list[str]]
    rows: pd.DataFrame
    fingerprint: str


def training_pairs(pairs: pd.DataFrame, preprocess, negative_kinds: tuple[str, ...] = (),
                   image_column: str = "image", caption_column: str = "caption",
                   fetch: FetchOptions = FetchOptions()) -> TrainingPairs:
    """Read and preprocess a pairs table's images and group its captions per image.

    Rows with ``match`` false (when the column exists) are hard negatives of their image; with
    ``negative_kinds`` only those whose ``negative_kind`` is listed. An image is used when it is
    readable and has at least one true caption; every other row stays in ``rows`` with its reason.

    Raises:
        ValueError: no usable image, or ``negative_kinds`` without a ``negative_kind`` column.
    """
    table = pairs.reset_index(drop=True)
    matched = table["match"].astype(str).str.lower().eq("true") if "match" in table else pd.Series(True, table.index)
    if negative_kinds and "negative_kind" not in table:
        raise ValueError("--negative-kind needs a negative_kind column in the training pairs")
    rows = pd.DataFrame({"row_id": table.index, "image": table[image_column], "caption": table[caption_column],
                         "role": np.where(matched, "caption", "negative"), "status": "ok", "error": ""})
    missing = table[caption_column].isna() | table[image_column].isna()
    rows.loc[missing, ["role", "status", "error"]] = ["unused", "missing_value", "no caption or no image"]
    if negative_kinds:
        other = ~matched & ~table["negative_kind"].isin(negative_kinds) & ~missing
        rows.loc[other, ["role", "error"]] = ["unused", f"negative_kind not in {list(negative_kinds)}"]
    usable = rows[rows["role"] != "unused"]
    refs = list(dict.fromkeys(usable.loc[usable["role"] == "caption", "image"].astype(str)))
    base_dir = pairs.attrs.get("base_dir")
    raws = read_many_bytes(refs, Path(base_dir) if base_dir else None, fetch_options=fetch)
    pixels, kept, fingerprint, failed = [], [], hashlib.sha256(), {}
    for ref, raw in zip(refs, raws):
        loaded = decode_image(raw.data) if raw.status == "ok" else raw
        if loaded.status != "ok":
            failed[ref] = (loaded.status, loaded.error)
            continue
        pixels.append(preprocess(loaded.image))
        kept.append(ref)
        fingerprint.update(raw.digest.encode())
    for ref, (status, error) in failed.items():
        rows.loc[rows["image"].astype(str).eq(ref) & rows["role"].ne("unused"), ["role", "status", "error"]] = \
            ["unused", status, error]
    orphan = rows["role"].eq("negative") & ~rows["image"].astype(str).isin(kept)
    rows.loc[orphan & rows["status"].eq("ok"), ["role", "error"]] = ["unused", "no true caption for its image"]
    if not kept:
        raise ValueError(f"no usable training image among {len(refs)} (statuses: "
                         f"{sorted({status for status, _ in failed.values()})}); check the pairs' image column")
    used = rows[rows["role"] != "unused"].astype({"image": str, "caption": str})
    groups = {role: used[used["role"] == role].groupby("image")["caption"].apply(list) for role in ("caption",
                                                                                                     "negative")}
    captions = [groups["caption"].get(ref, []) for ref in kept]
    negatives = [groups["negative"].get(ref, []) if len(groups["negative"]) else [] for ref in kept]
    fingerprint.update(json.dumps([captions, negatives]).encode())
    return TrainingPairs(torch.stack(pixels), captions, negatives, rows, fingerprint.hexdigest())


def split_pairs(pairs: pd.DataFrame, fraction: float, seed: int = 0,
                image_column: str = "image") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a pairs table by image into ``(train, held_out)``: a ``fraction`` of the distinct images (and all
    their rows) held out, so held-out retrieval never ranks an image the model trained on.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or a side would be empty.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    images = pd.unique(pairs[image_column].dropna().astype(str))
    n_held = round(fraction * len(images))
    if n_held < 1 or n_held >= len(images):
        raise ValueError(f"holding out {fraction:.0%} of {len(images)} images leaves a side empty")
    held = set(np.random.default_rng(seed).permutation(images)[:n_held])
    mask = pairs[image_column].astype(str).isin(held)
    train, held_out = pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)
    train.attrs, held_out.attrs = dict(pairs.attrs), dict(pairs.attrs)
    return train, held_out


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the spec loading the saved checkpoint, the model in memory (adapters merged,
    eval mode), the history, what the checkpoint's info file records, and :attr:`TrainingPairs.rows`."""

    spec: str
    encoder: Encoder
    history: dict
    provenance: dict
    rows: pd.DataFrame


def validate(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 64, ks=VALIDATION_KS,
             fetch: FetchOptions = FetchOptions()) -> dict[str, float]:
    """Text-to-image retrieval metrics of an in-memory model on a set, through the one embedding path.

    Unreadable images are left out of the collection (and their relevance with them); no cache is used.
    """
    was_training = encoder.model.training
    encoder.model.eval()
    embedded = embed_set(encoder, dataset, EmbedOptions(batch_size=batch_size, embedding_cache=False,
                                                        decode_processes=0, progress=False, fetch=fetch))
    if was_training:
        encoder.model.train()
    scores = (embedded.texts @ embedded.images.T).numpy()
    return summarize(scores, relevance_matrix(dataset)[:, embedded.image_positions], ks)


def _lock_image_tower(model: torch.nn.Module, towers: tuple[str, ...]) -> None:
    for name, parameter in model.named_parameters():
        if name.split(".")[0] in towers:
            parameter.requires_grad_(False)


def _image_tower_eval(model: torch.nn.Module, towers: tuple[str, ...]) -> None:
    for name, module in model.named_children():
        if name in towers:
            module.eval()


def _prepare(encoder: Encoder, config: FinetuneConfig) -> list[str]:
    """Set which parameters train for the mode; returns the adapted weights' names (``lora``)."""
    model, prefix = encoder.model, parse_spec(encoder.spec).prefix
    model.requires_grad_(True)
    if config.mode == "lit":
        _lock_image_tower(model, checkpoint_family(prefix).image_tower)
    if config.mode == "lora":
        return add_adapters(model, config.lora_rank, config.lora_alpha)
    return []


def _loss(encoder: Encoder, pixels: torch.Tensor, texts: list[str], n_negatives: int) -> torch.Tensor:
    """The batch's loss: its N images against their N captions (then the M hard negatives)."""
    image_features, text_features = encoder.trainable_features(pixels, texts)
    images, texts_ = F.normalize(image_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)
    n = len(images)
    model = encoder.model
    scale = model.logit_scale.float().clamp(max=np.log(100)).exp()
    negatives = texts_[n:] if n_negatives else None
    bias = getattr(model, "logit_bias", None)
    if isinstance(bias, torch.Tensor):
        return sigmoid_loss(images, texts_[:n], scale, bias.float(), negatives)
    return contrastive_loss(images, texts_[:n], scale, negatives)


class _Batches:
    """The seeded micro-batches: epoch ``e`` visits every image once in ``rng([seed, e])``'s order.

    Any micro-batch can be rebuilt from its index alone, so a resumed run draws the same ones.
    """

    def __init__(self, data: TrainingPairs, batch_size: int, seed: int, hard_negatives: bool):
        self.data, self.seed, self.hard_negatives = data, seed, hard_negatives
        self.batch_size = min(batch_size, len(data.captions))
        self.per_epoch = len(data.captions) // self.batch_size
        self._epoch, self._plan = -1, None

    def _epoch_plan(self, epoch: int):
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.data.captions))
            captions = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in order]
            negatives = [self.data.negatives[i][rng.integers(len(self.data.negatives[i]))]
                         if self.data.negatives[i] else None for i in order]
            self._epoch, self._plan = epoch, (order, captions, negatives)
        return self._plan

    def get(self, index: int) -> tuple[torch.Tensor, list[str], int]:
        """Micro-batch ``index``: its pixels, its captions followed by its hard negatives, and how many of those."""
        order, captions, negatives = self._epoch_plan(index // self.per_epoch)
        part = slice((index % self.per_epoch) * self.batch_size, (index % self.per_epoch + 1) * self.batch_size)
        extra = [text for text in negatives[part] if text is not None] if self.hard_negatives else []
        return self.data.pixels[torch.from_numpy(order[part])], captions[part] + extra, len(extra)


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=PRECISIONS[precision])
    return contextlib.nullcontext()


def optimizer_step(encoder: Encoder, batches: _Batches, step: int, accumulate: int, optimizer, scaler,
                   device: torch.device, precision: str) -> float:
    """One optimizer step over ``accumulate`` micro-batches; returns their mean loss."""
    losses = []
    for index in range(step * accumulate, (step + 1) * accumulate):
        pixels, texts, n_negatives = batches.get(index)
        with _autocast(device, precision):
            loss = _loss(encoder, pixels, texts, n_negatives)
        scaler.scale(loss / accumulate).backward()
        losses.append(loss.item())
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(np.mean(losses))


def finetune(base_spec: str, pairs: pd.DataFrame, out_dir: str | Path, config: FinetuneConfig = FinetuneConfig(),
             validation: RetrievalSet | None = None, resume: bool = False,
             fetch: FetchOptions = FetchOptions()) -> FinetuneResult:
    """Fine-tune a checkpoint on a pairs table and save it to ``<out_dir>/checkpoint`` (and its state to
    ``<out_dir>/state``).

    Args:
        pairs: ``image``, ``caption`` and optionally ``match`` (false rows are hard negatives) and
            ``negative_kind``.
        validation: a retrieval set scored after every epoch (text-to-image), or None.
        fetch: how images are read (``image_root``: where a table's images may lie besides its folder).
        resume: continue from the state saved in ``state/``. That it is this run's is the folder's claim:
            :func:`clipeval.jobs.finetune_run.run_finetune` claims it (:func:`clipeval.layout.claim`).

    Raises:
        CheckpointError: the base cannot be loaded or is not fine-tunable (``baseline:``).
        ValueError: bad settings, no usable data, or hard negatives asked for and none found.
    """
    config.check()
    out_dir, device = Path(out_dir), resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    prefix = parse_spec(base_spec).prefix
    family = checkpoint_family(prefix)
    if not family.fine_tunable:
        tunable = [name + ":" for name in CHECKPOINT_FAMILIES if checkpoint_family(name).fine_tunable]
        raise CheckpointError(f"{base_spec}: fine-tuning supports {', '.join(tunable)} checkpoints")
    started = time.perf_counter()
    with deterministic(config.seed, device):
        encoder = load_encoder(base_spec, str(device), "fp32", progress=config.progress)
        base_digest = encoder.weights_digest()
        data = training_pairs(pairs, encoder.preprocess, config.negative_kinds, fetch=fetch)
        n_negatives = sum(len(negatives) for negatives in data.negatives)
        if config.hard_negatives and not n_negatives:
            raise ValueError("--hard-negatives: the training pairs hold no usable hard negative (rows with "
                             "match=False on an image that has a true caption)")
        adapted = _prepare(encoder, config)
        model = encoder.model
        trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
        batches = _Batches(data, config.batch_size, config.seed, config.hard_negatives)
        total = config.steps or max(1, config.epochs * batches.per_epoch // config.accumulate)
        optimizer, scheduler = build_optimizer(trainable, config.lr, config.weight_decay, config.warmup_fraction, total)
        scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")
        settings = {key: value for key, value in asdict(config).items()
                    if key not in ("device", "progress", "eval_batch_size", "save_every")}
        history = {"base": base_spec, "mode": config.mode, "settings": settings, "device": str(device),
                   "precision": precision, "n_train_images": len(data.captions),
                   "n_train_captions": sum(map(len, data.captions)), "n_train_hard_negatives": n_negatives,
                   "n_rows_unused": int((data.rows["role"] == "unused").sum()), "adapted_weights": len(adapted),
                   "trainable_parameters": sum(parameter.numel() for _, parameter in trainable),
                   "total_parameters": sum(parameter.numel() for parameter in model.parameters()),
                   "micro_batch_size": batches.batch_size, "micro_batches_per_epoch": batches.per_epoch,
                   "total_steps": total, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.machine(), "resumed_from_step": None, "epochs": []}
        start = _restore(out_dir / "state" / STATE_FILE, model, optimizer, scheduler, scaler, history) if resume else 0
        if validation is not None and start == 0:
            history["validation_before"] = validate(encoder, validation, config.eval_batch_size, fetch=fetch)
        bar = progress_bar(total=total, initial=start, desc=f"finetune {config.mode}", unit="step",
                           disable=not config.progress)
        losses, step_seconds = [], []
        model.train()
        for step in range(start, total):
            if config.mode == "lit":
                _image_tower_eval(model, family.image_tower)
            step_started = time.perf_counter()
            losses.append(optimizer_step(encoder, batches, step, config.accumulate, optimizer, scaler, device,
                                         precision))
            step_seconds.append(time.perf_counter() - step_started)
            scheduler.step()
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            micro_done = (step + 1) * config.accumulate
            epoch_end = micro_done // batches.per_epoch > step * config.accumulate // batches.per_epoch
            if epoch_end or step + 1 == total:
                entry = {"step": step + 1, "epoch": micro_done / batches.per_epoch,
                         "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                         "seconds": time.perf_counter() - started}
                if validation is not None:
                    entry.update({f"val_{key}": value for key, value in
                                  validate(encoder, validation, config.eval_batch_size, fetch=fetch).items()})
                history["epochs"].append(entry)
                losses = []
            if step + 1 < total and (epoch_end or (config.save_every and (step + 1) % config.save_every == 0)):
                _save_state(out_dir / "state" / STATE_FILE, step + 1, model, optimizer, scheduler, scaler, history)
        bar.close()
        history["train_seconds"] = time.perf_counter() - started
        steady = step_seconds[1:] or step_seconds  # the first step also warms up (allocations, kernels)
        history["steps_per_s"] = len(steady) / max(sum(steady), 1e-9) if steady else None
        history["first_step_seconds"] = step_seconds[0] if step_seconds else None
        if device.type == "cuda":
            history["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        model.eval()
        merge_adapters(model)
        model.requires_grad_(True)  # as loaded: nn.MultiheadAttention picks its kernel by it
        with load_progress(config.progress):  # save_pretrained's "Writing model shards" bar obeys it too
            spec = save_encoder(encoder, out_dir / "checkpoint")
    provenance = {"base": base_spec, "base_weights_sha256": base_digest, "weights_sha256": encoder.weights_digest(),
                  "data_fingerprint": data.fingerprint, "mode": config.mode, "settings": settings,
                  "n_train_images": len(data.captions), "total_steps": total}
    base_info = describe_checkpoint(base_spec)
    write_info_file(_info_folder(spec), f"{base_spec} fine-tuned here ({config.mode}, {total} steps on "
                                        f"{len(data.captions)} images)", base_info.random_init,
                    fine_tuned_from=base_spec, provenance=provenance)
    return FinetuneResult(spec, encoder, history, provenance, data.rows)


def _info_folder(spec: str) -> Path:
    target = Path(spec.partition(":")[2].split("@", 1)[-1])
    return target if target.is_dir() else target.parent


def _save_state(path: Path, step: int, model, optimizer, scheduler, scaler, history: dict) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": torch.get_rng_state(),
             "history": history}
    with atomic_path(path) as temp:
        torch.save(state, temp)


def _restore(path: Path, model, optimizer, scheduler, scaler, history: dict) -> int:
    """Load the saved state into the run and return its step (0 when there is none)."""
    if not path.is_file():
        return 0
    # tensors and plain data only, so no pickled code runs (the history records torch.__version__, a str subclass)
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    history.update({key: value for key, value in state["history"].items() if key in ("epochs", "validation_before")})
    history["resumed_from_step"] = state["step"]
    return state["step"]
