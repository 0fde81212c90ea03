"""Random-weight stand-ins of hub repositories, in the real layouts, written by the real libraries' save functions.

The families' rehearsal mirror entries (:attr:`clipeval.models.family.CheckpointFamily.mirror_builders`)
build with these; the mirror itself is :mod:`clipeval.rehearsal` (docs/gpu-box.md). Nothing here is
trained: every output made from these weights means nothing about the data.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from clipeval.models.tiny import build_clip_tokenizer, build_hf_clip

SEED = 0
SIGLIP_VOCAB_SIZE = 32_000


def save_vocabulary_files(tokenizer, folder: Path) -> None:
    """The vocabulary files beside ``tokenizer.json`` (``vocab.json`` + ``merges.txt``, or ``vocab.txt``).

    transformers 5 saves only ``tokenizer.json``; hub repositories made earlier hold these too,
    written here by the tokenizers library's own model ``save``.
    """
    tokenizer.backend_tokenizer.model.save(str(folder))


def hf_clip_repo(folder: Path, image_size: int, patch_size: int) -> None:
    """A transformers CLIP repository (small towers, real input size, CLIP's BPE)."""
    build_hf_clip(folder, SEED, image_size=image_size, patch_size=patch_size)
    save_vocabulary_files(build_clip_tokenizer(), folder)


def _open_clip_model_config(arch: str, tag: str) -> dict:
    """open_clip's model config for ``arch`` as a pretrained tag builds it (``quick_gelu`` from the tag)."""
    import open_clip

    config = dict(open_clip.get_model_config(arch))
    if open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"):
        config["quick_gelu"] = True
    return config


def open_clip_repo(folder: Path, arch: str, tag: str) -> None:
    """An open_clip hub repository for ``arch@tag``: weights, ``open_clip_config.json``, tokenizer files."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    config = _open_clip_model_config(arch, tag)
    torch.manual_seed(SEED)
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=bool(config.get("quick_gelu")))
    pretrained = open_clip.get_pretrained_cfg(arch, tag)
    model.visual.image_mean, model.visual.image_std = pretrained["mean"], pretrained["std"]
    model.visual.preprocess_cfg = {key: pretrained[key] for key in ("interpolation", "resize_mode")
                                   if key in pretrained}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.half().contiguous() for name, tensor in model.state_dict().items()},
              folder / "open_clip_model.safetensors")
    save_config_for_hf(model, folder / "open_clip_config.json", config)
    tokenizer_name = config.get("text_cfg", {}).get("hf_tokenizer_name")
    if tokenizer_name:
        siglip_tokenizer(folder, context_length=config["text_cfg"].get("context_length", 64))


def caption_words() -> list[str]:
    from clipeval.models.baseline import CAPTION_WORDS

    return list(dict.fromkeys(CAPTION_WORDS))


def _siglip_pieces() -> list[tuple[str, float]]:
    """A 32,000-piece unigram vocabulary laid out as SigLIP's c4-en SentencePiece model.

    ``<pad>``, ``</s>``, ``<unk>`` first; then ``▁`` with every printable ASCII character (alone
    and word-initial) so that any ASCII text tokenizes; then whole caption words and the CLIP BPE
    vocabulary's English words, scored by rank; the rest is filled with numbered pieces no text
    produces, so the ids span SigLIP's real vocabulary size.
    """
    from open_clip.tokenizer import SimpleTokenizer

    pieces = ["▁", *string.printable.strip(), *(f"▁{char}" for char in string.printable.strip())]
    pieces += [f"▁{word}" for word in caption_words()]
    for token in SimpleTokenizer().encoder:
        if token.endswith("</w>") and token[:-4].isascii() and token[:-4].isalpha():
            pieces.append(f"▁{token[:-4]}")
    pieces = list(dict.fromkeys(pieces))[:SIGLIP_VOCAB_SIZE - 3]
    pieces += [f"<unused{index}>" for index in range(SIGLIP_VOCAB_SIZE - 3 - len(pieces))]
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
            *((piece, -1.0 - index / 1000) for index, piece in enumerate(pieces))]


def siglip_tokenizer(folder: Path, context_length: int = 64) -> None:
    """SigLIP's tokenizer files: a T5 tokenizer (``tokenizer.json``...) and its ``spiece.model``.

    As open_clip's ``SigLipTokenizer`` saved it for the hub: a T5 tokenizer without extra ids,
    ``</s>`` (id 1) as both padding and end token.
    """
    from transformers import T5Tokenizer
    from transformers.utils import sentencepiece_model_pb2_new as sentencepiece_model

    pieces = _siglip_pieces()
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, pad_token="</s>", model_max_length=context_length)
    tokenizer.save_pretrained(folder)
    model = sentencepiece_model.ModelProto()
    kinds = {"<pad>": model.SentencePiece.CONTROL, "</s>": model.SentencePiece.CONTROL,
             "<unk>": model.SentencePiece.UNKNOWN}
    for piece, score in pieces:
        model.pieces.add(piece=piece, score=score, type=kinds.get(piece, model.SentencePiece.NORMAL))
    model.trainer_spec.model_type = model.trainer_spec.UNIGRAM
    model.trainer_spec.vocab_size = len(pieces)
    model.trainer_spec.pad_id, model.trainer_spec.eos_id, model.trainer_spec.unk_id = 0, 1, 2
    model.trainer_spec.bos_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    (folder / "spiece.model").write_bytes(model.SerializeToString())


def bert_repo(folder: Path) -> None:
    """``bert-base-uncased``: a small ``BertForMaskedLM`` (the real repository's class) and a WordPiece vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    from clipeval.models.baseline import build_offline_tokenizer

    tokenizer = build_offline_tokenizer()
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_vocabulary_files(tokenizer, folder)


def resnet50_weights_file(path: Path) -> None:
    """torchvision's ResNet-50 weight file, full size, under the name torchvision caches it."""
    import torchvision

    torch.manual_seed(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
