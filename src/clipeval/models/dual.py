"""A CLIP-style dual encoder trained in this repo: DistilBERT text tower, EfficientNet-B0 image tower.

Architecture (as in CLIP, with these two backbones):

* **Text**: a transformers ``DistilBertModel``; its last hidden states are layer-normalised and
  only the end-of-text token is kept (the last non-padding position, the ``[SEP]`` token),
  then a linear projection (no bias) maps it into the shared space.
* **Image**: torchvision's EfficientNet-B0 convolutional trunk (``features``) with its global
  average pooling replaced by :class:`AttentionPool2d` (CLIP's ``AttentionPool2d``): the mean
  of the spatial features is prepended as a token, learned positional embeddings are added,
  and that mean token is the single query attending over [mean + every spatial position];
  the attention output is projected into the shared space.
* Both embeddings are L2-normalised; a learnable temperature ``logit_scale`` (stored as a log,
  initialised to log(1/0.07), clamped to at most log(100) as in CLIP) scales the N x N cosine
  matrix of a batch, and :func:`clipeval.train.dual.contrastive_loss` is the symmetric
  cross-entropy over it.

Offline the towers are randomly initialised from a small DistilBERT config and a WordPiece
vocabulary built from the training captions (:func:`train_tokenizer`). With
``pretrained=True`` the text tower is ``distilbert-base-uncased`` (and its tokenizer) and the
image trunk starts from torchvision's ImageNet weights; without network that raises
:func:`clipeval.models.registry.offline_error`.

A trained model is a folder (:func:`save_dual`) that the registry loads as ``dual:<folder>``
(:func:`load_dual`)::

    config.json          DualEncoderConfig + the full DistilBERT config
    model.safetensors    all weights (BatchNorm statistics included)
    tokenizer.json, tokenizer_config.json ...
    history.json         the training run (written by clipeval.train.dual)
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn
from torchvision import transforms
from torchvision.models.efficientnet import MBConv
from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

from clipeval.atomic import atomic_folder
from clipeval.models.constants import IMAGENET_MEAN, IMAGENET_STD
from clipeval.models.dual_config import DualEncoderConfig
from clipeval.models.encoder import Encoder
from clipeval.models.family import CheckpointFamily
from clipeval.models.registry import CheckpointError, CheckpointSpec, offline_error
from clipeval.paths import where

PRETRAINED_TEXT = "distilbert-base-uncased"
PRETRAINED_IMAGE_WEIGHTS = "IMAGENET1K_V1"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE = "config.json", "model.safetensors", "history.json"
EFFICIENTNET_STRIDES = 5  # EfficientNet-B0's trunk halves the resolution five times (stride 32)
IMAGE_TOWER = ("image_trunk", "image_pool")  # the submodules a text-only model leaves out (and LiT locks)


def spatial_size(image_size: int) -> int:
    """Side of EfficientNet-B0's last feature map for a square input (each stride-2 layer rounds up)."""
    side = image_size
    for _ in range(EFFICIENTNET_STRIDES):
        side = (side + 1) // 2
    return side


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean feature queries [mean + spatial positions].

    Args:
        spatial: side of the (square) feature map.
        width: channels of the feature map.
        heads: attention heads (must divide ``width``).
        output_dim: dimension of the output projection.
    """

    def __init__(self, spatial: int, width: int, heads: int, output_dim: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"pool_heads={heads} must divide the feature width {width}")
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(spatial * spatial + 1, width) / width ** 0.5)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.c_proj = nn.Linear(width, output_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pool ``(N, C, H, W)`` features into ``(N, output_dim)``."""
        tokens = features.flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.positional_embedding
        query = self._split_heads(self.q_proj(tokens[:, :1]))  # the mean token is the only query
        keys, values = self._split_heads(self.k_proj(tokens)), self._split_heads(self.v_proj(tokens))
        pooled = F.scaled_dot_product_attention(query, keys, values)  # (N, heads, 1, C / heads)
        return self.c_proj(pooled.transpose(1, 2).flatten(1))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (N, L, C) -> (N, heads, L, C / heads)


