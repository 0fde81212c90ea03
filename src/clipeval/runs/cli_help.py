"""What ``--help`` teaches beyond the flags: defaults, the checkpoint-spec grammar, profiles, one example a command.

:class:`HelpfulParser` is the command line's parser class (its subcommands inherit it): every
flag's help ends with its default. :func:`add_epilogs` gives each subcommand an example command
(:data:`EXAMPLES`; a test parses every one), and the commands that load checkpoints the spec
grammar (:data:`SPEC_GRAMMAR`). Nothing here imports a model library: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import textwrap

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

# one example a subcommand, as a user would type it (tests parse each with the real parser)
EXAMPLES = {
    "score": "python -m clipeval score --pairs data/generated/scenes/pairs_test.csv "
             "--checkpoint dual:outputs/offline/models/dual --checkpoint baseline:bert-resnet50-random "
             "--out outputs/my-run",
    "score-shards": "python -m clipeval score --shards 'outputs/shards/shard-{00000..00007}.tar' "
                    "--checkpoint dual:outputs/offline/models/dual --out outputs/my-sharded-run",
    "retrieve": "python -m clipeval retrieve --pairs annotations/captions_val2017.json --images-dir val2017 "
                "--checkpoint hf:openai/clip-vit-base-patch32 --out outputs/coco-retrieval",
    "make-scenes": "python -m clipeval make-scenes --out data/generated/scenes --seed 0",
    "train": "python -m clipeval train --scenes data/generated/scenes --out outputs/offline/models/dual --epochs 3",
    "finetune": "python -m clipeval finetune --checkpoint dual:outputs/offline/models/dual "
                "--pairs data/generated/scenes/pairs_train.csv --holdout 0.2 --mode lora --steps 100 "
                "--hard-negatives --negative-kind relation --out outputs/finetune/lora",
    "curate": "python -m clipeval curate --scores outputs/my-run "
              "--rule 'cosine[dual:outputs/offline/models/dual]>=0.3' --out outputs/my-run/curated",
    "curate-shards": "python -m clipeval curate --scores outputs/my-sharded-run --rule basic "
                     "--out outputs/my-sharded-run/curated",
    "make-shards": "python -m clipeval make-shards --pairs data/generated/scenes/pairs_test.csv "
                   "--out outputs/shards --shards 8 --format tar",
    "build-evalset": "python -m clipeval build-evalset --images my-photos --labeller zero-shot "
                     "--model dual:outputs/offline/models/dual --vocabulary classes.txt --out outputs/evalsets/photos",
    "train-scene-classifier": "python -m clipeval train-scene-classifier --scenes data/generated/scenes --epochs 2",
    "checkpoints": "python -m clipeval checkpoints hf:openai/clip-vit-base-patch32",
    "tiny-checkpoints": "python -m clipeval tiny-checkpoints --out data/checkpoints/tiny-random",
    "rehearsal-hub": "python -m clipeval rehearsal-hub --only openai/clip-vit-base-patch32",
    "challenge-set": "python -m clipeval challenge-set --out data/generated/challenge",
    "run-notebooks": "python -m clipeval run-notebooks --profile offline "
                     "--checkpoints 'dual:outputs/offline/models/dual baseline:bert-resnet50-random'",
    "report": "python -m clipeval report --profile offline",
    "index": "python -m clipeval index data/generated/scenes/images --checkpoint dual:outputs/offline/models/dual "
             "--out outputs/finder",
    "search": "python -m clipeval search outputs/finder 'a red circle' --k 5",
    "serve": "python -m clipeval serve outputs/finder --port 8765",
}

# the commands whose --checkpoint takes a spec
SPEC_COMMANDS = ("score", "score-shards", "retrieve", "index", "finetune")
# the commands that read a profile
PROFILE_COMMANDS = ("run-notebooks", "report")


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


def top_level_epilog() -> str:
    """The epilog of ``clipeval --help``: the spec grammar and where to look next."""
    where_next = ("`clipeval COMMAND --help` shows a command's flags, their defaults and an example. Embeddings are "
                  "cached in ~/.cache/clipeval/embeddings ($XDG_CACHE_HOME/clipeval/embeddings when set; "
                  "$CLIPEVAL_EMBEDDING_CACHE moves it; docs/speed.md).")
    return f"{SPEC_GRAMMAR}\n\nexample:\n  {EXAMPLES['score']}\n\n{textwrap.fill(where_next, 100)}"


def add_epilogs(commands: argparse._SubParsersAction) -> None:
    """Give each subcommand its example, and the spec grammar or the profile keys where it takes them."""
    for name, command in commands.choices.items():
        parts = [f"example:\n  {EXAMPLES[name]}"] if name in EXAMPLES else []
        if name in SPEC_COMMANDS:
            parts.append(SPEC_GRAMMAR)
        if name in PROFILE_COMMANDS:
            parts.append(profile_help())
        command.epilog = "\n\n".join(parts) or None
