"""Build tiny, randomly initialised checkpoints in the real on-disk formats.

They let tests, smoke runs and users without network exercise the real loading code
(``from_pretrained``, ``open_clip.create_model_and_transforms``). Their scores mean nothing.

Layout written under ``root`` (default ``data/checkpoints/tiny-random``)::

    hf-clip/       CLIPModel.save_pretrained + CLIPTokenizer + CLIPImageProcessor  -> hf:<root>/hf-clip
    hf-siglip/     SiglipModel.save_pretrained + tokenizer + SiglipImageProcessor -> hf:<root>/hf-siglip
    open_clip/     open_clip_config.json + open_clip_model.safetensors           -> open_clip:<root>/open_clip
    open_clip_arch/clipeval-tiny-ViT.json + weights.pt  (an architecture config and a bare weights
                   file, for ``open_clip:clipeval-tiny-ViT@<root>/open_clip_arch/weights.pt`` once
                   the folder is registered with ``open_clip.add_model_config``)

Each folder also holds ``clipeval_checkpoint.json`` (:func:`clipeval.models.catalogue.write_info_file`),
so the catalogue marks them random-init wherever they are saved.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from clipeval.models.catalogue import write_info_file
from clipeval.models.constants import OPENAI_MEAN, OPENAI_STD
from clipeval.paths import TINY_CHECKPOINTS_DIR

OPEN_CLIP_TINY_ARCH = "clipeval-tiny-ViT"
IMAGE_SIZE = 32


def _text_config(eos_token_id: int) -> dict:
    return dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                eos_token_id=eos_token_id, pad_token_id=49407)


def _vision_config(image_size: int = IMAGE_SIZE, patch_size: int = 8) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                image_size=image_size, patch_size=patch_size)


def build_clip_tokenizer():
    """The real CLIP BPE tokenizer, built from the vocabulary open_clip ships (no download)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as handle:
        merges = handle.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)},
                         merges=[tuple(m.split()) for m in merges],
                         model_max_length=77)


