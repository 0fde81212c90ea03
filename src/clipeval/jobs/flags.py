"""Command-line flags built from the option dataclasses, so that an option is written once, where it is used.

In the spirit of transformers' ``HfArgumentParser``: every field of an options dataclass
(:class:`~clipeval.data.fetch.FetchOptions`, :class:`~clipeval.embed.engine.EmbedOptions`,
:class:`~clipeval.data.sources.SourceOptions`, :class:`~clipeval.pipeline.scorer.ShardOptions`,
:class:`~clipeval.pipeline.executors.ExecutionOptions`, :class:`~clipeval.eval.retrieval.RetrievalOptions`)
becomes a flag, ``--field-name`` unless its metadata names one (``"flag"``), with the metadata's
``help`` (ending with the field's default) and ``choices``; a nested dataclass field
(``EmbedOptions.fetch``) adds its own fields' flags. A field with ``"cli": False`` in its
metadata is not a flag. Booleans that default to true get ``--name``/``--no-name``. Every flag
defaults to "not given", so an unset option keeps the dataclass's default (or the command's,
:func:`options_from`'s ``defaults``). A renamed option keeps
its old spellings (metadata ``"old_flags"``) for one release: they still work and print a
deprecation warning naming the new flag. Two concerns may share a field (the image and caption
columns of reading a source and of scoring its shards): it is one flag, read by both. Notebooks
build the same dataclasses from their parameters (``EmbedOptions(batch_size=batch_size)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def _base_type(hint) -> type:
    """``int | None`` -> ``int``; ``tuple[int, ...]`` -> ``tuple``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


def _fields(cls) -> list[tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(cls)
    return [(field, hints[field.name]) for field in dataclasses.fields(cls) if field.metadata.get("cli", True)]


class _Deprecated(argparse.Action):
    """An old spelling of a renamed flag: it still works, and says which flag replaced it."""

    def __init__(self, option_strings, dest, new_flag: str, inner: argparse.Action, **kwargs):
        super().__init__(option_strings, dest, nargs=inner.nargs, **kwargs)
        self.new_flag, self.inner = new_flag, inner

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.new_flag}", file=sys.stderr)
        self.inner(parser, namespace, values, option_string)


def add_options(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = ()) -> None:
    """Add a flag for every field of the dataclass ``cls`` (and of its nested dataclasses) to ``parser``."""
    for field, hint in _fields(cls):
        if field.name in exclude:
            continue
        base = _base_type(hint)
        if dataclasses.is_dataclass(base):
            add_options(parser, base, exclude)
            continue
        if _flag(field) in parser._option_string_actions:  # two concerns share a field (the columns): one flag
            continue
        kwargs: dict = {"dest": field.name, "default": None, "help": _with_default(field)}
        if base is bool:
            default = field.default
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif base is tuple:  # tuple[int, ...]: --k 1 5 10, or --k 1 --k 5
            kwargs.update(type=typing.get_args(hint)[0], nargs="+", action="extend")
        else:
            kwargs["type"] = Path if base is Path else base
            if "choices" in field.metadata:
                kwargs["choices"] = list(field.metadata["choices"])
        action = parser.add_argument(_flag(field), **kwargs)
        for old in field.metadata.get("old_flags", ()):
            parser.add_argument(old, dest=field.name, default=None, help=argparse.SUPPRESS, action=_Deprecated,
                                new_flag=_flag(field), inner=action, type=action.type, choices=action.choices)


def _with_default(field: dataclasses.Field) -> str:
    """The field's help ending with its default (``(default: 32)``, ``(default: on)``), unless the help already
    says it or there is none to show (``None``, off)."""
    text = field.metadata.get("help", "")
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = None
    if value is None or value is False or "default" in text:
        return text
    shown = "on" if value is True else " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def options_from(args: argparse.Namespace, cls, **defaults):
    """The dataclass ``cls`` from parsed flags: given flags, else ``defaults``, else the dataclass's own defaults."""
    values = {}
    for field, hint in _fields(cls):
        base = _base_type(hint)
        if dataclasses.is_dataclass(base):
            values[field.name] = options_from(args, base, **defaults)
        elif getattr(args, field.name, None) is not None:
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if base is tuple else value
        elif field.name in defaults:
            values[field.name] = defaults[field.name]
    return cls(**values)
