"""The run report: one self-contained HTML page per run folder, ``<run_dir>/report/index.html`` (docs/report.md).

This module assembles the page: the jobs' sections (:mod:`.sections`, from :mod:`clipeval.jobs.registry`),
figures, executed notebooks rendered through the sanitiser (:mod:`.sanitize`), and publishes it in one
step (:mod:`.publish`).
"""

from __future__ import annotations

import contextlib
import html
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clipeval.atomic import write_text
from clipeval.extras import require
from clipeval.jobs.tables import read_json
from clipeval.layout import RunLayout
from clipeval.models.hub_mirror import MIRROR_FILE, MIRROR_NOTE, using_mirror
from clipeval.paths import PROJECT_ROOT
from clipeval.profiles import load_profile
from clipeval.report.kinds import PROFILE, RunKind, detect_kind, folder_kinds
from clipeval.report.publish import build_lock, remove_leftovers, report_versions, swap_report
from clipeval.report.sanitize import CSP_META, sanitize_html, sanitize_notebook
from clipeval.report.sections import Section, collect_sections

NOTEBOOK_TEMPLATE = """{%- extends "index.html.j2" -%}
{%- block html_head_js -%}""" + CSP_META + """{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1240px; margin: 0 auto; padding: 0 1.2rem 3rem; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 0.3rem; } h2 { font-size: 1.25rem; margin: 2rem 0 0.5rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; } h3 { font-size: 1.02rem; margin: 1.2rem 0 0.4rem; }
nav { font-size: 0.92rem; margin: 0.6rem 0 1rem; display: flex; flex-wrap: wrap; gap: 0.2rem 1rem; }
nav a { white-space: nowrap; }
a { color: #0b5cad; } code { font-size: 0.9em; background: #f3f3f5; padding: 0 0.2em; border-radius: 3px; }
.meta { color: #555; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.3rem 0 0.8rem; }
th, td { border: 1px solid #ddd; padding: 0.22rem 0.5rem; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; } td.text { white-space: normal; min-width: 8rem; max-width: 30rem; }
th { background: #f3f3f5; } td.text, th.text { text-align: left; } tr:nth-child(even) td { background: #fafafa; }
.missing { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.4rem 0.7rem; margin: 0.4rem 0; }
.warning { background: #fdecea; border-left: 4px solid #c62828; padding: 0.5rem 0.8rem; margin: 0.8rem 0; }
.badge { font-size: 0.78rem; padding: 0.05rem 0.4rem; border-radius: 3px; background: #c62828; color: #fff; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
"""


@dataclass
class NotebookPage:
    """An executed notebook rendered into the report: its page and its error outputs (``ename: evalue``)."""

    name: str
    page: str
    errors: list[str]


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    folder: Path
    sections: list[Section]
    figures: list[str]
    notebooks: list[NotebookPage]
    kind: RunKind | None = None

    @property
    def index(self) -> Path:
        """The report's page."""
        return self.folder / "index.html"

    @property
    def failed_notebooks(self) -> list[NotebookPage]:
        """The notebooks holding an error output."""
        return [page for page in self.notebooks if page.errors]


def notebook_errors(notebook) -> list[str]:
    """The error outputs of an executed notebook (nbformat node), as ``cell N: ename: evalue``."""
    return [f"cell {index}: {output.get('ename', '')}: {output.get('evalue', '')}".strip()
            for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]


# What a notebook page may show as HTML: the tags markdown, pandas tables (plain and Styler) and
# pygments produce; attributes without script or network reach; no scheme but http(s), mailto and
# inline images. Anything else is escaped to visible text by :func:`sanitize_html`.
def _notebook_exporter():
    jinja2 = require("jinja2", "notebooks", "the report's notebook pages")
    nbconvert = require("nbconvert", "notebooks", "the report's notebook pages")
    loader = jinja2.DictLoader({"offline.html.j2": NOTEBOOK_TEMPLATE})
    # sanitize_html: the lab template runs HTML outputs, markdown and raw cells through clean_html and
    # writes no <script> for javascript outputs; clean_html is ours, with an allowlist fit for tables
    exporter = nbconvert.HTMLExporter(template_name="lab", extra_loaders=[loader], template_file="offline.html.j2",
                                      sanitize_html=True)
    exporter.register_filter("clean_html", sanitize_html)
    return exporter


def render_notebooks(notebooks: list[Path], out_dir: Path) -> list[NotebookPage]:
    """Render executed notebooks to standalone, sanitized HTML pages in ``out_dir`` (images inline, no network)."""
    if not notebooks:
        return []
    nbformat = require("nbformat", "notebooks", "the report's notebook pages")
    exporter = _notebook_exporter()
    pages = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(sanitize_notebook(notebook), resources={"metadata": {"name": path.stem}})
        write_text(out_dir / f"{path.stem}.html", body)
        pages.append(NotebookPage(path.stem, f"notebooks/{path.stem}.html", notebook_errors(notebook)))
    return pages


