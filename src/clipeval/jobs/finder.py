"""``index``: a collection embedded once into an index folder, which ``search`` and ``serve`` read."""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.data.options import SourceOptions
from clipeval.embed.options import EmbedOptions, device_option
from clipeval.finder.options import DEFAULT_HOST, DEFAULT_PORT, IndexOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection, RunTarget
from clipeval.jobs.tables import checkpoint_label, html_table, read_json
from clipeval.layout import IndexLayout, RunLayout

THIS_INDEX = ReportSection("index", "This index", 102, command_only=True)


def render_index_manifest(path: Path) -> str:
    """What the index holds: its source, images and rows, and per checkpoint its vectors and search."""
    import pandas as pd
    manifest = read_json(path)
    source = manifest.get("source", {})
    mismatched = manifest.get("mismatched_rows", 0)
    head = (f'<p class="meta">{manifest.get("images", 0):,} images from {manifest.get("rows", 0):,} rows of '
            f'<code>{html.escape(str(source.get("path", "")))}</code>'
            + (f" ({mismatched:,} mismatched rows: their captions are not shown as the images')" if mismatched else "")
            + ("" if manifest.get("complete") else "; <strong>unfinished</strong>: rerun the same command") + "</p>")
    rows = [{"checkpoint": checkpoint_label(spec), "vectors": entry.get("vectors"), "dim": entry.get("dim"),
             "dtype": entry.get("dtype"), "search": "approximate (faiss)" if entry.get("ann") else "exact"}
            for spec, entry in manifest.get("checkpoints", {}).items()]
    return head + html_table(pd.DataFrame(rows, columns=["checkpoint", "vectors", "dim", "dtype", "search"]))


def render_failed(path: Path) -> str:
    """The images without a vector, counted by checkpoint, status and error."""
    import pandas as pd
    failed = pd.read_csv(path, keep_default_na=False)
    if failed.empty:
        return "<p>Every image has a vector under every checkpoint.</p>"
    counts = failed.groupby(["checkpoint", "status", "error"], sort=True).size().rename("images").reset_index()
    return html_table(counts.assign(checkpoint=counts["checkpoint"].map(checkpoint_label)))


def _shows(run: RunLayout) -> tuple[Path, ...]:
    index = IndexLayout(run.root)
    return index.manifest, index.failed


_INDEX_FOLDER = "an index folder written by `clipeval index`"


@dataclass(frozen=True)
class IndexInputs:
    """What ``clipeval index`` embeds."""

    source: str = field(metadata={
        "positional": True, "help": "an image folder, a pairs table (.csv/.tsv/.parquet/.jsonl), COCO "
                                    "captions_*.json, Hugging Face save_to_disk folder, or hf:owner/name"})
    overwrite: bool = field(default=False, metadata={
        "help": "discard an earlier index in --out (another source, or to rebuild every checkpoint)"})


@dataclass(frozen=True)
class SearchInputs:
    """One ``clipeval search`` query and how its results are shown."""

    index: Path = field(metadata={"positional": True, "help": _INDEX_FOLDER})
    text: str | None = field(default=None, metadata={"positional": True, "nargs": "?", "help": "the text query"})
    image: Path | None = field(default=None, metadata={"help": "an image file: find the items most like it"})
    similar: str | None = field(default=None, metadata={
        "metavar": "ID", "help": "an indexed item's id: find the items most like it"})
    k: int = field(default=10, metadata={"help": "results per checkpoint"})
    checkpoint: tuple[str, ...] | None = field(default=None, metadata={
        "repeat": True, "help": "checkpoint spec of the index (repeat for side by side; default: its first)"})
    exact: bool = field(default=False, metadata={"help": "exact search whatever the index's size"})
    approximate: bool = field(default=False, metadata={
        "help": "search the approximate (faiss) index (the index must hold one)"})
    json: bool = field(default=False, metadata={"help": "print the results as JSON"})
    device: str = device_option(what="where the query encoder runs: ")


