"""``open_clip:`` checkpoints.

Target forms:
    ``ARCH@TAG``             built-in architecture and pretrained tag (``ViT-B-16-SigLIP@webli``)
    ``ARCH@/path/file.pt``   built-in architecture with a local weights file
    ``hf-hub:org/repo``      open_clip config + weights from the Hugging Face hub
    ``/path/to/folder``      a local folder in the hub layout (``open_clip_config.json`` + weights)
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from clipeval.atomic import atomic_folder
from clipeval.models.encoder import Encoder
from clipeval.models.family import CheckpointFamily
from clipeval.models.registry import CheckpointError, CheckpointSpec, is_local_path, offline_error
from clipeval.paths import where

OPEN_CLIP_WEIGHTS = "open_clip_model.pt"
# The pretrained tags the paper profile names, mirrored for the rehearsal.
MIRRORED = (("ViT-B-32", "openai"), ("RN50", "openai"), ("ViT-B-16-SigLIP", "webli"))


class OpenClipEncoder(Encoder):
    """An open_clip model with its eval transform and tokenizer."""

    def __init__(self, spec, model, transform, tokenizer, device, precision):
        self.model = model.to(device).eval()
        self.transform = transform
        self.tokenizer = tokenizer
        bias = getattr(model, "logit_bias", None)
        super().__init__(spec, device, precision,
                         logit_scale=float(model.logit_scale.detach().exp()),
                         logit_bias=None if bias is None else float(bias.detach()),
                         context_length=int(tokenizer.context_length))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def truncated(self, texts) -> list[bool]:
        backend = getattr(self.tokenizer, "tokenizer", None)
        if backend is not None:  # open_clip's HFTokenizer (SigLIP): its transformers tokenizer, after its cleaning
            cleaned = [self.tokenizer.clean_fn(text) for text in texts]
            lengths = backend(cleaned, truncation=False, verbose=False)["input_ids"]
            return [len(ids) > self.context_length for ids in lengths]
        # +2 for the start and end tokens the tokenizer adds around the text
        return [len(self.tokenizer.encode(text)) + 2 > self.context_length for text in texts]

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        if not _reads_a_prefix(self.model):
            return self.model.encode_text(tokens)
        return _encode_prefix(self.model, tokens[:, :int(tokens.argmax(dim=-1).max()) + 1])


def _reads_a_prefix(model) -> bool:
    """Whether a caption's feature depends only on its tokens up to its end token: open_clip's ``CLIP`` text tower
    with a causal mask and end-token (``argmax``) pooling, as the OpenAI-style models have."""
    import open_clip

    mask = getattr(model, "attn_mask", None)
    if type(model) is not open_clip.model.CLIP or getattr(model, "text_pool_type", None) != "argmax" or mask is None:
        return False
    return bool(torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)))


def _encode_prefix(model, tokens: torch.Tensor) -> torch.Tensor:
    """``CLIP.encode_text`` on the batch's shortest prefix that holds every end token (not 77 positions).

    Under a causal mask no position attends to a later one, so the padding after every end token
    changes no end-token feature: the result is ``encode_text``'s up to float summation order
    (tests check 1e-5), at a fraction of the work for short captions.
    """
    length = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _model_name_and_pretrained(target: str) -> tuple[str, str | None, bool]:
    """Return (open_clip model name, pretrained tag or file, whether it is all local)."""
    if target.startswith("hf-hub:"):
        return target, None, False
    if "@" in target:
        arch, pretrained = target.split("@", 1)
        if is_local_path(pretrained):
            if not Path(pretrained).expanduser().is_file():
                raise CheckpointError(f"open_clip:{target}: no such weights file {where(pretrained)}")
            return arch, str(Path(pretrained).expanduser()), True
        return arch, pretrained, False
    if is_local_path(target):
        folder = Path(target).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            found = "no open_clip_config.json in" if folder.is_dir() else "no such folder"
            raise CheckpointError(f"open_clip:{target}: {found} {where(folder)}; expected a folder with "
                                  "open_clip_config.json and weights")
        return f"local-dir:{folder}", None, True
    raise CheckpointError(f"open_clip:{target}: use ARCH@TAG, ARCH@/path/weights, hf-hub:org/repo or a local folder")


def load_open_clip(spec: CheckpointSpec, device: torch.device, precision: str) -> OpenClipEncoder:
    """Load an ``open_clip:`` checkpoint with ``open_clip.create_model_and_transforms``.

    Raises:
        CheckpointError: malformed target, missing local files, unknown architecture, or a
            hub download with no network.
    """
    import open_clip

    model_name, pretrained, local = _model_name_and_pretrained(spec.target)
    arch = model_name.split("@")[0]
    if not local and not model_name.startswith("hf-hub:") and arch not in open_clip.list_models():
        raise CheckpointError(f"{spec}: unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    # OpenAI's weights were trained with QuickGELU; open_clip 3 builds the plain name with GELU and only warns
    # ("QuickGELU mismatch"), which silently costs accuracy: take the activation from the tag's own config.
    quick_gelu = bool(pretrained and not local and open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu"))
    try:
        model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained,
                                                                    force_quick_gelu=quick_gelu)
        tokenizer = open_clip.get_tokenizer(model_name)
    except (RuntimeError, OSError) as error:
        if local:
            raise CheckpointError(f"{spec}: cannot load local weights ({error})") from error
        raise offline_error(str(spec), error) from error
    return OpenClipEncoder(str(spec), model, transform, tokenizer, device, precision)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def save_open_clip(encoder: OpenClipEncoder, folder: Path) -> str:
    """Save as the spec was loaded: a bare weights file (``open_clip:ARCH@<folder>/open_clip_model.pt``) for
    ``ARCH@/path/file``, else a hub-layout folder (``open_clip:<folder>``) whose config carries the tag's
    QuickGELU and normalisation, so it preprocesses and computes as the base did."""
    import open_clip
    from safetensors.torch import save_file

    target = encoder.spec.partition(":")[2]
    arch, _, pretrained = target.partition("@")
    if pretrained and is_local_path(pretrained):
        with atomic_folder(folder) as staging:
            torch.save(_state(encoder.model), staging / OPEN_CLIP_WEIGHTS)
        return f"open_clip:{arch}@{folder / OPEN_CLIP_WEIGHTS}"
    if target.startswith("hf-hub:"):
        from open_clip.factory import _get_hf_config

        model_cfg = _get_hf_config(target.removeprefix("hf-hub:"))["model_cfg"]
    elif pretrained:
        model_cfg = dict(open_clip.get_model_config(arch))
        if open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu"):
            model_cfg["quick_gelu"] = True  # load_open_clip forces it for this tag
    else:
        model_cfg = json.loads((Path(target).expanduser() / "open_clip_config.json").read_text())["model_cfg"]
    config = {"model_cfg": model_cfg, "preprocess_cfg": open_clip.get_model_preprocess_cfg(encoder.model)}
    with atomic_folder(folder) as staging:
        (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2, default=list) + "\n")
        save_file(_state(encoder.model), staging / "open_clip_model.safetensors")
    return f"open_clip:{folder}"


def build_tiny_open_clip(folder: Path, seed: int) -> str:
    """A tiny random open_clip ViT in the hub layout: ``open_clip:<folder>``."""
    from clipeval.models.tiny import build_open_clip_folder, mark_tiny

    mark_tiny(build_open_clip_folder(folder, seed), "open_clip CLIP", seed)
    return f"open_clip:{folder}"


def hub_repos(target: str) -> list[str]:
    """``hf-hub:org/name`` is that repository; a pretrained tag is the ``hf_hub`` repository open_clip's own
    table names for it; local targets download nothing."""
    if target.startswith("hf-hub:"):
        return [target.removeprefix("hf-hub:")]
    arch, _, tag = target.partition("@")
    if not tag or is_local_path(tag):
        return []
    import open_clip

    hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    # open_clip's convention: "org/name/" is a repository, "org/name/file" a file in it
    return [os.path.split(hub)[0]] if hub else []


def _mirror_builders() -> dict:
    from clipeval.models.stand_ins import open_clip_repo

    return {hub_repos(f"{arch}@{tag}")[0]: partial(open_clip_repo, arch=arch, tag=tag) for arch, tag in MIRRORED}


FAMILY = CheckpointFamily(prefix="open_clip", description="open_clip", load=load_open_clip, save=save_open_clip,
                          image_tower=("visual",), build_tiny=build_tiny_open_clip, hub_repos=hub_repos,
                          mirror_builders=_mirror_builders)