def copy_figures(figures: list[Path], out_dir: Path) -> list[str]:
    """Copy the figures into ``out_dir``; returns their paths relative to the report folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in figures:
        shutil.copyfile(path, out_dir / path.name)
    return [f"{out_dir.name}/{path.name}" for path in figures]


def _figures_html(figures: list[str], notebooks: list[str], kind: RunKind | None = None) -> str:
    if not figures:
        if kind is not None and not kind.is_profile:
            return ('<p class="missing">figures/ holds no PNG: `python -m clipeval score --pairs` draws the score '
                    "histograms there when a pair is scored ok (rerun the same command)</p>")
        return '<p class="missing">figures/ holds no PNG: the notebooks save their figures there (make notebooks)</p>'
    by_prefix = {name.split("_", 1)[0]: name for name in notebooks}
    groups: dict[str, list[str]] = {}
    for figure in figures:
        prefix = Path(figure).name.split("_", 1)[0]
        group = by_prefix.get(prefix, prefix if prefix.isdigit() else "figures/" if kind is not None
                              and not kind.is_profile else "figures without a notebook number")
        groups.setdefault(group, []).append(figure)
    parts = []
    for group, items in groups.items():
        cells = "".join(f'<figure><img src="{html.escape(item)}" alt="{html.escape(Path(item).stem)}">'
                        f"<figcaption>{html.escape(Path(item).name)}</figcaption></figure>" for item in items)
        parts.append(f'<h3>{html.escape(group)}</h3><div class="figures">{cells}</div>')
    return "".join(parts)


def _notebooks_html(pages: list[NotebookPage]) -> str:
    if not pages:
        return '<p class="missing">notebooks/ holds no executed notebook (make notebooks)</p>'
    items = []
    for page in pages:
        flag = (f' <span class="badge">error output</span> {html.escape("; ".join(page.errors))}'
                if page.errors else "")
        items.append(f'<li><a href="{html.escape(page.page)}">{html.escape(page.name)}</a>{flag}</li>')
    return f"<ul>{''.join(items)}</ul>"


def _incomplete_banner(run_dir: Path) -> str:
    """A warning at the top when the scoring run never finished (``incomplete.json``): its tables are not results."""
    reason = RunLayout(run_dir).incomplete_reason
    if reason is None:
        return ""
    return f'<p class="warning"><span class="badge">incomplete run</span> {html.escape(reason)}.</p>'


def _mirror_banner(run_dir: Path) -> str:
    """A warning at the top when the run's manifest says it ran on the rehearsal hub mirror."""
    manifest = RunLayout(run_dir).manifest
    try:
        mirror = read_json(manifest).get("hub_mirror") if manifest.is_file() else None
    except ValueError:
        return ""  # a damaged manifest: its own section says so
    if not mirror:
        return ""
    note = html.escape(mirror.get("note", MIRROR_NOTE))
    return (f'<p class="warning"><span class="badge">{note}</span> This run used the rehearsal hub mirror'
            f' (<code>{html.escape(str(mirror.get("path")))}</code>): every checkpoint and '
            "dataset with a hub name holds random weights or synthetic images, so no number on this page says "
            "anything about the real models. It shows that the profile runs end to end.</p>")


def _kind_html(kind: RunKind | None) -> str:
    """What kind of run the folder holds and the next steps that fit it."""
    if kind is None:
        return ""
    hints = "".join(f"<li><code>{html.escape(hint)}</code></li>" if hint.startswith(("python", "make"))
                    else f"<li>{html.escape(hint)}</li>" for hint in kind.hints)
    return f'<p class="meta">This folder holds {html.escape(kind.describe())}.</p>' + (
        f"<p>Next steps:</p><ul>{hints}</ul>" if hints else "")


def render_index(title: str, run_dir: Path, sections: list[Section], figures: list[str],
                 pages: list[NotebookPage], extra: list[Section], kind: RunKind | None = None) -> str:
    """The report's ``index.html``."""
    every = [*sections, *extra]
    if kind is None or kind.is_profile or kind.figures or figures:
        every.append(Section("figures", "Figures", _figures_html(figures, [p.name for p in pages], kind)))
    if kind is None or kind.is_profile or pages:
        every.append(Section("notebooks", "Executed notebooks", _notebooks_html(pages)))
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in every)
    failed = [page for page in pages if page.errors]
    warning = (f'<p class="warning">{len(failed)} notebook(s) hold an error output: '
               f'{html.escape(", ".join(page.name for page in failed))}. Their numbers may be stale or missing.</p>'
               if failed else "")
    warning += _incomplete_banner(run_dir) + _mirror_banner(run_dir)
    missing = sum(len(section.missing) for section in sections)
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in every)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{CSP_META}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">run folder <code>{html.escape(str(run_dir))}</code>; "
            f"built {built}; {missing} file(s) absent (see the sections)</p>{_kind_html(kind)}{warning}"
            f"<nav>{nav}</nav>{body}"
            "</body></html>\n")