@dataclass(frozen=True)
class ServeInputs:
    """The index ``clipeval serve`` shows and where it listens."""

    index: Path = field(metadata={"positional": True, "help": _INDEX_FOLDER})
    host: str = field(default=DEFAULT_HOST, metadata={
        "help": "address to bind (127.0.0.1: this machine only; another one warns)"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "port (0: any free one)"})
    log_queries: bool = field(default=False, metadata={
        "help": "append each query to the index folder's queries.jsonl (off by default)"})


def _index(args: argparse.Namespace) -> None:
    from clipeval.finder.index import build_index

    inputs = options_from(args, IndexInputs)
    build = build_index(inputs.source, args.checkpoint, args.out, options_from(args, SourceOptions),
                        options_from(args, EmbedOptions), options_from(args, IndexOptions), inputs.overwrite)
    print(f"indexed {build.images} images from {build.rows} rows ({build.ok} images read) -> {args.out}")
    for spec, vectors in build.vectors.items():
        state = "built" if spec in build.built else "up to date, skipped" if spec in build.skipped else "kept"
        ann = build.ann[spec]
        print(f"  {spec}: {vectors} vectors, {build.failed[spec]} images without one (failed.csv), {state}, "
              + (f"approximate index {ann['factory']} (nprobe {ann.get('nprobe')})" if ann else "exact search"))


def _search(args: argparse.Namespace) -> None:
    from clipeval.finder.search import FinderIndex, format_results, run_query

    query = options_from(args, SearchInputs)
    if sum(given is not None for given in (query.text, query.image, query.similar)) != 1:
        raise ValueError("give one query: a TEXT, --image PATH or --similar ID")
    if query.exact and query.approximate:
        raise ValueError("give --exact or --approximate, not both")
    index = FinderIndex.open(query.index, EmbedOptions(device=query.device))
    result = run_query(index, text=query.text, image=query.image, similar=query.similar,
                       checkpoints=list(query.checkpoint) if query.checkpoint else None, k=query.k,
                       exact=True if query.exact else False if query.approximate else None)
    print(json.dumps(result, indent=2) if query.json else format_results(result))


def _serve(args: argparse.Namespace) -> None:
    from clipeval.finder.app import serve

    inputs = options_from(args, ServeInputs)
    serve(inputs.index, host=inputs.host, port=inputs.port, log_queries=inputs.log_queries)


INDEX = Job("index", ("10_image_finder",),
            (Part(THIS_INDEX, lambda run: IndexLayout(run.root).manifest, render_index_manifest),
             Part(THIS_INDEX, lambda run: IndexLayout(run.root).failed, render_failed)),
            CommandFolder("index", "python -m clipeval index",
                          lambda folder, steps: IndexLayout(folder).items.is_file(), _shows,
                          "rerun the same `python -m clipeval index ...` command (it resumes)",
                          lambda folder: (f'python -m clipeval search {folder} "a query"',
                                          f"python -m clipeval serve {folder}")),
            (Command("index", "embed a collection (image folder or any pairs source) with one or more checkpoints "
                              "into an index folder for search and serve",
                     (IndexInputs, RunTarget, SourceOptions, IndexOptions, EmbedOptions), _index,
                     example="python -m clipeval index data/generated/scenes/images "
                             "--checkpoint dual:outputs/offline/models/dual --out outputs/finder",
                     takes_spec=True,
                     on_interrupt="run the same command again to resume (checkpoints already indexed are kept)"),
             Command("search", "search an index folder by text, image or item; two --checkpoint side by side with "
                               "the overlap of their top k", (SearchInputs,), _search,
                     example="python -m clipeval search outputs/finder 'a red circle' --k 5"),
             Command("serve", "the finder's local web page over an index folder (clipeval index): text and image "
                              "queries, checkpoints side by side", (ServeInputs,), _serve,
                     example="python -m clipeval serve outputs/finder --port 8765")))
