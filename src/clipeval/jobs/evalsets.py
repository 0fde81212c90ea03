"""``build-evalset``: a folder of images pseudo-labelled into a retrieval eval set."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import html_table, read_json
from clipeval.layout import EvalsetLayout, RunLayout

THIS_EVALSET = ReportSection("evalset", "This eval set", 103, command_only=True)


def render_evalset_summary(path: Path) -> str:
    """How many queries and relevant pairs the labels gave."""
    summary = read_json(path)
    return (f"<p>{summary.get('queries', 0):,} queries and {summary.get('relevant_pairs', 0):,} relevant "
            f"(query, image) pairs; labeller {html.escape(str(summary.get('stats', {}).get('labeller', '')))}.</p>")


def render_evalset_images(path: Path) -> str:
    """The images by status (an image no label reached says why)."""
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


BUILD_EVALSET = Job("build-evalset", (), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(THIS_EVALSET, lambda run: EvalsetLayout(run.root).summary, render_evalset_summary),
    Part(THIS_EVALSET, lambda run: EvalsetLayout(run.root).images, render_evalset_images)),
    CommandFolder("eval set", "python -m clipeval build-evalset",
                  lambda folder, steps: "build-evalset" in steps or EvalsetLayout(folder).summary.is_file(), _shows,
                  "rerun the same `python -m clipeval build-evalset ...` command",
                  lambda folder: (retrieve_command(EvalsetLayout(folder)),)))