def build_report(run_dir: str | Path, title: str | None = None, profile_notebooks: list[str] | None = None,
                 extra_sections: list[Section] | None = None, kind: RunKind | None = None) -> Report:
    """Write ``<run_dir>/report/`` (``index.html``, ``figures/``, ``notebooks/``), replacing the old one in one
    step (:mod:`.publish`): killed at any moment, a rebuild leaves the complete old report or the new one.

    Args:
        profile_notebooks: the notebooks the run's profile runs; a missing file written by
            another notebook is reported as not part of this run rather than missing.
        extra_sections: sections to show after the tables (e.g. the docs' agreement).
        kind: what kind of run the folder holds (:func:`~clipeval.report.kinds.detect_kind`): named at
            the top with its next steps; a command-line kind shows only the files it has.

    Returns:
        The :class:`Report` written (its ``folder`` is the ``report`` link).

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}: run the profile's notebooks first (make notebooks)")
    title = title or f"clipeval run: {run_dir.name}"
    sections = collect_sections(run_dir, profile_notebooks, kind)
    layout = RunLayout(run_dir)
    folder = layout.report
    versions = report_versions(folder)
    versions.mkdir(parents=True, exist_ok=True)
    with build_lock(versions):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        version = Path(tempfile.mkdtemp(dir=versions, prefix=f"{stamp}-"))
        try:
            version.chmod(0o755)
            figures = copy_figures(sorted(layout.figures.glob("*.png")), version / "figures")
            pages = render_notebooks(sorted(layout.notebooks.glob("*.ipynb")), version / "notebooks")
            write_text(version / "index.html", render_index(title, run_dir, sections, figures, pages,
                                                            extra_sections or [], kind))
            swap_report(folder, version)
        except BaseException:
            if not (folder.is_symlink() and folder.resolve() == version.resolve()):
                shutil.rmtree(version, ignore_errors=True)
            raise
        remove_leftovers(folder, version)
    return Report(folder, sections, figures, pages, kind)


def snapshot_differences(run_dir: Path, snapshot_dir: Path) -> list[str]:
    """The snapshot's files whose bytes differ from the run's same-named files (or that the run lacks)."""
    return [path.name for path in sorted(snapshot_dir.iterdir()) if path.is_file()
            and (not (run_dir / path.name).is_file() or (run_dir / path.name).read_bytes() != path.read_bytes())]


def readme_section(run_dir: Path, snapshot_dir: Path) -> Section:
    """Whether the docs' measured tables come from this run (its snapshot in ``bench/results/<profile>/``)."""
    if not snapshot_dir.is_dir():
        return Section("readme", "The docs' measured tables",
                       f"<p>The docs quote no run of this profile (no "
                       f"<code>{html.escape(str(snapshot_dir))}</code>).</p>")
    different = snapshot_differences(run_dir, snapshot_dir)
    if not different:
        text = (f"<p>The docs' measured tables of this profile come from this run: every file of "
                f"<code>{html.escape(str(snapshot_dir))}</code> equals the run's.</p>")
    else:
        text = (f'<p class="missing">The docs quote another run: {html.escape(", ".join(different))} differ '
                f"from <code>{html.escape(str(snapshot_dir))}</code>. <code>make measured</code> copies this run's "
                "files there and rewrites the docs' tables.</p>")
    return Section("readme", "The docs' measured tables", text)


def build_run_report(run_dir: str | Path) -> Report:
    """Build the report of any run folder a command wrote (``score``, ``retrieve``, ``curate``...), by its kind.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
        ValueError: it holds no file a clipeval step writes (the message says what each command writes).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}: give the --out folder of a clipeval command "
                                "(score, retrieve, curate) or a profile's run_dir")
    kind = detect_kind(run_dir)
    if kind is None:
        raise ValueError(f"{run_dir} holds no clipeval run: none of what {folder_kinds()} write, nor executed "
                         "notebooks (a profile)")
    return build_report(run_dir, f"clipeval run: {run_dir.name}", kind=kind)


def build_profile_report(profile: str | Path, run_dir: str | Path | None = None) -> Report:
    """Build the report of a profile's run folder (``outputs/<profile>/`` unless ``run_dir`` is given)."""
    params = load_profile(profile)
    name = Path(profile).stem
    run_dir = Path(run_dir) if run_dir is not None else PROJECT_ROOT / params["run_dir"]
    extra = [readme_section(run_dir, PROJECT_ROOT / "bench" / "results" / name)]
    mirror = PROJECT_ROOT / params["hub_mirror"] if params.get("hub_mirror") else None
    # under its mirror, the catalogue marks the rehearsal's hub checkpoints random-init in every table
    with using_mirror(mirror) if mirror is not None and (mirror / "hf" / MIRROR_FILE).is_file() \
            else contextlib.nullcontext():
        return build_report(run_dir, f"clipeval run: {name} profile", params.get("notebooks"), extra, PROFILE)
