"""Train a small timm classifier on the scenes: which object classes (colour + shape) each scene holds.

The offline stand-in for the pseudo-labelling recipe's ImageNet classifier (docs/eval-sets.md): multi-label,
one sigmoid per class of :data:`clipeval.data.scenes.SCENE_CLASSES`, saved in timm's Hugging Face layout (with
``"multi_label": true``) so :class:`clipeval.labels.classifier.Classifier` loads it, plus ``history.json`` (the
per-epoch loss and validation accuracy).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from clipeval.atomic import atomic_folder, write_json
from clipeval.data.scenes import SCENE_CLASSES, scene_classes, scene_from_row
from clipeval.embed.engine import prepare_pixels
from clipeval.models.encoder import resolve_device
from clipeval.paths import SCENE_CLASSIFIER_DIR, SCENES_DIR
from clipeval.progress import progress_bar
from clipeval.train.options import ClassifierConfig


def _targets(table: pd.DataFrame) -> torch.Tensor:
    index = {name: i for i, name in enumerate(SCENE_CLASSES)}
    targets = torch.zeros(len(table), len(SCENE_CLASSES))
    for row, record in enumerate(table.to_dict("records")):
        for name in scene_classes(scene_from_row(record)):
            targets[row, index[name]] = 1.0
    return targets


def train_scene_classifier(scenes_dir: str | Path = SCENES_DIR, out_dir: str | Path = SCENE_CLASSIFIER_DIR,
                           config: ClassifierConfig | None = None, progress: bool = True) -> Path:
    """Train on the train split, report exact-set accuracy on val each epoch, save to ``out_dir`` (returned)."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models import save_for_hf

    config = config or ClassifierConfig()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = timm.create_model(config.architecture, pretrained=False, num_classes=len(SCENE_CLASSES))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, config.image_size, config.image_size),
                            "crop_pct": 1.0, "label_names": list(SCENE_CLASSES)}
    transform = create_transform(**resolve_data_config({}, model=model))
    scenes = pd.read_csv(Path(scenes_dir) / "scenes.csv", keep_default_na=False)
    splits = {split: scenes[scenes["split"] == split].reset_index(drop=True) for split in ("train", "val")}
    pixels = {split: prepare_pixels(table["image"].tolist(), transform, scenes_dir) for split, table in splits.items()}
    targets = {split: _targets(table) for split, table in splits.items()}
    model = model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(pixels["train"]), generator=generator)
        losses = []
        for start in progress_bar(range(0, len(order), config.batch_size), desc=f"scene classifier epoch {epoch}",
                          disable=not progress):
            batch = order[start:start + config.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(pixels["train"][batch].to(device)), targets["train"][batch].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        with torch.inference_mode():
            predicted = torch.sigmoid(model(pixels["val"].to(device))).cpu() >= 0.5
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses),
                        "val_exact_set_accuracy": float((predicted == targets["val"].bool()).all(dim=1).float().mean()),
                        "val_label_accuracy": float((predicted == targets["val"].bool()).float().mean())})
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as temp:  # the folder appears whole or not at all
        save_for_hf(model.cpu(), temp, model_config={"label_names": list(SCENE_CLASSES), "multi_label": True})
        write_json(temp / "history.json", {"config": asdict(config), "epochs": history})
    return out_dir
