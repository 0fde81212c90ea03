"""``index``: a collection embedded once into an index folder, which ``search`` and ``serve`` read."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.tables import checkpoint_label, html_table, read_json
from clipeval.layout import IndexLayout, RunLayout

THIS_INDEX = ReportSection("index", "This index", 102, command_only=True)


def render_index_manifest(path: Path) -> str:
    """What the index holds: its source, images and rows, and per checkpoint its vectors and search."""
    manifest = read_json(path)
    source = manifest.get("source", {})
    head = (f'<p class="meta">{manifest.get("images", 0):,} images from {manifest.get("rows", 0):,} rows of '
            f'<code>{html.escape(str(source.get("path", "")))}</code>'
            + ("" if manifest.get("complete") else "; <strong>unfinished</strong>: rerun the same command") + "</p>")
    rows = [{"checkpoint": checkpoint_label(spec), "vectors": entry.get("vectors"), "dim": entry.get("dim"),
             "dtype": entry.get("dtype"), "search": "approximate (faiss)" if entry.get("ann") else "exact"}
            for spec, entry in manifest.get("checkpoints", {}).items()]
    return head + html_table(pd.DataFrame(rows, columns=["checkpoint", "vectors", "dim", "dtype", "search"]))


def render_failed(path: Path) -> str:
    """The images without a vector, counted by checkpoint, status and error."""
    failed = pd.read_csv(path, keep_default_na=False)
    if failed.empty:
        return "<p>Every image has a vector under every checkpoint.</p>"
    counts = failed.groupby(["checkpoint", "status", "error"], sort=True).size().rename("images").reset_index()
    return html_table(counts.assign(checkpoint=counts["checkpoint"].map(checkpoint_label)))


def _shows(run: RunLayout) -> tuple[Path, ...]:
    index = IndexLayout(run.root)
    return index.manifest, index.failed


INDEX = Job("index", ("10_image_finder",),
            (Part(THIS_INDEX, lambda run: IndexLayout(run.root).manifest, render_index_manifest),
             Part(THIS_INDEX, lambda run: IndexLayout(run.root).failed, render_failed)),
            CommandFolder("index", "python -m clipeval index",
                          lambda folder, steps: IndexLayout(folder).items.is_file(), _shows,
                          "rerun the same `python -m clipeval index ...` command (it resumes)",
                          lambda folder: (f'python -m clipeval search {folder} "a query"',
                                          f"python -m clipeval serve {folder}")))
