"""``hf:`` checkpoints: transformers CLIP and SigLIP models, by hub name or local directory."""

from __future__ import annotations

import torch
from PIL import Image

from clipeval.models.encoder import Encoder
from clipeval.models.registry import CheckpointError, CheckpointSpec, local_folder, offline_error
from clipeval.paths import where


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
