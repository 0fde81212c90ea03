"""``build-evalset``: a folder of images pseudo-labelled into a retrieval eval set."""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass, field, replace
from pathlib import Path

from clipeval.embed.options import device_option, progress_option
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import html_table, read_json
from clipeval.labels.registry import LabelOptions
from clipeval.layout import EvalsetLayout, RunLayout

THIS_EVALSET = ReportSection("evalset", "This eval set", 103, command_only=True)


def render_evalset_summary(path: Path) -> str:
    """How many queries and relevant pairs the labels gave."""
    summary = read_json(path)
    return (f"<p>{summary.get('queries', 0):,} queries and {summary.get('relevant_pairs', 0):,} relevant "
            f"(query, image) pairs; labeller {html.escape(str(summary.get('stats', {}).get('labeller', '')))}.</p>")


def render_evalset_images(path: Path) -> str:
    """The images by status (an image no label reached says why)."""
    import pandas as pd
    images = pd.read_csv(path, keep_default_na=False)
    if "status" not in images:
        return f"<p>{len(images):,} images.</p>"
    return html_table(images["status"].value_counts().rename_axis("status").reset_index(name="images"))


def retrieve_command(evalset: EvalsetLayout) -> str:
    """The command that evaluates checkpoints on the eval set (with the images' folder as ``--image-root``: its
    ``images.csv`` names them from outside its own folder)."""
    root = read_json(evalset.summary).get("image_root") if evalset.summary.is_file() else None
    return (f"python -m clipeval retrieve --queries {evalset.queries} --images {evalset.images} --relevance "
            f"{evalset.relevance}" + (f" --image-root {root}" if root else "") + " --checkpoint SPEC")


def _shows(run: RunLayout) -> tuple[Path, ...]:
    evalset = EvalsetLayout(run.root)
    return run.manifest, evalset.summary, evalset.images


@dataclass(frozen=True)
class EvalsetInputs:
    """What ``clipeval build-evalset`` labels and where it writes the set."""

    images: Path = field(metadata={"required": True, "help": "folder of images (searched recursively)"})
    out: Path = field(metadata={"required": True,
                                "help": "eval-set folder (queries.csv, images.csv, relevance.csv...)"})
    vocabulary: Path | None = field(default=None, metadata={"help": "text file, one zero-shot class per line"})
    device: str = device_option(what="where the labeller runs: ")
    rebuild: bool = field(default=False, metadata={"help": "label again even if --out holds the same build"})
    progress: bool = progress_option()


def _build_evalset(args: argparse.Namespace) -> None:
    from clipeval.jobs.evalset_build import build_evalset

    inputs = options_from(args, EvalsetInputs)
    vocabulary = [line.strip() for line in inputs.vocabulary.read_text().splitlines() if line.strip()] \
        if inputs.vocabulary else []
    labelling = replace(options_from(args, LabelOptions), vocabulary=tuple(vocabulary))
    built = build_evalset(inputs.out, inputs.images, labelling, inputs.device, inputs.rebuild,
                          progress=inputs.progress)
    dataset = built.dataset
    print(f"{'reused' if built.reused else 'built'} {built.folder}: {len(dataset.queries)} queries, "
          f"{len(dataset.images)} images, {len(dataset.relevant)} relevant pairs, "
          f"{built.labels['image'].nunique()} images labelled")
    print(f"evaluate it: {retrieve_command(EvalsetLayout(built.folder))} --out DIR")


BUILD_EVALSET = Job("build-evalset", (), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(THIS_EVALSET, lambda run: EvalsetLayout(run.root).summary, render_evalset_summary),
    Part(THIS_EVALSET, lambda run: EvalsetLayout(run.root).images, render_evalset_images)),
    CommandFolder("eval set", "python -m clipeval build-evalset",
                  lambda folder, steps: "build-evalset" in steps or EvalsetLayout(folder).summary.is_file(), _shows,
                  "rerun the same `python -m clipeval build-evalset ...` command",
                  lambda folder: (retrieve_command(EvalsetLayout(folder)),)),
    (Command("build-evalset", "pseudo-label a folder of images into a retrieval eval set",
             (EvalsetInputs, LabelOptions), _build_evalset,
             example="python -m clipeval build-evalset --images my-photos --labeller zero-shot "
                     "--model dual:outputs/offline/models/dual --vocabulary classes.txt "
                     "--out outputs/evalsets/photos"),))
