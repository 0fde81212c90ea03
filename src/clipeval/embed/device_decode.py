"""The torchvision decoder: plain JPEGs decoded by ``torchvision.io.decode_jpeg`` and preprocessed on the
model's device (one nvJPEG call per batch on CUDA), every other file through Pillow's exact path so that a run's
rows and statuses do not depend on the decoder. docs/speed.md ("Decoding on the model's device") says which
JPEGs qualify and how far the pixels move.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from PIL import ExifTags

from clipeval.data.images import decode_image, open_image
from clipeval.models.encoder import Encoder

_ORIENTATION = ExifTags.Base.Orientation


def is_plain_jpeg(data: bytes, max_pixels: int) -> bool:
    """Whether torchvision may decode ``data`` to the same image Pillow would (read from the header only)."""
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return False
    try:
        with open_image(io.BytesIO(data)) as opened:
            width, height = opened.size
            return (opened.format == "JPEG" and opened.mode in ("RGB", "L") and width * height <= max_pixels
                    and opened.getexif().get(_ORIENTATION, 1) == 1)
    except Exception:  # noqa: BLE001 - whatever the header's fault, Pillow's path reports it
        return False


def _decode_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """``uint8`` ``(3, H, W)`` RGB tensors on ``device``, one batched call; ``None`` where torchvision refuses one."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image decoders for TorchCodec (docs/speed.md)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the batch: find it
            decoded = []
            for one in encoded:
                try:
                    decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
            return decoded


def decode_on_device(datas: Sequence[bytes], encoder: Encoder,
                     max_pixels: int) -> tuple[torch.Tensor | None, list[tuple[str, str]]]:
    """Decode and preprocess a batch on ``encoder.device``: (the ok images' stacked pixels or ``None``,
    ``(status, error)`` per input)."""
    plain = [position for position, data in enumerate(datas) if is_plain_jpeg(data, max_pixels)]
    decoded = dict(zip(plain, _decode_jpegs([datas[position] for position in plain], encoder.device) if plain else []))
    on_device = [position for position in plain if decoded[position] is not None]
    pixels: dict[int, torch.Tensor] = {}
    if on_device:
        pixels.update(zip(on_device, encoder.preprocess_tensors([decoded[position] for position in on_device])))
    outcomes = []
    for position, data in enumerate(datas):
        if position in pixels:
            outcomes.append(("ok", ""))
            continue
        tensor, outcome = pillow_pixels(data, encoder.preprocess, max_pixels)
        outcomes.append(outcome)
        if tensor is not None:
            pixels[position] = tensor.to(encoder.device)
    if not pixels:
        return None, outcomes
    return torch.stack([pixels[position] for position in sorted(pixels)]), outcomes


def pillow_pixels(data: bytes, preprocess, max_pixels: int,
                  min_side: int | None = None) -> tuple[torch.Tensor | None, tuple[str, str]]:
    """Pillow's exact path for one image: :func:`decode_image`, then the model's ``preprocess`` (whose
    rejection is ``preprocess_error``, never an exception)."""
    loaded = decode_image(data, max_pixels, min_side)
    if loaded.status != "ok":
        return None, (loaded.status, loaded.error)
    try:
        return preprocess(loaded.image), ("ok", "")
    except Exception as error:  # noqa: BLE001 - a model's transform can reject odd images
        return None, ("preprocess_error", f"{type(error).__name__}: {error}")
