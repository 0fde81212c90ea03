"""Command-line flags built from the option dataclasses, so that an option is written once, where it is used.

In the spirit of transformers' ``HfArgumentParser``: every field of an options dataclass becomes
``--field-name``, with its metadata's ``help`` (ended by the default), ``choices``, ``metavar`` and
``nargs``; ``"flag"`` names another spelling, ``"old_flags"`` keep deprecated ones working for a release,
``"required"`` makes the flag required, ``"positional"`` makes it an argument named by place,
``"repeat"`` takes a tuple one value a flag (``--rule A --rule B``), ``"retired"`` (why) keeps a flag no
longer needed working for a release, with a warning, and ``"cli": False`` leaves the field out.
A nested dataclass adds its fields' flags; booleans that default to true get ``--name``/``--no-name``;
two dataclasses sharing a field share its flag. Every flag defaults to "not given", so an unset option
keeps the dataclass's default (or the command's, :func:`options_from`'s ``defaults``).
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


def _given(hint):
    """``X | None`` -> ``X``; any other hint as it is."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _base_type(hint) -> type:
    """``int | None`` -> ``int``; ``tuple[int, ...]`` -> ``tuple``."""
    hint = _given(hint)
    return typing.get_origin(hint) or hint


def _element_type(hint) -> type:
    """``tuple[int, ...]`` or ``tuple[int, ...] | None`` -> ``int``."""
    return typing.get_args(_given(hint))[0]


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


class _Retired(argparse.Action):
    """A flag whose value the command now reads elsewhere: accepted for one release, with a warning."""

    def __init__(self, option_strings, dest, reason: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is no longer needed ({self.reason}) and will be removed in the next release",
              file=sys.stderr)


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
        kwargs: dict = {"default": None, "help": _with_default(field)}
        if base is bool:
            default = field.default
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif base is tuple and field.metadata.get("repeat"):  # --rule A --rule B: one value a flag
            kwargs.update(type=_element_type(hint), action="append")
        elif base is tuple:  # tuple[int, ...]: --k 1 5 10, or --k 1 --k 5
            kwargs.update(type=_element_type(hint), nargs="+", action="extend")
        else:
            kwargs["type"] = Path if base is Path else base
            if "choices" in field.metadata:
                kwargs["choices"] = list(field.metadata["choices"])
        for key in ("metavar", "nargs"):
            if key in field.metadata:
                kwargs[key] = field.metadata[key]
        if "retired" in field.metadata:  # a flag no longer needed: accepted for a release, with a warning
            parser.add_argument(_flag(field), dest=field.name, default=None, help=argparse.SUPPRESS, action=_Retired,
                                reason=field.metadata["retired"])
            continue
        if field.metadata.get("positional"):  # `clipeval search INDEX TEXT`: named by place, not by a flag
            action = parser.add_argument(field.name, **kwargs)
            continue
        kwargs.update(dest=field.name, required=field.metadata.get("required", False))
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
