"""Save a loaded (and changed: fine-tuned) encoder in its family's own format, loadable by the same kind of spec.

================================  =========================================================
base spec                          saved as
================================  =========================================================
``hf:NAME_OR_DIR``                 ``save_pretrained`` folder (model, tokenizer, image
                                   processor) -> ``hf:OUT``
``open_clip:ARCH@/path/file``      the bare weights ``OUT/open_clip_model.pt`` ->
                                   ``open_clip:ARCH@OUT/open_clip_model.pt``
``open_clip:ARCH@TAG``,            a hub-layout folder (``open_clip_config.json`` with the
``open_clip:hf-hub:ORG/REPO``,     model and preprocessing configs, ``open_clip_model.safetensors``)
``open_clip:/path/folder``         -> ``open_clip:OUT``; a tag's QuickGELU and its
                                   normalisation are written into the config, so the folder
                                   preprocesses and computes as the base did
``dual:DIR``                       :func:`clipeval.models.dual.save_dual` -> ``dual:OUT``
================================  =========================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clipeval.atomic import atomic_folder
from clipeval.models.encoder import Encoder
from clipeval.models.registry import CheckpointError, is_local_path, parse_spec

OPEN_CLIP_WEIGHTS = "open_clip_model.pt"


def save_encoder(encoder: Encoder, folder: str | Path) -> str:
    """Write ``encoder``'s model to ``folder`` (replaced atomically) in the format its spec's family reads.

    Args:
        encoder: a loaded ``hf:``, ``open_clip:`` or ``dual:`` encoder (its ``spec`` says how it was loaded).
        folder: the checkpoint folder.

    Returns:
        The checkpoint spec that loads the saved model.

    Raises:
        CheckpointError: a family that cannot be saved (``baseline:``).
    """
    parsed, folder = parse_spec(encoder.spec), Path(folder).expanduser()
    if parsed.prefix == "hf":
        with atomic_folder(folder) as staging:
            for part in (encoder.model, encoder.tokenizer, encoder.image_processor):
                part.save_pretrained(staging)
        return f"hf:{folder}"
    if parsed.prefix == "dual":
        from clipeval.models.dual import save_dual

        save_dual(encoder.model.cpu(), encoder.tokenizer, folder)
        encoder.model.to(encoder.device)
        return f"dual:{folder}"
    if parsed.prefix == "open_clip":
        return _save_open_clip(encoder, parsed.target, folder)
    raise CheckpointError(f"{encoder.spec}: saving a {parsed.prefix}: model is not supported "
                          "(hf:, open_clip: and dual: checkpoints are)")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def _save_open_clip(encoder: Encoder, target: str, folder: Path) -> str:
    import open_clip
    from safetensors.torch import save_file

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
            model_cfg["quick_gelu"] = True  # the loader forces it for this tag (clipeval.models.open_clip)
    else:
        model_cfg = json.loads((Path(target).expanduser() / "open_clip_config.json").read_text())["model_cfg"]
    config = {"model_cfg": model_cfg, "preprocess_cfg": open_clip.get_model_preprocess_cfg(encoder.model)}
    with atomic_folder(folder) as staging:
        (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2, default=list) + "\n")
        save_file(_state(encoder.model), staging / "open_clip_model.safetensors")
    return f"open_clip:{folder}"
