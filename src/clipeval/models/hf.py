"""``hf:`` checkpoints: transformers CLIP and SigLIP models, by hub name or local directory."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from PIL import Image

from clipeval.atomic import atomic_folder
from clipeval.models.encoder import Encoder
from clipeval.models.family import CheckpointFamily
from clipeval.models.registry import CheckpointError, CheckpointSpec, is_local_path, local_folder, offline_error
from clipeval.paths import where

# The OpenAI and MetaCLIP repositories the paper profile names: (input side, patch side) of each stand-in.
MIRRORED = {"openai/clip-vit-base-patch32": (224, 32), "openai/clip-vit-base-patch16": (224, 16),
            "openai/clip-vit-large-patch14": (224, 14), "openai/clip-vit-large-patch14-336": (336, 14),
            "facebook/metaclip-b32-400m": (224, 32)}


def _features(output) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose ``pooler_output`` is the projected feature."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFEncoder(Encoder):
    """A transformers ``CLIPModel`` or ``SiglipModel`` behind the :class:`Encoder` interface."""

    def __init__(self, spec, model, tokenizer, image_processor, device, precision):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.is_siglip = model.config.model_type.startswith("siglip")
        bias = getattr(model, "logit_bias", None)
        super().__init__(spec, device, precision,
                         logit_scale=float(model.logit_scale.detach().exp()),
                         logit_bias=None if bias is None else float(bias.detach()),
                         context_length=int(model.config.text_config.max_position_embeddings))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def preprocess_tensors(self, images) -> torch.Tensor:
        """The image processor itself: transformers' torchvision backend runs on tensors on their device."""
        device = images[0].device if len(images) else self.device
        return self.image_processor(images=list(images), return_tensors="pt", device=device)["pixel_values"]

    def preprocess_id(self) -> str:
        return self.image_processor.to_json_string()

    def input_side(self) -> int | None:
        size = self.image_processor.size
        return int(size.get("shortest_edge") or max(size.get("height", 0), size.get("width", 0))) or None

    def _tokenize(self, texts: list[str]):
        # SigLIP was trained on max_length padding and pools the last position, so it needs it too.
        padding = "max_length" if self.is_siglip else True
        return self.tokenizer(texts, padding=padding, truncation=True, max_length=self.context_length,
                              return_tensors="pt")

    def truncated(self, texts) -> list[bool]:
        lengths = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(ids) > self.context_length for ids in lengths]

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenize(texts).to(self.device)
        return _features(self.model.get_text_features(**tokens))


def load_hf(spec: CheckpointSpec, device: torch.device, precision: str) -> HFEncoder:
    """Load ``hf:<hub name or directory>`` with ``from_pretrained`` (model, tokenizer, image processor).

    Raises:
        CheckpointError: a local directory that does not exist, or a hub name with no network.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    folder = local_folder(spec.target, str(spec))
    local, target = folder is not None, folder or spec.target
    try:
        model = AutoModel.from_pretrained(target)
        tokenizer = AutoTokenizer.from_pretrained(target)
        image_processor = AutoImageProcessor.from_pretrained(target)
    except OSError as error:
        if local:
            raise CheckpointError(f"{spec}: cannot load the saved model in {where(target)} ({error})") from error
        raise offline_error(str(spec), error) from error
    if not hasattr(model, "get_image_features"):
        raise CheckpointError(f"{spec}: {type(model).__name__} is not a dual encoder (CLIP/SigLIP)")
    return HFEncoder(str(spec), model, tokenizer, image_processor, device, precision)


def save_hf(encoder: HFEncoder, folder: Path) -> str:
    """A ``save_pretrained`` folder (model, tokenizer, image processor): ``hf:<folder>``."""
    with atomic_folder(folder) as staging:
        for part in (encoder.model, encoder.tokenizer, encoder.image_processor):
            part.save_pretrained(staging)
    return f"hf:{folder}"


def build_tiny_hf(folder: Path, seed: int) -> str:
    """A tiny random transformers CLIP: ``hf:<folder>``."""
    from clipeval.models.tiny import build_hf_clip, mark_tiny

    mark_tiny(build_hf_clip(folder, seed), "transformers CLIP", seed)
    return f"hf:{folder}"


def _mirror_builders() -> dict:
    from clipeval.models.stand_ins import hf_clip_repo

    return {repo: partial(hf_clip_repo, image_size=side, patch_size=patch) for repo, (side, patch) in MIRRORED.items()}


FAMILY = CheckpointFamily(
    prefix="hf", description="transformers", load=load_hf, save=save_hf,
    image_tower=("vision_model", "visual_projection"), build_tiny=build_tiny_hf,
    hub_repos=lambda target: [] if is_local_path(target) else [target], mirror_builders=_mirror_builders)
