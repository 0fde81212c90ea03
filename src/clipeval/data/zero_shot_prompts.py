"""Class names and prompt templates for zero-shot classification: the packaged lists and the user's files.

A template is a sentence with ``{c}`` (CLIP_benchmark's spelling) or ``{}`` (OpenAI's ``data/prompts.md``)
where the class name goes; a class's text embedding is the average over its templates
(:mod:`clipeval.eval.zero_shot_classification`). The packaged lists live in ``zero_shot/``, each file beside a
``.source.json`` that names where it was copied from (repository, file and commit, or package and version):

==================  =================================================  ==============================
:func:`packaged_prompts`  class names                                   templates
==================  =================================================  ==============================
``imagenet1k``      open_clip's cleaned ImageNet-1k names (1,000)       OpenAI's 80 ImageNet templates
``cifar10``         OpenAI's CIFAR-10 names                             CLIP_benchmark's 18 CIFAR ones
``cifar100``        OpenAI's CIFAR-100 names                            CLIP_benchmark's 18 CIFAR ones
``scenes-shape``    the scenes' shapes                                  caption frames x colours (24)
``scenes-colour``   the scenes' colours                                 caption frames x shapes (16)
==================  =================================================  ==============================

ImageNet's val folders are WordNet ids (``n01440764``): :func:`imagenet_folder_classnames` maps them to the
readable names. A user's lists are read by :func:`read_classnames`, :func:`read_templates` and
:func:`read_folder_classnames`; anything unusable raises :class:`~clipeval.data.options.PairsTableError` with
one line saying what is wrong.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from pathlib import Path

from clipeval.data.options import PairsTableError
from clipeval.paths import where

ZERO_SHOT_DIR = Path(__file__).parent / "zero_shot"
# name -> (class names file, templates file), in ZERO_SHOT_DIR
PROMPT_FILES = {
    "imagenet1k": ("imagenet1k_classnames.txt", "imagenet1k_templates.txt"),
    "cifar10": ("cifar10_classnames.txt", "cifar_templates.txt"),
    "cifar100": ("cifar100_classnames.txt", "cifar_templates.txt"),
    "scenes-shape": ("scenes_shape_classnames.txt", "scenes_shape_templates.txt"),
    "scenes-colour": ("scenes_colour_classnames.txt", "scenes_colour_templates.txt"),
}
IMAGENET_WNIDS_FILE = "imagenet1k_wnids.txt"
_PLACEHOLDERS = {"c", ""}  # {c} and {}


@dataclass(frozen=True)
class PromptSet:
    """A dataset's class names and templates, with where each list comes from.

    Attributes:
        name: the key of :data:`PROMPT_FILES`.
        classnames: the class names in label order (names may repeat: ImageNet's cleaned list has two
            ``missile`` and two ``sunglasses``).
        templates: the templates, each with one ``{c}`` or ``{}``.
        sources: the ``.source.json`` of each list, under ``classnames`` and ``templates``.
    """

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    sources: dict


def fill_template(template: str, classname: str) -> str:
    """The prompt for one class: the template with the class name at its ``{c}`` or ``{}``."""
    return template.format(classname, c=classname)


def check_templates(templates: list[str] | tuple[str, ...], origin: str = "templates") -> tuple[str, ...]:
    """The templates as a tuple, each checked to hold exactly one class-name slot (``{c}`` or ``{}``).

    Raises:
        PairsTableError: no template, or one with no slot, two slots, another ``{...}`` field or a
            stray brace (write ``{{`` for a literal one).
    """
    if not templates:
        raise PairsTableError(f"{origin}: no template; give at least one, e.g. 'a photo of a {{c}}.'")
    for number, template in enumerate(templates, 1):
        if not isinstance(template, str):
            raise PairsTableError(f"{origin}: template {number} is {template!r}, not text")
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as error:
            raise PairsTableError(f"{origin}: template {number} {template!r}: {error} (write {{{{ for a literal "
                                  "brace)") from error
        if len(fields) != 1 or fields[0] not in _PLACEHOLDERS:
            raise PairsTableError(f"{origin}: template {number} {template!r} must hold the class name once, as {{c}} "
                                  f"or {{}}; it has {len(fields)} field(s) {fields}")
    return tuple(templates)


def _read_list(path: str | Path, what: str) -> list:
    """A list from a text file (one item a line; blank lines skipped) or a ``.json`` file holding a list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as error:
        raise PairsTableError(f"{path}: no such {what} file {where(path)}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise PairsTableError(f"{path}: cannot read the {what} ({type(error).__name__}: {error})") from error
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise PairsTableError(f"{path}: not JSON ({error}); a {what} file is a JSON list or one item a line") \
            from error
    if not isinstance(values, list):
        raise PairsTableError(f"{path}: holds a JSON {type(values).__name__}, not a list of {what}")
    return values


def read_classnames(path: str | Path) -> tuple[str, ...]:
    """Class names in label order: a text file with one name a line, or a JSON list.

    Raises:
        PairsTableError: the file is missing, empty or holds something other than names.
    """
    names = _read_list(path, "class names")
    bad = [name for name in names if not isinstance(name, str) or not name.strip()]
    if bad or not names:
        raise PairsTableError(f"{path}: " + (f"{len(bad)} entries are not names, e.g. {bad[0]!r}" if bad
                                             else "no class names"))
    return tuple(name.strip() for name in names)


def read_templates(path: str | Path) -> tuple[str, ...]:
    """Prompt templates: a text file with one a line, or a JSON list; each checked (:func:`check_templates`)."""
    return check_templates(_read_list(path, "templates"), str(path))


def read_folder_classnames(path: str | Path) -> dict[str, str]:
    """Readable names of class folders: a JSON object ``{folder: name}``, or text lines ``folder<TAB>name``.

    Raises:
        PairsTableError: the file is missing or malformed, or a folder is named twice.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError as error:
            raise PairsTableError(f"{path}: no such class-names file {where(path)}") from error
        except (OSError, ValueError) as error:
            raise PairsTableError(f"{path}: cannot read the folder names ({type(error).__name__}: {error})") \
                from error
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise PairsTableError(f"{path}: must hold one JSON object mapping each folder to its class name")
        return {str(folder): name.strip() for folder, name in mapping.items()}
    mapping = {}
    for number, line in enumerate(_read_list(path, "class names"), 1):
        folder, tab, name = line.partition("\t")
        if not tab or not name.strip():
            raise PairsTableError(f"{path}: line {number} {line[:80]!r} is not 'folder<TAB>name'")
        if folder in mapping:
            raise PairsTableError(f"{path}: folder {folder!r} is named twice")
        mapping[folder] = name.strip()
    return mapping


def list_source(path: str | Path) -> dict:
    """The ``.source.json`` beside a packaged list: where it was copied from."""
    return json.loads(Path(path).with_suffix(".source.json").read_text())


@functools.cache
def packaged_prompts(name: str) -> PromptSet:
    """A packaged dataset's class names and templates (:data:`PROMPT_FILES`).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    if name not in PROMPT_FILES:
        raise KeyError(f"no packaged prompts named {name!r}; known: {', '.join(PROMPT_FILES)}")
    classnames, templates = (ZERO_SHOT_DIR / file for file in PROMPT_FILES[name])
    return PromptSet(name, read_classnames(classnames), read_templates(templates),
                     {"classnames": list_source(classnames), "templates": list_source(templates)})


@functools.cache
def imagenet_folder_classnames() -> dict[str, str]:
    """ImageNet-1k's folder names (WordNet ids, ``n01440764``) -> open_clip's cleaned class names."""
    wnids = read_classnames(ZERO_SHOT_DIR / IMAGENET_WNIDS_FILE)
    return dict(zip(wnids, packaged_prompts("imagenet1k").classnames, strict=True))
