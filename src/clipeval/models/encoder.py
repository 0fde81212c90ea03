"""The one encoder interface every checkpoint loader returns.

A loader (see :mod:`clipeval.models.registry`) wraps a model in a subclass of :class:`Encoder`,
which sets ``self.model`` (the ``nn.Module``) and implements three hooks: ``preprocess`` (PIL
image -> CHW tensor), ``_image_features`` and ``_text_features`` (raw, unnormalised features).
The base class adds what every caller relies on: ``torch.inference_mode``, autocast on CUDA,
L2-normalised float32 output, and what an embedding cache needs to tell models apart
(:meth:`Encoder.weights_digest`, :meth:`Encoder.preprocess_id`, :meth:`Encoder.input_side`).
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from PIL import Image

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into ``cuda`` when a GPU is present, else ``cpu``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick the compute precision: ``auto`` is bf16 (or fp16) on CUDA and fp32 on CPU.

    Reduced precision is only used through CUDA autocast; on the CPU everything runs in fp32.
    """
    if precision not in (*PRECISIONS, "auto"):
        raise ValueError(f"precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


class Encoder(ABC):
    """Encode images and texts into one L2-normalised embedding space.

    Attributes:
        spec: the checkpoint spec string this encoder was loaded from (its name everywhere).
        device: where the model runs.
        precision: ``fp32``, ``fp16`` or ``bf16`` (the latter two via CUDA autocast).
        logit_scale: the model's learned temperature (already exponentiated), if it has one.
        logit_bias: the model's logit bias (SigLIP), if it has one.
        context_length: the most text tokens the model reads; longer captions are truncated.
        description: one sentence on what the model is (weights, untrained parts), shown in
            ``stats.json``; empty when the spec says it all.
        text_only: loaded without its image tower (``load_encoder(..., text_only=True)``): it encodes texts
            only, and its weights cannot stand for the checkpoint's.
    """

    description: str = ""

    def __init__(self, spec: str, device: torch.device, precision: str = "fp32",
                 logit_scale: float | None = None, logit_bias: float | None = None,
                 context_length: int = 77, text_only: bool = False):
        self.spec = spec
        self.device = device
        self.precision = precision
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.context_length = context_length
        self.text_only = text_only

    def _whole_model(self, needed_for: str) -> None:
        if self.text_only:
            raise RuntimeError(f"{self.spec} was loaded for texts only; {needed_for} needs the whole model "
                               "(load_encoder without text_only)")

    @property
    def name(self) -> str:
        """The checkpoint spec; used as the model's name in every output."""
        return self.spec

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB PIL image into the model's CHW float input tensor."""

    def preprocess_tensors(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`preprocess` as tensor operations, for images decoded by torchvision on any device.

        The default walks a torchvision ``Compose`` image transform (``self.transform``: the
        open_clip, dual and baseline transforms): ``Resize``, ``CenterCrop`` and ``Normalize`` run
        on the tensor, a to-tensor step scales ``uint8`` to ``[0, 1]`` as ``ToTensor`` does, an
        RGB-conversion step is skipped (decoded tensors are RGB already).

        Args:
            images: ``uint8`` ``(3, H, W)`` RGB tensors, all on one device.

        Returns:
            ``(N, C, H', W')`` float tensor on that device.

        Raises:
            ValueError: the transform has a step with no tensor equivalent here.
        """
        steps = [_tensor_step(step, self.spec) for step in getattr(self.transform, "transforms", [self.transform])]
        outputs = []
        for image in images:
            for step in steps:
                if step is not None:
                    image = step(image)
            outputs.append(image)
        return torch.stack(outputs)

    @abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw image features for a batch of preprocessed images already on ``device``."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """Raw text features for a batch of captions (tokenise, truncate, encode)."""

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether it is longer than the context and gets truncated (False if unknown)."""
        return [False] * len(texts)

    def unknown_words(self, words: Sequence[str]) -> list[bool] | None:
        """For each single word, whether the tokenizer does not know it (``None`` when it cannot be asked).

        A word is unknown when the tokenizer maps it to its unknown token, or can only spell it: a
        word of three or more characters broken into single characters (WordPiece and BPE fall back
        to characters for words outside their vocabulary). Subword splits of known parts
        (``play ##ing``) count as known.
        """
        tokenizer = getattr(self, "tokenizer", None)
        backend = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        for candidate in (tokenizer, backend):
            if hasattr(candidate, "tokenize") and hasattr(candidate, "unk_token"):
                return [_unknown(word, candidate.tokenize(word), candidate.unk_token) for word in words]
        if hasattr(tokenizer, "encode") and hasattr(tokenizer, "decoder"):  # open_clip's CLIP BPE tokenizer
            return [_unknown(word, [tokenizer.decoder[i] for i in tokenizer.encode(word)], None) for word in words]
        return None

    def weights_digest(self) -> str:
        """SHA-256 over the loaded weights (every state-dict tensor's name, dtype, shape and bytes).

        Identifies the weights whatever their source (a hub name, a local file, a seeded random
        init), so a retrained model or a changed file never matches an older cache entry.
        """
        self._whole_model("the weights' digest")
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        return digest.hexdigest()

    def preprocess_id(self) -> str:
        """A description of the image transform; equal descriptions mean equal preprocessing."""
        return repr(self.transform)

    def input_side(self) -> int | None:
        """The side the image transform resizes to (its first ``size``), ``None`` when unknown."""
        for step in getattr(self.transform, "transforms", ()):
            size = getattr(step, "size", None)
            if size is not None:
                return int(max(size)) if isinstance(size, (tuple, list)) else int(size)
        return None

    def _autocast(self):
        if self.device.type == "cuda" and self.precision != "fp32":
            return torch.autocast("cuda", dtype=PRECISIONS[self.precision])
        return contextlib.nullcontext()

    def trainable_features(self, pixels: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unnormalised) image and text features with autograd on, for fine-tuning.

        The same hooks :meth:`encode_images` and :meth:`encode_texts` call, outside inference
        mode and without autocast (the training loop owns mixed precision), so a model trained
        through this method is scored by exactly the computation it was trained with.

        Args:
            pixels: ``(N, C, H, W)`` preprocessed images, on any device.
            texts: captions.

        Returns:
            ``(image features, text features)`` on ``device``.
        """
        self._whole_model("fine-tuning")
        return self._image_features(pixels.to(self.device, non_blocking=True)), self._text_features(list(texts))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed a batch of preprocessed images.

        Args:
            pixels: ``(N, C, H, W)`` tensor from :meth:`preprocess`, on any device.

        Returns:
            ``(N, D)`` float32 CPU tensor, each row of unit L2 norm.
        """
        self._whole_model("encoding images")
        with torch.inference_mode(), self._autocast():
            features = self._image_features(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed a batch of captions.

        Args:
            texts: captions (any Unicode); longer ones are truncated to ``context_length``.

        Returns:
            ``(N, D)`` float32 CPU tensor, each row of unit L2 norm.
        """
        with torch.inference_mode(), self._autocast():
            features = self._text_features(list(texts))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def _tensor_step(step, spec: str):
    """A torchvision transform step as a function on ``uint8`` / float image tensors (``None``: nothing to do)."""
    from torchvision import transforms

    if isinstance(step, transforms.Resize):
        return lambda image: _resize_like_pillow(image, step)
    if isinstance(step, (transforms.CenterCrop, transforms.Normalize)):
        return step
    if isinstance(step, transforms.ToTensor):  # and open_clip's MaybeToTensor, which passes tensors through
        return lambda image: image.float().div(255)
    if type(step).__name__ == "MaybeConvertMode" or getattr(step, "__name__", "") == "_convert_to_rgb":
        return None
    raise ValueError(f"{spec}: its image transform step {step!r} has no tensor equivalent, so the torchvision "
                     "decoder cannot preprocess for it; use --decoder pillow")


def _resize_like_pillow(image: torch.Tensor, step) -> torch.Tensor:
    """torchvision's ``Resize`` as Pillow computes it on an 8-bit image: the width first, rounded to 8 bits, then the
    height. One pass with no rounding between (torchvision's own) differs by up to 15 levels at sharp edges under a
    large bicubic reduction, where the kernel's negative lobes overshoot and Pillow clips between its passes."""
    from torchvision.transforms import functional

    height, width = image.shape[-2:]
    size = [step.size] if isinstance(step.size, int) else list(step.size)
    if len(size) == 2:
        new_height, new_width = size
    else:  # the short side to size[0], the long one in proportion (truncated), at most max_size
        short, long = sorted((height, width))
        new_short, new_long = size[0], int(size[0] * long / short)
        if step.max_size is not None and new_long > step.max_size:
            new_short, new_long = int(step.max_size * new_short / new_long), step.max_size
        new_height, new_width = (new_short, new_long) if height <= width else (new_long, new_short)
    across = functional.resize(image, [height, new_width], step.interpolation, antialias=step.antialias)
    return functional.resize(across, [new_height, new_width], step.interpolation, antialias=step.antialias)


def _unknown(word: str, pieces: list[str], unk_token: str | None) -> bool:
    """Whether ``pieces`` (a word's tokens) hold the unknown token, or spell a 3+ character word letter by letter."""
    if unk_token is not None and unk_token in pieces:
        return True
    letters = [piece.removeprefix("##").removesuffix("</w>").lstrip("Ġ▁") for piece in pieces]
    return len(word) >= 3 and len(letters) > 1 and all(len(letter) <= 1 for letter in letters)