def zero_init_residual_blocks(trunk: nn.Module) -> None:
    """Zero the last BatchNorm scale of every residual MBConv block, so each starts as identity.

    The "zero-init residual" trick (Goyal et al. 2017, as in torchvision's ResNet option): a
    randomly initialised EfficientNet-B0 then learns colours and shapes of small objects several
    times faster, which is what makes from-scratch training fit in minutes on a CPU.
    """
    for module in trunk.modules():
        if isinstance(module, MBConv) and module.use_res_connect:
            nn.init.zeros_(module.block[-1][1].weight)


class DualEncoderModel(nn.Module):
    """The two towers, their projections and the temperature.

    Args:
        config: the model sizes.
        text_config: the DistilBERT config (vocabulary size and special ids set).
        text_model: an already loaded DistilBERT (pretrained); built from ``text_config`` if None.
        image_weights: torchvision weights name for EfficientNet-B0, or None for random init.
        with_image_tower: False builds the text tower and the temperature only (:data:`IMAGE_TOWER` left out),
            for encoding texts.
    """

    def __init__(self, config: DualEncoderConfig, text_config: DistilBertConfig,
                 text_model: DistilBertModel | None = None, image_weights: str | None = None,
                 with_image_tower: bool = True):
        super().__init__()
        self.config = config
        self.with_image_tower = with_image_tower
        self.text_model = text_model if text_model is not None else DistilBertModel(text_config)
        self.text_norm = nn.LayerNorm(text_config.dim)
        self.text_projection = nn.Linear(text_config.dim, config.embed_dim, bias=False)
        if with_image_tower:
            trunk = torchvision.models.efficientnet_b0(weights=image_weights,
                                                       stochastic_depth_prob=config.stochastic_depth)
            if image_weights is None:
                zero_init_residual_blocks(trunk)
            self.image_trunk = trunk.features.to(memory_format=torch.channels_last)  # faster convolutions on CPU
            width = trunk.classifier[-1].in_features
            self.image_pool = AttentionPool2d(spatial_size(config.image_size), width, config.pool_heads,
                                              config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``(N, embed_dim)`` of ``(N, 3, S, S)`` pixels."""
        return self.image_pool(self.image_trunk(pixels.contiguous(memory_format=torch.channels_last)))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings ``(N, embed_dim)`` from right-padded token ids."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = self.text_norm(hidden)
        last = attention_mask.sum(dim=1) - 1  # end-of-text: the last non-padding position
        return self.text_projection(hidden[torch.arange(len(hidden), device=hidden.device), last])

    def temperature(self) -> torch.Tensor:
        """The logit scale ``exp(logit_scale)``, clamped to at most 100 as in CLIP."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L2-normalised image and text embeddings of a batch of pairs, and the logit scale."""
        images = F.normalize(self.encode_image(pixels), dim=-1)
        texts = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        return images, texts, self.temperature()


def train_tokenizer(captions: list[str], vocab_size: int = 1000, context_length: int = 32) -> PreTrainedTokenizerFast:
    """Build a lower-casing BERT-style WordPiece tokenizer whose vocabulary comes from captions.

    The vocabulary is the special tokens, the ASCII letters, digits and punctuation (alone and
    as ``##`` continuations), then the most frequent whole words of ``captions`` (ties broken
    alphabetically) up to ``vocab_size``. Counting words instead of running the ``tokenizers``
    WordPiece trainer keeps it deterministic (the trainer's merges depend on hash order). Any
    ASCII word tokenizes (unknown words into characters); other characters become ``[UNK]``.
    Encodings are ``[CLS] ... [SEP]``, right-padded with ``[PAD]``.

    Args:
        captions: training captions.
        vocab_size: the most tokens in the vocabulary (fewer when the captions have fewer words).
        context_length: the tokenizer's ``model_max_length``.

    Returns:
        The tokenizer.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters)]))
    counts = Counter(word for caption in captions
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    words = sorted((word for word in counts if word not in vocab), key=lambda word: (-counts[word], word))
    vocab += words[:max(0, vocab_size - len(vocab))]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(token, vocab.index(token)) for token in ("[CLS]", "[SEP]")])
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=context_length, pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def build_dual_encoder(config: DualEncoderConfig, captions: list[str] | None = None
                       ) -> tuple[DualEncoderModel, PreTrainedTokenizerFast]:
    """A fresh model and its tokenizer.

    Args:
        config: the sizes (and the ``pretrained`` flag).
        captions: training captions for the offline tokenizer (not needed with ``pretrained``).

    Returns:
        ``(model, tokenizer)``.

    Raises:
        CheckpointError: ``pretrained`` and the weights cannot be fetched (no network).
    """
    if not config.pretrained:
        tokenizer = train_tokenizer(captions or [], config.vocab_size, config.context_length)
        text_config = DistilBertConfig(
            vocab_size=len(tokenizer), dim=config.text_dim, n_layers=config.text_layers, n_heads=config.text_heads,
            hidden_dim=config.text_hidden_dim, max_position_embeddings=config.context_length,
            dropout=config.text_dropout, attention_dropout=config.text_dropout, initializer_range=config.text_init_std,
            pad_token_id=tokenizer.pad_token_id)
        return DualEncoderModel(config, text_config), tokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(PRETRAINED_TEXT, model_max_length=config.context_length)
        text_model = DistilBertModel.from_pretrained(PRETRAINED_TEXT)
    except OSError as error:
        raise offline_error(f"hf:{PRETRAINED_TEXT}", error) from error
    try:
        model = DualEncoderModel(config, text_model.config, text_model, image_weights=PRETRAINED_IMAGE_WEIGHTS)
    except (OSError, RuntimeError) as error:  # urllib errors are OSErrors
        raise offline_error(f"torchvision:efficientnet_b0@{PRETRAINED_IMAGE_WEIGHTS}", error) from error
    return model, tokenizer


def image_transform(image_size: int) -> transforms.Compose:
    """PIL RGB image of any size -> normalised ``(3, S, S)`` float tensor (bicubic resize)."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class DualEncoder(Encoder):
    """A :class:`DualEncoderModel` behind the common :class:`~clipeval.models.encoder.Encoder` interface.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        tokenizer: its tokenizer.
        spec: the checkpoint spec naming it.
        device: where it runs.
        precision: ``fp32``, ``fp16`` or ``bf16`` (the latter two via CUDA autocast).
    """

    def __init__(self, model: DualEncoderModel, tokenizer, spec: str, device: torch.device, precision: str = "fp32"):
        super().__init__(spec, device, precision, logit_scale=model.temperature().detach().item(),
                         context_length=model.config.context_length, text_only=not model.with_image_tower)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.transform = image_transform(model.config.image_size)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize to the model's square input size and normalise with ImageNet statistics."""
        return self.transform(image.convert("RGB"))

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, right-padded to the longest caption, truncated to the context."""
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        return self.model.encode_text(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))

    def truncated(self, texts) -> list[bool]:
        """For each caption, whether it has more than ``context_length`` tokens."""
        lengths = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(ids) > self.context_length for ids in lengths]

    def unknown_words(self, words) -> list[bool]:
        """For each word, whether it is not one token: the offline vocabulary holds whole words and single
        characters only (:func:`train_tokenizer`), so any other word is spelled, not known (with
        ``pretrained``, DistilBERT's WordPiece: the base rule)."""
        if self.model.config.pretrained:
            return super().unknown_words(words)
        return [len(self.tokenizer.tokenize(word)) != 1 for word in words]


def save_dual(model: DualEncoderModel, tokenizer, folder: str | Path, history: dict | None = None) -> Path:
    """Write a model folder atomically (a temporary sibling folder renamed into place).

    Args:
        model: the trained model.
        tokenizer: its tokenizer.
        folder: the target folder; replaced if it exists.
        history: the training history, saved as ``history.json``.

    Returns:
        ``folder`` as a :class:`Path`.
    """
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        config = {**asdict(model.config), "text_config": model.text_model.config.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, staging / WEIGHTS_FILE)
        tokenizer.save_pretrained(staging)
        if history is not None:
            (staging / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    return folder


def read_history(folder: str | Path) -> dict:
    """The training history saved with a model folder."""
    return json.loads((Path(folder) / HISTORY_FILE).read_text())


def load_dual_model(folder: str | Path, text_only: bool = False) -> tuple[DualEncoderModel, PreTrainedTokenizerFast]:
    """Rebuild a saved model (no network) and its tokenizer, on the CPU.

    Args:
        folder: a folder written by :func:`save_dual`.
        text_only: build and load the text tower and the temperature only (no EfficientNet is built).

    Returns:
        ``(model, tokenizer)``.

    Raises:
        CheckpointError: the folder or one of its files is missing.
    """
    folder = Path(folder).expanduser()
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        found = f"missing {', '.join(missing)} in" if folder.is_dir() else "no such folder"
        raise CheckpointError(f"dual:{folder}: {found} {where(folder)}; train a model there first "
                              f"(`python -m clipeval train --out {folder}`)")
    values = json.loads((folder / CONFIG_FILE).read_text())
    config = DualEncoderConfig.from_dict(values)
    model = DualEncoderModel(config, DistilBertConfig.from_dict(values["text_config"]), with_image_tower=not text_only)
    weights = load_file(folder / WEIGHTS_FILE)
    model.load_state_dict({name: tensor for name, tensor in weights.items()
                           if not text_only or name.split(".")[0] not in IMAGE_TOWER})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


def load_dual(spec: CheckpointSpec, device: torch.device, precision: str) -> DualEncoder:
    """Registry loader for ``dual:<folder>``.

    Args:
        spec: the parsed spec; its target is the model folder.
        device: where to run.
        precision: compute precision (already resolved).

    Returns:
        The encoder.
    """
    model, tokenizer = load_dual_model(spec.target)
    return DualEncoder(model, tokenizer, str(spec), device, precision)


def load_dual_text(spec: CheckpointSpec, device: torch.device, precision: str) -> DualEncoder:
    """Registry loader for ``dual:<folder>`` when only texts are encoded: no EfficientNet is built or read."""
    model, tokenizer = load_dual_model(spec.target, text_only=True)
    return DualEncoder(model, tokenizer, str(spec), device, precision)


def save_dual_encoder(encoder: DualEncoder, folder: Path) -> str:
    """:func:`save_dual` of a loaded encoder: ``dual:<folder>``."""
    save_dual(encoder.model.cpu(), encoder.tokenizer, folder)
    encoder.model.to(encoder.device)
    return f"dual:{folder}"


# A few-thousand-parameter dual encoder for tests and smoke runs (32 px images, 16-token captions).
TINY_CONFIG = DualEncoderConfig(embed_dim=16, image_size=32, text_dim=32, text_layers=2, text_heads=2,
                                text_hidden_dim=37, context_length=16, pool_heads=4)


def build_tiny_dual(folder: Path, seed: int) -> str:
    """A tiny random dual encoder, its tokenizer built from a few scene captions: ``dual:<folder>``."""
    from clipeval.models.tiny import mark_tiny

    torch.manual_seed(seed)
    model, tokenizer = build_dual_encoder(TINY_CONFIG, ["a red circle", "two blue squares", "a green cross"])
    mark_tiny(save_dual(model, tokenizer, folder), "dual encoder", seed)
    return f"dual:{folder}"


FAMILY = CheckpointFamily(prefix="dual", description="dual encoder trained here", load=load_dual,
                          load_text=load_dual_text, save=save_dual_encoder, image_tower=IMAGE_TOWER,
                          build_tiny=build_tiny_dual)