def build_hf_clip(folder: Path, seed: int = 0, image_size: int = IMAGE_SIZE, patch_size: int = 8,
                  hidden_act: str = "quick_gelu") -> Path:
    """Save a tiny random ``CLIPModel`` with its tokenizer and image processor to ``folder``.

    Args:
        folder: where ``save_pretrained`` writes.
        seed: the weights' seed.
        image_size, patch_size: the vision tower's input side and patch side (and the image
            processor's resize and crop side): a real checkpoint's, to preprocess as it does.
        hidden_act: both towers' activation (OpenAI's and MetaCLIP's checkpoints use ``quick_gelu``).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config={**_text_config(eos_token_id=49407), "hidden_act": hidden_act},
                        vision_config={**_vision_config(image_size, patch_size), "hidden_act": hidden_act},
                        projection_dim=32)
    CLIPModel(config).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def build_hf_siglip(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random ``SiglipModel`` (with the CLIP BPE tokenizer, usable offline) to ``folder``."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    text = {k: v for k, v in _text_config(eos_token_id=49407).items() if k != "bos_token_id"}
    config = SiglipConfig(text_config={**text, "max_position_embeddings": 16},
                          vision_config=_vision_config())
    SiglipModel(config).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def open_clip_tiny_config() -> dict:
    """A tiny ViT open_clip model config (same schema as open_clip's ``model_configs/*.json``)."""
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def build_open_clip_folder(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random open_clip model in the hub layout (``open_clip_config.json`` + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**open_clip_tiny_config())
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": open_clip_tiny_config(), "preprocess_cfg": preprocess}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def build_open_clip(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny random open_clip model twice: hub-layout folder, and arch config + weights file.

    Returns:
        (hub-layout folder, bare weights file).
    """
    from safetensors.torch import load_file

    folder = build_open_clip_folder(root / "open_clip", seed)
    arch_folder = root / "open_clip_arch"
    arch_folder.mkdir(parents=True, exist_ok=True)
    (arch_folder / f"{OPEN_CLIP_TINY_ARCH}.json").write_text(json.dumps(open_clip_tiny_config(), indent=2))
    weights = arch_folder / "weights.pt"
    torch.save(load_file(folder / "open_clip_model.safetensors"), weights)
    return folder, weights


def mark_tiny(folder: Path, family: str, seed: int) -> None:
    """The info file of a tiny checkpoint: random-init wherever it is saved (its scores mean nothing)."""
    write_info_file(folder, f"tiny randomly initialised {family} built by `make data` (seed {seed}); "
                            "its scores mean nothing", random_init=True)


def build_tiny_checkpoints(root: Path = TINY_CHECKPOINTS_DIR, seed: int = 0) -> dict[str, str]:
    """Build every tiny checkpoint under ``root`` and return their checkpoint specs by name."""
    root = Path(root)
    build_hf_clip(root / "hf-clip", seed)
    build_hf_siglip(root / "hf-siglip", seed)
    folder, weights = build_open_clip(root, seed)
    for name, family in (("hf-clip", "transformers CLIP"), ("hf-siglip", "transformers SigLIP"),
                         ("open_clip", "open_clip CLIP"), ("open_clip_arch", "open_clip CLIP")):
        mark_tiny(root / name, family, seed)
    return {"hf-clip": f"hf:{root / 'hf-clip'}", "hf-siglip": f"hf:{root / 'hf-siglip'}",
            "open_clip": f"open_clip:{folder}",
            "open_clip_arch": f"open_clip:{OPEN_CLIP_TINY_ARCH}@{weights}"}


def build_tiny_captioner(folder: Path, seed: int = 0, tokenizer=None, image_size: int = IMAGE_SIZE,
                         patch_size: int = 8) -> Path:
    """Save a tiny random ViT + GPT-2 ``VisionEncoderDecoderModel`` captioner to ``folder``.

    The layout of ``nlpconnect/vit-gpt2-image-captioning`` (model, tokenizer, ``ViTImageProcessor``).
    Its captions are random tokens, but greedy decoding gives each image its own.

    Args:
        folder: where ``save_pretrained`` writes.
        seed: the weights' seed.
        tokenizer: a transformers tokenizer with start and end tokens (default: the CLIP BPE
            tokenizer, built with no download).
        image_size, patch_size: the ViT's input side and patch side (and the image processor's size).

    Returns:
        ``folder``, loadable by :class:`clipeval.labels.captioner.Captioner`.
    """
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer()
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    # A wider initialisation than the default 0.02, so that the random captions differ from image to image.
    encoder = ViTConfig(**_vision_config(image_size, patch_size), initializer_range=0.5)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                         initializer_range=0.5, bos_token_id=start, eos_token_id=end, pad_token_id=end,
                         add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, end, end
    model = VisionEncoderDecoderModel(config)
    model.generation_config.update(decoder_start_token_id=start, bos_token_id=start, eos_token_id=end,
                                   pad_token_id=end)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    write_info_file(folder, f"tiny randomly initialised transformers ViT-GPT2 captioner (seed {seed}); "
                            "its captions mean nothing", random_init=True)
    return Path(folder)


def build_tiny_classifier(folder: Path, label_names: list[str], multi_label: bool = False, seed: int = 0) -> Path:
    """Save a tiny random timm classifier (``test_efficientnet``, 32-pixel input) in timm's Hugging Face layout.

    Returns:
        ``folder``, loadable by :class:`clipeval.labels.classifier.Classifier`.
    """
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(label_names))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "crop_pct": 1.0,
                            "label_names": list(label_names)}
    save_for_hf(model, folder, model_config={"label_names": list(label_names), "multi_label": multi_label})
    write_info_file(folder, f"tiny randomly initialised timm classifier (seed {seed}); its labels mean nothing",
                    random_init=True)
    return Path(folder)
