"""What ``--help`` teaches beyond the flags: defaults, the checkpoint-spec grammar, profiles, one example a command.

:class:`HelpfulParser` is the command line's parser class (its subcommands inherit it): every flag's help
ends with its default. Nothing here imports a model library: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import textwrap

from clipeval.jobs.job import Command
from clipeval.paths import PARAMS_DIR

SPEC_GRAMMAR = """\
checkpoint specs: --checkpoint PREFIX:TARGET (repeat the flag for several; the first is primary)
  hf:OWNER/NAME                 transformers CLIP/SigLIP from the hub: hf:openai/clip-vit-base-patch32
  hf:FOLDER                     a save_pretrained folder: hf:data/checkpoints/tiny-random/hf-clip
  open_clip:ARCH@TAG            open_clip architecture + pretrained tag: open_clip:ViT-B-16-SigLIP@webli
  open_clip:ARCH@FILE           architecture + weights file: open_clip:ViT-B-32@/path/to/weights.pt
  open_clip:hf-hub:OWNER/NAME   open_clip from the hub: open_clip:hf-hub:timm/ViT-B-16-SigLIP
  open_clip:FOLDER              a folder with open_clip_config.json and weights
  baseline:NAME                 BERT + ResNet-50: baseline:bert-resnet50, offline: baseline:bert-resnet50-random
  dual:FOLDER                   a dual encoder trained here: dual:outputs/offline/models/dual
  Relative paths are resolved against the current folder. `clipeval checkpoints` lists the
  catalogue; docs/checkpoints.md has the details."""

class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Epilogs as written; each flag's help ends with ``(default: ...)`` unless it has no default worth
    showing (none, or off) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or (not action.option_strings and action.nargs not in ("?", "*"))):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class HelpfulParser(argparse.ArgumentParser):
    """An argument parser whose help shows defaults (:class:`HelpFormatter`); subparsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """As argparse's; a flag given no help still shows its default (argparse shows nothing for it)."""
        action = super().add_argument(*args, **kwargs)
        if not action.help and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "(default: %(default)s)"
        return action


def profile_help() -> str:
    """What a profile is, which ones are here and the keys the offline profile sets."""
    names = sorted(path.stem for path in PARAMS_DIR.glob("*.yaml"))
    reference = PARAMS_DIR / "offline.yaml"
    keys = []
    if reference.is_file():  # top-level keys, read without a YAML parser: `--help` stays fast
        keys = [line.split(":", 1)[0] for line in reference.read_text().splitlines()
                if line[:1].isalpha() and ":" in line]
    text = (f"profiles: --profile NAME reads params/NAME.yaml (here: {', '.join(names) or 'none'}), or a YAML "
            "path; a profile may say `extends: NAME` and hold only what differs. "
            + (f"Keys (params/offline.yaml, whose comments say what each does): {', '.join(keys)}." if keys else
               f"No params/ folder in {PARAMS_DIR.parent}: run from the project folder, or set $CLIPEVAL_ROOT."))
    return textwrap.fill(text, 100, subsequent_indent="  ")


def top_level_epilog(example: str) -> str:
    """The epilog of ``clipeval --help``: the spec grammar, ``example`` and where to look next."""
    where_next = ("`clipeval COMMAND --help` shows a command's flags, their defaults and an example. Embeddings are "
                  "cached in ~/.cache/clipeval/embeddings ($XDG_CACHE_HOME/clipeval/embeddings when set; "
                  "$CLIPEVAL_EMBEDDING_CACHE moves it; docs/speed.md).")
    return f"{SPEC_GRAMMAR}\n\nexample:\n  {example}\n\n{textwrap.fill(where_next, 100)}"


def command_epilog(command: Command, reads_profile: bool) -> str | None:
    """A command's epilog: its example, and the spec grammar or the profile keys where it takes them."""
    parts = [f"example:\n  {command.example}"] if command.example else []
    if command.takes_spec:
        parts.append(SPEC_GRAMMAR)
    if reads_profile:
        parts.append(profile_help())
    return "\n\n".join(parts) or None
