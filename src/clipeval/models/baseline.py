"""The non-CLIP baseline: BERT text encoder + ResNet-50 image encoder + a fixed linear projection.

The classic "naive" comparison for a jointly trained model. Texts go through BERT and are
mean-pooled over the last hidden states (padding masked out); images go through a torchvision
ResNet-50 and its last layer's output (the 1000-d ImageNet logits) is the image feature; a
linear layer projects the 768-d text feature to 1000-d, and the two are compared by cosine.
The projection is **not trained**: it is an ``nn.Linear`` with PyTorch's default init under a
fixed seed, so the same spec always gives the same scores.

Specs (``baseline:<variant>``):

* ``baseline:bert-resnet50`` — pretrained ``bert-base-uncased`` (its WordPiece tokenizer) and
  torchvision's ResNet-50 ``IMAGENET1K_V1`` weights. Needs a model hub; offline it raises the
  one-line :func:`clipeval.models.registry.offline_error`.
* ``baseline:bert-resnet50-random`` — the same architectures (full BERT-base config, ResNet-50)
  with seeded random weights; works offline. BERT's WordPiece vocabulary cannot be fetched
  offline, so this variant uses :func:`build_offline_tokenizer`: a BERT WordPiece tokenizer over
  a small fixed vocabulary (special tokens, single characters, their ``##`` continuations and
  a list of common caption words), built in code with no training, hence fully deterministic.
  Any lower-cased ASCII word tokenizes (into whole words or characters); words in other
  scripts become ``[UNK]``. With random weights the vocabulary does not affect quality.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

from clipeval.models.constants import IMAGENET_MEAN, IMAGENET_STD
from clipeval.models.encoder import Encoder
from clipeval.models.family import CheckpointFamily
from clipeval.models.registry import CheckpointError, CheckpointSpec, offline_error

SEED = 0
PRETRAINED_TEXT = "bert-base-uncased"
PRETRAINED_IMAGE_WEIGHTS = "IMAGENET1K_V1"
PROJECTION = "fixed-seeded (untrained)"
VARIANTS = {"bert-resnet50": "pretrained", "bert-resnet50-random": "random"}

# Common caption words, so that frequent words are one token in the offline vocabulary.
CAPTION_WORDS = """
a an the and or of in on at to with without for from by near next under over above below
behind front inside outside top side is are was were be being has have two three four some
many few one small large big little old young long short tall white black red blue green
yellow orange brown pink purple gray grey dark light bright man woman men women person people
boy girl child children baby player group crowd dog dogs cat cats horse horses bird birds cow
sheep elephant giraffe zebra bear animal car cars bus truck train plane airplane boat bike
bicycle motorcycle street road city building house room kitchen table chair bed window door
wall floor water beach sea ocean river lake grass field tree trees park sky snow mountain hill
food pizza plate bowl cake sandwich fruit banana apple cup glass bottle phone computer laptop
ball frisbee kite skateboard surfboard skis umbrella sign clock picture photo image
sitting standing walking running riding playing holding looking eating lying flying wearing
shirt hat jacket dress there this that it its his her their while down up
""".split()


def build_offline_tokenizer(model_max_length: int = 512) -> BertTokenizer:
    """A deterministic BERT WordPiece tokenizer over a small embedded vocabulary (no download).

    Args:
        model_max_length: longest token sequence the tokenizer reports (BERT's 512).

    Returns:
        A lower-casing, accent-stripping BERT tokenizer whose vocabulary is the special tokens,
        printable ASCII characters, ``##`` + each letter/digit, and :data:`CAPTION_WORDS`.
    """
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += [f"##{char}" for char in string.ascii_lowercase + string.digits]
    tokens += [word for word in dict.fromkeys(CAPTION_WORDS) if word not in tokens]
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)},
                         model_max_length=model_max_length)


def build_preprocess(image_size: int = 224) -> transforms.Compose:
    """ImageNet evaluation preprocessing: resize the short side to size·256/224, center-crop, normalise."""
    return transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224),
                          interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average ``hidden`` (N, L, H) over the tokens where ``attention_mask`` (N, L) is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class BaselineModel(nn.Module):
    """BERT (mean pooled) -> fixed linear projection, and ResNet logits, in one feature space.

    Args:
        text_encoder: a ``BertModel``; its hidden size is the projection's input size.
        image_encoder: a torchvision ResNet; the output size of its ``fc`` layer is the
            feature size (1000 for ImageNet ResNets).
        seed: seed of the projection's default (Kaiming-uniform) initialisation.
    """

    def __init__(self, text_encoder: BertModel, image_encoder: nn.Module, seed: int = SEED):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.projection = nn.Linear(text_encoder.config.hidden_size,
                                        image_encoder.fc.out_features)
        self.projection.requires_grad_(False)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected, mean-pooled BERT features, shape ``(N, image feature size)``."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.projection(mean_pool(hidden, attention_mask))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The ResNet's last-layer output (ImageNet logits), shape ``(N, 1000)``."""
        return self.image_encoder(pixels)


def build_baseline(text_config: BertConfig, image_arch: str = "resnet50", seed: int = SEED) -> BaselineModel:
    """Build a randomly initialised baseline, deterministic for a given ``seed``.

    Args:
        text_config: BERT configuration (``BertConfig()`` is BERT-base; tests pass a tiny one).
        image_arch: a torchvision ResNet name (``resnet50``; ``resnet18`` for a smaller one).
        seed: seeds the BERT, ResNet and projection initialisation; the global RNG is untouched.

    Returns:
        The model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = BertModel(text_config, add_pooling_layer=False)
        image_encoder = torchvision.models.get_model(image_arch, weights=None)
    return BaselineModel(text_encoder, image_encoder, seed).eval()


def describe_baseline(variant: str) -> str:
    """One sentence saying what a baseline variant is (shown in notebooks and manifests)."""
    weights = ("RANDOM-INIT (untrained) BERT-base and ResNet-50 weights, seed "
               f"{SEED}, offline tokenizer" if VARIANTS[variant] == "random" else
               f"pretrained {PRETRAINED_TEXT} and ResNet-50 {PRETRAINED_IMAGE_WEIGHTS}")
    return (f"baseline:{variant}: BERT text encoder (mean pooling over the last hidden states) + "
            f"ResNet-50 image encoder (1000-d last-layer logits) with {weights}; text projected "
            f"768->1000 by a {PROJECTION} linear layer (seed {SEED}); cosine similarity")


class BaselineEncoder(Encoder):
    """A :class:`BaselineModel` behind the common :class:`~clipeval.models.encoder.Encoder` interface.

    Attributes:
        projection: how the text->image projection was obtained (``fixed-seeded (untrained)``).
        description: one sentence describing the model, its weights and the projection.
    """

    def __init__(self, model: BaselineModel, tokenizer: BertTokenizer, spec: str,
                 device: torch.device, precision: str = "fp32", image_size: int = 224,
                 description: str = ""):
        config = model.text_encoder.config
        super().__init__(spec, device, precision,
                         context_length=min(tokenizer.model_max_length, config.max_position_embeddings))
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.transform = build_preprocess(image_size)
        self.projection = PROJECTION
        self.description = description

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                               return_tensors="pt").to(self.device)
        return self.model.encode_text(batch["input_ids"], batch["attention_mask"])

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        lengths = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(ids) > self.context_length for ids in lengths]


def resnet_weights_file() -> str:
    """The file name torchvision caches the pretrained ResNet-50 under (``$TORCH_HOME/hub/checkpoints/``)."""
    weights = torchvision.models.get_model_weights("resnet50")[PRETRAINED_IMAGE_WEIGHTS]
    return Path(urlparse(weights.url).path).name


def _load_pretrained(spec: str) -> tuple[BaselineModel, BertTokenizer]:
    """The pretrained parts. ``bert-base-uncased`` holds BERT's pre-training heads too (``cls.*``), which the
    encoder leaves out: transformers' load report of them is silenced, and a missing encoder weight is an error."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(PRETRAINED_TEXT)
        text_encoder, loading = BertModel.from_pretrained(PRETRAINED_TEXT, add_pooling_layer=False,
                                                          output_loading_info=True)
        image_encoder = torchvision.models.resnet50(weights=PRETRAINED_IMAGE_WEIGHTS)
    except OSError as error:  # no hub / no network: HF raises OSError, torchvision URLError
        raise offline_error(spec, error) from error
    finally:
        logging.set_verbosity(verbosity)
    if loading["missing_keys"]:
        raise CheckpointError(f"{spec}: {PRETRAINED_TEXT} lacks encoder weights "
                              f"{sorted(loading['missing_keys'])[:5]}; its download may be damaged")
    return BaselineModel(text_encoder, image_encoder, SEED), tokenizer


def load_baseline(spec: CheckpointSpec, device: torch.device, precision: str) -> BaselineEncoder:
    """Registry loader for ``baseline:`` specs (see the module docstring for the variants).

    Args:
        spec: parsed spec; ``spec.target`` is ``bert-resnet50`` or ``bert-resnet50-random``.
        device: where the model runs.
        precision: ``fp32``, ``fp16`` or ``bf16`` (reduced precision via CUDA autocast).

    Returns:
        The baseline encoder, in eval mode on ``device``.

    Raises:
        CheckpointError: unknown variant, or pretrained weights that cannot be fetched.
    """
    if spec.target not in VARIANTS:
        raise CheckpointError(f"checkpoint spec {spec}: unknown baseline {spec.target!r}; "
                              f"known: {', '.join(f'baseline:{name}' for name in VARIANTS)}")
    if VARIANTS[spec.target] == "random":
        model, tokenizer = build_baseline(BertConfig(), "resnet50", SEED), build_offline_tokenizer()
    else:
        model, tokenizer = _load_pretrained(str(spec))
    return BaselineEncoder(model, tokenizer, str(spec), device, precision,
                           description=describe_baseline(spec.target))


def _hub_repos(target: str) -> list[str]:
    """The pretrained variant downloads BERT and torchvision's ResNet-50 weight file."""
    return [PRETRAINED_TEXT, resnet_weights_file()] if VARIANTS.get(target) == "pretrained" else []


def _mirror_builders() -> dict:
    from clipeval.models.stand_ins import bert_repo

    return {PRETRAINED_TEXT: bert_repo}


FAMILY = CheckpointFamily(prefix="baseline", description="BERT + ResNet-50 baseline", load=load_baseline,
                          hub_repos=_hub_repos, mirror_builders=_mirror_builders)
