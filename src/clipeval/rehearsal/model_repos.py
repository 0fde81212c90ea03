"""Random-weight model repositories under real names, written by the real libraries' save functions.

Each builder writes into an empty folder what the real repository holds and the libraries read:

* transformers CLIP (``openai/clip-vit-*``, ``facebook/metaclip-b32-400m``): ``save_pretrained``
  of a small ``CLIPModel`` at the real input and patch size, the real CLIP BPE tokenizer (from
  the merges open_clip ships: ``vocab.json``, ``merges.txt``, ``tokenizer.json``) and the
  real image processor settings;
* open_clip pretrained tags: ``open_clip_model.safetensors`` and ``open_clip_config.json``
  (open_clip's ``save_config_for_hf``) for the **architecture open_clip builds for the name**
  (so full size: ViT-B/32 151M, RN50 102M, SigLIP ViT-B/16 203M parameters; stored in fp16,
  loaded into fp32 models), and for SigLIP the T5-style SentencePiece tokenizer open_clip loads
  with ``AutoTokenizer`` (``tokenizer.json``, ``spiece.model``...);
* ``bert-base-uncased`` (a small ``BertForMaskedLM`` and a WordPiece ``vocab.txt``) and
  torchvision's ResNet-50 weight file (full size: torchvision builds it by name);
* the labellers: timm's NoisyStudent EfficientNet-B4 (full size, ``timm.models.save_for_hf``)
  and a small ViT-GPT2 captioner with a byte-level BPE (GPT-2 style) tokenizer.

Nothing here is trained: every output made from these weights means nothing about the data.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

SEED = 0
SIGLIP_VOCAB_SIZE = 32_000


def _save_vocabulary_files(tokenizer, folder: Path) -> None:
    """The vocabulary files beside ``tokenizer.json`` (``vocab.json`` + ``merges.txt``, or ``vocab.txt``).

    transformers 5 saves only ``tokenizer.json``; hub repositories made earlier hold these too,
    written here by the tokenizers library's own model ``save``.
    """
    tokenizer.backend_tokenizer.model.save(str(folder))


def _drop_info_file(folder: Path) -> None:
    """The tiny builders mark their folders; a mirrored repository holds only what the real one does."""
    from clipeval.models.catalogue import CHECKPOINT_INFO_FILE

    (folder / CHECKPOINT_INFO_FILE).unlink(missing_ok=True)


def hf_clip(folder: Path, image_size: int, patch_size: int) -> None:
    """A transformers CLIP repository (small towers, real input size, CLIP's BPE)."""
    from clipeval.models.tiny import build_clip_tokenizer, build_hf_clip

    build_hf_clip(folder, SEED, image_size=image_size, patch_size=patch_size)
    _save_vocabulary_files(build_clip_tokenizer(), folder)


def _open_clip_model_config(arch: str, tag: str) -> dict:
    """open_clip's model config for ``arch`` as a pretrained tag builds it (``quick_gelu`` from the tag)."""
    import open_clip

    config = dict(open_clip.get_model_config(arch))
    if open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"):
        config["quick_gelu"] = True
    return config


def open_clip_pretrained(folder: Path, arch: str, tag: str) -> None:
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


def _caption_words() -> list[str]:
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
    pieces += [f"▁{word}" for word in _caption_words()]
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


def bert_base_uncased(folder: Path) -> None:
    """``bert-base-uncased``: a small ``BertForMaskedLM`` (the real repository's class) and a WordPiece vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    from clipeval.models.baseline import build_offline_tokenizer

    tokenizer = build_offline_tokenizer()
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _save_vocabulary_files(tokenizer, folder)


def torchvision_resnet50(path: Path) -> None:
    """torchvision's ResNet-50 weight file, full size, under the name torchvision caches it."""
    import torchvision

    torch.manual_seed(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)


def timm_classifier(folder: Path, name: str) -> None:
    """A timm hub repository for the pretrained ``name`` (``arch.tag``), full size, via ``save_for_hf``."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(SEED)
    model = timm.create_model(name, pretrained=False)
    save_for_hf(model.half(), folder, safe_serialization=True)


def gpt2_style_tokenizer(folder: Path):
    """A byte-level BPE tokenizer as GPT-2's (``<|endoftext|>`` as start, end and unknown token).

    Trained on the caption words (GPT-2's own merges cannot be fetched offline); its ``vocab.json``
    and ``merges.txt`` are written to ``folder`` and read back by ``GPT2Tokenizer``.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Tokenizer

    corpus = [" ".join(_caption_words())] * 4 + list(string.ascii_letters + string.digits + string.punctuation)
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(corpus, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = trained.save_model(str(folder))
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def vit_gpt2_captioner(folder: Path) -> None:
    """``nlpconnect/vit-gpt2-image-captioning``: a small ViT + GPT-2 at 224 px with a GPT-2 style tokenizer."""
    from clipeval.models.tiny import build_tiny_captioner

    build_tiny_captioner(folder, SEED, tokenizer=gpt2_style_tokenizer(folder), image_size=224, patch_size=16)
    _drop_info_file(folder)


def model_builders() -> dict[str, Callable[[Path], None]]:
    """Every model repository of the mirror: hub ``org/name`` -> builder of its folder."""
    from clipeval.labels.captioner import DEFAULT_MODEL as CAPTIONER
    from clipeval.labels.classifier import DEFAULT_MODEL as CLASSIFIER

    builders: dict[str, Callable[[Path], None]] = {
        "openai/clip-vit-base-patch32": partial(hf_clip, image_size=224, patch_size=32),
        "openai/clip-vit-base-patch16": partial(hf_clip, image_size=224, patch_size=16),
        "openai/clip-vit-large-patch14": partial(hf_clip, image_size=224, patch_size=14),
        "openai/clip-vit-large-patch14-336": partial(hf_clip, image_size=336, patch_size=14),
        "facebook/metaclip-b32-400m": partial(hf_clip, image_size=224, patch_size=32),
        "bert-base-uncased": bert_base_uncased,
        CAPTIONER: vit_gpt2_captioner,
    }
    for arch, tag in (("ViT-B-32", "openai"), ("RN50", "openai"), ("ViT-B-16-SigLIP", "webli")):
        builders[open_clip_repo(arch, tag)] = partial(open_clip_pretrained, arch=arch, tag=tag)
    builders[timm_repo(CLASSIFIER)] = partial(timm_classifier, name=CLASSIFIER)
    return builders


def open_clip_repo(arch: str, tag: str) -> str:
    """The hub repository open_clip downloads ``arch@tag`` from."""
    from clipeval.models.hub_mirror import spec_repos

    return spec_repos(f"open_clip:{arch}@{tag}")[0]


def timm_repo(name: str) -> str:
    """The hub repository timm downloads the pretrained ``name`` from."""
    import timm

    return timm.models.get_pretrained_cfg(name).hf_hub_id.rstrip("/")
