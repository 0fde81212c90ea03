"""Checkpoint specs and the registry that maps a spec's prefix to its loader.

A spec is ``<prefix>:<target>``; see DESIGN.md for the grammar. Examples::

    hf:openai/clip-vit-base-patch32        hf:/path/to/saved_dir
    open_clip:ViT-B-16-SigLIP@webli        open_clip:hf-hub:timm/ViT-B-16-SigLIP
    open_clip:ViT-B-32@/path/to/weights.pt baseline:bert-resnet50
    dual:outputs/offline/models/dual

Families (:class:`~clipeval.models.family.CheckpointFamily`) are named as ``module:attribute`` strings and
imported on first use, so scoring with one family never imports the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from clipeval.file_identity import content_identity, stat_fingerprint
from clipeval.paths import where

if TYPE_CHECKING:  # torch is imported by the families only: the command line answers --help without it
    from clipeval.models.encoder import Encoder
    from clipeval.models.family import CheckpointFamily

CHECKPOINT_FAMILIES: dict[str, str] = {
    "hf": "clipeval.models.hf:FAMILY",
    "open_clip": "clipeval.models.open_clip:FAMILY",
    "dual": "clipeval.models.dual:FAMILY",
    "baseline": "clipeval.models.baseline:FAMILY",
}

OFFLINE_HINT = ("no model hub is reachable; to run offline use a local checkpoint "
                "(`make data` builds hf:data/checkpoints/tiny-random/hf-clip and others) "
                "or the `offline` profile")


MODEL_PACKAGES = ("clipeval", "torch", "torchvision", "transformers", "open_clip_torch")


class CheckpointError(RuntimeError):
    """A checkpoint spec could not be parsed or loaded; the message is one readable line."""


@dataclass(frozen=True)
class CheckpointSpec:
    """A parsed checkpoint spec.

    Attributes:
        prefix: the registry key (``hf``, ``open_clip``, ``dual``, ``baseline``).
        target: everything after the first colon (hub name, path, ``arch@tag``...).
    """

    prefix: str
    target: str

    def __str__(self) -> str:
        return f"{self.prefix}:{self.target}"


def parse_spec(spec: str) -> CheckpointSpec:
    """Split ``prefix:target`` and check the prefix is registered.

    Raises:
        CheckpointError: empty target or unknown prefix.
    """
    prefix, sep, target = spec.strip().partition(":")
    if not sep or not target:
        raise CheckpointError(f"checkpoint spec {spec!r} must look like PREFIX:TARGET "
                              f"with PREFIX one of {', '.join(CHECKPOINT_FAMILIES)}")
    if prefix not in CHECKPOINT_FAMILIES:
        raise CheckpointError(f"checkpoint spec {spec!r}: unknown prefix {prefix!r}; "
                              f"known prefixes: {', '.join(CHECKPOINT_FAMILIES)}")
    return CheckpointSpec(prefix, target)


def is_local_path(target: str) -> bool:
    """True when ``target`` names something on disk: a path that exists, or looks like one (starts with
    ``/``, ``./``, ``../`` or ``~``, or has two ``/`` or more, which no hub name ``owner/name`` has)."""
    return (Path(target).expanduser().exists() or target.startswith(("/", "./", "../", "~"))
            or target.count("/") >= 2)


def local_folder(target: str, spec: str) -> str | None:
    """``target`` as a folder path when it names something local (``None`` for a hub name).

    Raises:
        CheckpointError: it looks local but is no folder (a ``save_pretrained`` folder is expected); the
            message names the absolute path tried.
    """
    if not is_local_path(target):
        return None
    if not Path(target).expanduser().is_dir():
        raise CheckpointError(f"{spec}: no such directory {where(target)}; expected a save_pretrained folder")
    return str(Path(target).expanduser())


def offline_error(spec: str, cause: BaseException) -> CheckpointError:
    """The one-line error for a hub checkpoint that cannot be fetched."""
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return CheckpointError(f"cannot load {spec}: {OFFLINE_HINT} ({type(cause).__name__}: {reason[:200]})")


def _files_under(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())


def weights_identity(spec: str, content: bool = False) -> dict | None:
    """What decides the weights a spec loads, read without loading them; ``None`` when unknowable.

    * a spec naming local files (a folder, a weights file): every file's path and stat
      fingerprint (size, modification and change times, inode, device:
      :func:`clipeval.file_identity.stat_fingerprint`), or with ``content`` every file's size and
      SHA-256. A checkpoint replaced in place gets a new identity even when ``cp -p`` or
      ``rsync -t`` kept its modification time (the change time and inode move); the content form
      is the slower check a caller falls back on when the stat form is unknown;
    * a spec whose weights are a seeded random init in code (``baseline:*-random``): the
      loader module's source hash (the same for both forms);
    * a hub name: ``None`` (the hub repo may change; the weights must be loaded and hashed).

    Both known forms also carry the versions of the packages that build the model.
    """
    parsed = parse_spec(spec)
    module = CHECKPOINT_FAMILIES[parsed.prefix].partition(":")[0]
    versions = {name: _version(name) for name in MODEL_PACKAGES}
    local = [Path(part).expanduser() for part in parsed.target.split("@")
             if is_local_path(part) and Path(part).expanduser().exists()]
    if local:
        items = [item for path in local for item in _files_under(path)]
        if content:
            return {"spec": spec, "content": content_identity(items), "versions": versions}
        files = [[str(item.resolve()), stat_fingerprint(item)] for item in items]
        return {"spec": spec, "files": files, "versions": versions}
    if parsed.prefix == "baseline" and parsed.target.endswith("-random"):
        source = Path(importlib.util.find_spec(module).origin).read_bytes()
        return {"spec": spec, "code_sha256": hashlib.sha256(source).hexdigest(), "versions": versions}
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


_quiet_loads = False  # set by quiet_model_loads(): every load is quiet, whatever its own progress flag


@contextlib.contextmanager
def quiet_model_loads():
    """Within the block every model load hides the model libraries' bars, as with ``progress=False`` (the
    command line's ``--no-progress``). Unlike :func:`quiet_progress_bars` it imports nothing: a command that
    loads no model (a re-run of a finished one) never imports transformers."""
    global _quiet_loads
    before, _quiet_loads = _quiet_loads, True
    try:
        yield
    finally:
        _quiet_loads = before


def load_progress(progress: bool):
    """The context a model load runs in: the libraries' bars as ``progress`` says, unless loads are quiet."""
    return contextlib.nullcontext() if progress and not _quiet_loads else quiet_progress_bars()


@contextlib.contextmanager
def quiet_progress_bars():
    """Hide transformers' and the Hub client's progress bars (``Loading weights``...) inside the block.

    The previous setting is restored on exit, so quiet stays scoped to one run.
    """
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_encoder(spec: str, device: str = "auto", precision: str = "auto", progress: bool = True,
                 text_only: bool = False) -> Encoder:
    """Load any registered checkpoint behind the common :class:`Encoder` interface.

    Args:
        spec: checkpoint spec string (``hf:...``, ``open_clip:...``, ``dual:...``, ``baseline:...``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (reduced precision only on CUDA).
        progress: show the model libraries' loading progress bars.
        text_only: only texts will be encoded: the family's ``load_text`` where it has one
            (:meth:`~clipeval.models.family.CheckpointFamily.loader`); the same text vectors, sooner.

    Returns:
        The loaded encoder, in eval mode on ``device``.

    Raises:
        CheckpointError: bad spec, missing local files, or a hub name with no network.
    """
    parsed = parse_spec(spec)
    family = checkpoint_family(parsed.prefix)
    from clipeval.models.encoder import resolve_device, resolve_precision

    torch_device = resolve_device(device)
    with load_progress(progress):
        return family.loader(text_only)(parsed, torch_device, resolve_precision(precision, torch_device))


def register_family(family: str) -> None:
    """Add a family from outside the package: ``family`` is ``"module:attribute"`` naming its
    :class:`~clipeval.models.family.CheckpointFamily`, imported when a spec with its prefix is first used.

    Raises:
        CheckpointError: the family's prefix is already registered to another module.
    """
    found = _import_family(family)
    known = CHECKPOINT_FAMILIES.get(found.prefix)
    if known not in (None, family):
        raise CheckpointError(f"checkpoint prefix {found.prefix!r} is already registered ({known})")
    CHECKPOINT_FAMILIES[found.prefix] = family


def checkpoint_family(prefix: str) -> CheckpointFamily:
    """The registered family of ``prefix`` (imported on first use).

    Raises:
        CheckpointError: an unknown prefix.
    """
    if prefix not in CHECKPOINT_FAMILIES:
        raise CheckpointError(f"unknown checkpoint prefix {prefix!r}; known prefixes: {', '.join(CHECKPOINT_FAMILIES)}")
    return _import_family(CHECKPOINT_FAMILIES[prefix])


def _import_family(family: str) -> CheckpointFamily:
    module_name, _, attribute = family.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "FAMILY")


def save_encoder(encoder: Encoder, folder: str | Path) -> str:
    """Write ``encoder``'s model into ``folder`` (replaced atomically) in its family's format.

    Returns:
        The checkpoint spec that loads the saved model.

    Raises:
        CheckpointError: a family that cannot be saved (``baseline:``).
    """
    family = checkpoint_family(parse_spec(encoder.spec).prefix)
    if family.save is None:
        savable = [prefix + ":" for prefix in CHECKPOINT_FAMILIES if checkpoint_family(prefix).save is not None]
        raise CheckpointError(f"{encoder.spec}: saving a {family.prefix}: model is not supported "
                              f"({', '.join(savable)} checkpoints are)")
    return family.save(encoder, Path(folder).expanduser())
