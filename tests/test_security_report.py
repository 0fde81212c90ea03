"""Untrusted text (captions, checkpoint and dataset names) in the report and in figures.

* No page of the run report holds live markup from the data: ``index.html`` escapes, the
  notebook pages (nbconvert) are sanitized, the retrieval Styler escapes, every page forbids
  scripts with a Content-Security-Policy.
* Captions and checkpoint names are drawn in figures as written, never parsed as mathtext.
* A rebuild replaces the report atomically: killed at any moment, it leaves the complete old
  report or the complete new one at ``<run_dir>/report``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.text import Text
from PIL import Image

from clipeval.metrics.published import compare_with_published
from clipeval.plots import curation, data, retrieval, scenes, scores
from clipeval.plots.retrieval import style_published
from clipeval.report.build import build_report, render_notebooks

SCRIPT = "<script>alert(1)</script>"
ONERROR = "<img src=x onerror=alert(2)>"
EVIL = f"{SCRIPT} $x$ {ONERROR}"
CHECKPOINT = f"hf:evil/{EVIL}"
DATASET = f"set {SCRIPT}"
CAPTION = f"a cat {EVIL}"
MATH_CAPTION = "a cat for $5 and a dog for $10"  # two dollars: mathtext today, garbled
BAD_CAPTION = r"a broken $\frac{$ caption"  # malformed mathtext: the figure fails to draw today
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- HTML ------------------------------------------------------------------------------------------


class _Live(HTMLParser):
    """What a browser would run or load from a page: script-like elements, event handlers, script URLs."""

    def __init__(self):
        super().__init__()
        self.live: list[str] = []
        self.csp: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"script", "iframe", "object", "embed", "base", "form"}:
            self.live.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.live.append(f"<{tag} {name}=...>")
            if name in {"href", "src", "action", "formaction"} and value and \
                    value.strip().lower().startswith(("javascript:", "vbscript:", "data:text")):
                self.live.append(f"<{tag} {name}={value[:30]}>")
        if tag == "meta" and dict(attrs).get("http-equiv", "").lower() == "content-security-policy":
            self.csp.append(dict(attrs).get("content", ""))

    handle_startendtag = handle_starttag


def live_markup(page: str) -> list[str]:
    """Every live element or attribute in ``page``, and any raw ``<script`` left in its text."""
    parser = _Live()
    parser.feed(page)
    found = parser.live
    if "<script" in page.lower():
        found.append("raw <script")
    return found


def forbids_scripts(page: str) -> bool:
    parser = _Live()
    parser.feed(page)
    return any("script-src 'none'" in policy for policy in parser.csp)


def comparison() -> pd.DataFrame:
    measured = pd.DataFrame({"checkpoint": CHECKPOINT, "dataset": DATASET, "direction": "text_to_image",
                             "k": [1, 5], "hit_rate": [0.12, 0.556], "hit_rate_ci_low": [0.11, 0.55],
                             "hit_rate_ci_high": [0.13, 0.562]})
    published = pd.DataFrame({"checkpoint": CHECKPOINT, "dataset": DATASET, "direction": "text_to_image",
                              "k": [1, 5], "published": [30.4, 55.9], "source": f"a paper {SCRIPT}"})
    return compare_with_published(measured, published)


def hostile_notebook() -> nbformat.NotebookNode:
    """An executed notebook whose outputs carry untrusted text in every form nbconvert renders."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "x": SCRIPT}}
    styled = style_published(comparison())
    table = pd.DataFrame({"caption": [CAPTION], "checkpoint": [CHECKPOINT]})
    cell = nbformat.v4.new_code_cell("style_published(bench.comparison)", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("execute_result", data={"text/html": styled._repr_html_(), "text/plain": "<Styler>"},
                               execution_count=1),
        nbformat.v4.new_output("display_data", data={"text/html": table.to_html(), "text/plain": repr(table)}),
        nbformat.v4.new_output("display_data", data={
            "text/html": f'<b>{CAPTION}</b><a href="javascript:alert(3)">x</a><div onclick="alert(4)">y</div>'
                         f'<style>body {{ background: url(https://example.com/t.png) }}</style>',
            "text/plain": "raw"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": "alert(5)", "text/plain": "js"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": f"**{CAPTION}**", "text/plain": "md"}),
        nbformat.v4.new_output("display_data", data={"text/vnd.mermaid": f"graph TD; A-->B {SCRIPT}",
                                                     "text/plain": "mermaid"}),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json":
                                                     {"model_id": "abc", "version_major": 2, "version_minor": 0},
                                                     "text/plain": "widget"}),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"},
                               metadata={"image/png": {"width": "1 onerror=alert(6)", "height": 2}}),
        nbformat.v4.new_output("stream", name="stdout", text=f"scored {CAPTION}\n"),
        nbformat.v4.new_output("error", ename="ValueError", evalue=CAPTION, traceback=[f"ValueError: {CAPTION}"]),
    ]
    raw = nbformat.v4.new_raw_cell(f"<p>raw {SCRIPT}</p>", metadata={"raw_mimetype": "text/html"})
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Retrieval\n\nSome **bold** text. {SCRIPT} {ONERROR}"), cell, raw]
    return nb


def hostile_run(folder: Path) -> Path:
    """A run folder whose checkpoint names and captions hold markup, with the hostile notebook."""
    folder.mkdir(parents=True)
    pd.DataFrame({"image": ["a.png", "b.png"], "caption": [CAPTION, MATH_CAPTION], "similarity": [0.9, 0.2],
                  "status": ["ok", f"error: {SCRIPT}"]}).to_csv(folder / "results.csv", index=False)
    pd.DataFrame({"checkpoint": [CHECKPOINT], "n_ok": [2], "n_excluded": [0], "matched_count": [1],
                  "matched_mean": [0.9], "mismatched_count": [1], "mismatched_mean": [0.2], "auc": [1.0],
                  "gap": [0.7]}).to_csv(folder / "score_summary.csv", index=False)
    comparison().to_csv(folder / "published_comparison.csv", index=False)
    (folder / "manifest.json").write_text(json.dumps({
        "git_commit": SCRIPT, "created_utc": "2026-01-01T00:00:00+00:00", "versions": {"python": "3.11"},
        "steps": {"score": {"seed": None, "checkpoints": [{"spec": CHECKPOINT}], "data": [{"path": ONERROR}]}}}))
    (folder / "figures").mkdir()
    Image.new("RGB", (8, 6), "steelblue").save(folder / "figures" / "04_retrieval.png")
    (folder / "notebooks").mkdir()
    nbformat.write(hostile_notebook(), folder / "notebooks" / "04_retrieval_eval.ipynb")
    return folder


def test_the_retrieval_styler_escapes_cells_and_labels():
    page = style_published(comparison()).to_html()
    assert not live_markup(page), live_markup(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the names are shown, as text
    assert "background-color: #f8d0d0" in page  # the deviations are still flagged in red


def test_no_report_page_holds_live_markup_from_the_data(tmp_path):
    report = build_report(hostile_run(tmp_path / "run"))
    pages = {path.relative_to(report.folder).as_posix(): path.read_text() for path in report.folder.rglob("*.html")}
    assert set(pages) == {"index.html", "notebooks/04_retrieval_eval.html"}
    problems = {name: found for name, page in pages.items() if (found := live_markup(page))}
    assert not problems, problems
    assert all(forbids_scripts(page) for page in pages.values())  # a second line of defence
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["index.html"]  # the checkpoint, escaped
    notebook = pages["notebooks/04_retrieval_eval.html"]
    assert "example.com" not in notebook  # a style element loading a remote resource is dropped
    assert "alert(5)" not in notebook  # a javascript output is not written at all


def test_the_sanitized_notebook_page_still_shows_tables_text_and_figures(tmp_path):
    notebook = tmp_path / "04_retrieval_eval.ipynb"
    nbformat.write(hostile_notebook(), notebook)
    [page] = render_notebooks([notebook], tmp_path / "pages")
    text = (tmp_path / "pages" / "04_retrieval_eval.html").read_text()
    assert not live_markup(text), live_markup(text)
    assert page.errors == [f"cell 1: ValueError: {CAPTION}"]
    assert text.count("<table") == 2 and "<h1" in text and "<strong>bold</strong>" in text
    assert "background-color: #f8d0d0" in text and "DEVIATES at R@1" in text  # the Styler's colours and cells
    assert "data:image/png;base64," in text and "a cat &lt;script&gt;" in text


# --- figures ---------------------------------------------------------------------------------------


def drawn(figure) -> list[tuple[str, bool]]:
    """Every text the renderer draws, as (the string drawn, whether it was drawn as mathtext)."""
    found = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            found.append(self._preprocess_math(self.get_text()))

    Text.draw = record
    try:
        figure.canvas.draw()  # raises on malformed mathtext
    finally:
        Text.draw = original
    return [(text, bool(math)) for text, math in found]


def squeeze(text: str) -> str:
    return "".join(text.split())  # wrapping only moves whitespace


def user_figures(tmp_path: Path, caption: str) -> dict[str, tuple[plt.Figure, list[str]]]:
    """Figures of the plotting functions that draw captions or checkpoint names: name -> (figure, the texts)."""
    spec = f"hf:m/{caption}"
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    names = [f"{i}.png" for i in range(4)]
    for name in names:
        Image.new("RGB", (16, 16), "teal").save(folder / name)
    pairs = pd.DataFrame({"image": names, "caption": [caption] * 4, "match": [True, False, True, False]})
    pairs.attrs["base_dir"] = folder
    rows = pd.DataFrame({"query": [0], "top_items": [[0, 1]], "top_scores": [[0.9, 0.8]], "first_rank": [1.0]})
    metrics = pd.DataFrame([{"checkpoint": spec, "dataset": caption, "direction": "text_to_image", "k": 5,
                             **{f"{m}{s}": 0.5 for m in ("hit_rate", "recall", "mrr")
                                for s in ("", "_ci_low", "_ci_high", "_chance")}}])
    per_query = pd.DataFrame({"checkpoint": spec, "direction": "text_to_image", "query": range(6), "n_items": 6,
                              "n_relevant": 1, "first_rank": [1.0, 2.0, 1.0, 3.0, 5.0, 1.0]})
    table = pd.DataFrame({"row_id": range(6), "checkpoint": spec, "cosine": np.linspace(0.1, 0.9, 6),
                          "match": [True, False] * 3, "status": "ok"})
    curve = pd.DataFrame({"checkpoint": spec, "threshold": [0.0, 0.5, 1.0], "kept_fraction": [1.0, 0.5, 0.0]})
    scored = pairs.assign(score=[0.1, 0.2, 0.3, 0.4])
    return {
        "plot_sample_grid": (data.plot_sample_grid(pairs, n=4), [caption]),
        "plot_query_results": (retrieval.plot_query_results(rows, pd.DataFrame({"text": [caption]}), pairs[["image"]],
                                                            np.array([[0, 0]]), folder, caption,
                                                            captions=pairs["caption"]), [caption]),
        "plot_metrics_with_ci": (retrieval.plot_metrics_with_ci(metrics), [spec, caption]),
        "plot_hit_rate_curve": (retrieval.plot_hit_rate_curve(per_query, max_k=5), [spec]),
        "plot_score_histograms": (scores.plot_score_histograms(table), [spec]),
        "plot_kept_fraction": (curation.plot_kept_fraction(curve), [spec]),
        "plot_curation_examples": (curation.plot_curation_examples({"decile 1": scored}, "score", folder), [caption]),
        "plot_similarity_heatmap": (scenes.plot_similarity_heatmap(np.eye(2) * 0.5, [caption, caption],
                                                                   [folder / names[0], folder / names[1]]),
                                    [caption]),
    }


@pytest.mark.parametrize("caption", [MATH_CAPTION, BAD_CAPTION, EVIL])
def test_captions_and_checkpoint_names_are_drawn_as_written(tmp_path, caption):
    problems = []
    for name, (figure, expected) in user_figures(tmp_path, caption).items():
        try:
            texts = drawn(figure)
        except ValueError as error:  # a mathtext parse error
            problems.append(f"{name}: draw failed: {str(error).splitlines()[0]}")
            continue
        math = [text for text, is_math in texts if is_math and r"\mathdefault" not in text]  # not log ticks
        if math:
            problems.append(f"{name}: drawn as mathtext: {math[:2]}")
        for text in expected:
            if not any(squeeze(text) in squeeze(shown) for shown, is_math in texts if not is_math):
                problems.append(f"{name}: {text!r} is not drawn as written")
    assert not problems, "\n".join(problems)


def test_a_figure_with_such_captions_saves(tmp_path):
    figure = data.plot_sample_grid(pd.DataFrame({"image": ["missing.png"] * 2, "caption": [MATH_CAPTION, BAD_CAPTION]}),
                                   n=2, path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    titles = [ax.title for ax in figure.axes if ax.get_title()]
    assert sorted(title._preprocess_math(title.get_text()) for title in titles) == sorted(
        (textwrap.fill(caption, 34), False) for caption in (MATH_CAPTION, BAD_CAPTION))


# --- atomic rebuild --------------------------------------------------------------------------------

# Runs in a subprocess: builds the old report (title OLD), then for each kill point K forks a child
# that rebuilds (title NEW) on a fresh copy and SIGKILLs itself right before its K-th file-system
# change under the run folder (an audit hook sees every mkdir, open for writing, rename, symlink,
# unlink, rmdir, chmod, copy and ctypes call); the parent then reads what the report path holds.
# After each kill a full rebuild must succeed and leave nothing behind.
DRIVER = r'''
import json, os, shutil, signal, sys
from html.parser import HTMLParser
from pathlib import Path

from clipeval.report.build import build_report

template, work, legacy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "legacy"
EVENTS = {"os.mkdir", "os.rmdir", "os.remove", "os.rename", "os.symlink", "os.link", "os.chmod", "os.truncate",
          "os.utime", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.rmtree", "shutil.move",
          "tempfile.mkstemp", "tempfile.mkdtemp", "ctypes.call_function", "open"}
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def rebuild(run, kill_at=None):
    """Rebuild in a forked child; kill it before its kill_at-th change. Returns (changes seen, killed)."""
    counter = run.parent / (run.name + ".count")
    pid = os.fork()
    if pid == 0:
        seen = 0
        root = str(run.resolve())

        def hook(event, args):
            nonlocal seen
            if event not in EVENTS:
                return
            if event == "open" and not (isinstance(args[2], int) and args[2] & WRITE):
                return
            path = args[0] if args and event != "ctypes.call_function" else None
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.fsdecode(path)
                real = os.path.realpath(path)
                if os.path.isabs(path) and real != root and not real.startswith(root + os.sep):
                    return
            seen += 1
            if kill_at is not None and seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            sys.addaudithook(hook)
            build_report(run, title="NEW")
            counter.write_text(str(seen))  # outside the run folder: not counted
            os._exit(0)
        except BaseException as error:
            sys.stderr.write(f"rebuild failed: {error!r}\n")
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if not killed and os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rebuild exited with {os.waitstatus_to_exitcode(status)}")
    return (int(counter.read_text()) if counter.exists() and not killed else None), killed


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in {"href", "src"} and v and not v.startswith(("#", "data:"))]


def state(run):
    """old / new: a complete report with that title at run/report; none or partial otherwise."""
    report = run / "report"
    if not report.exists():
        return "none"
    index = report / "index.html"
    if not index.is_file():
        return "partial"
    text = index.read_text()
    if not text.rstrip().endswith("</html>"):
        return "partial"
    refs = Refs()
    refs.feed(text)
    if sorted(refs.refs) != ["figures/04_fig.png", "notebooks/02_nb.html"]:
        return "partial"
    for ref in refs.refs:
        target = report / ref
        if not target.is_file() or target.stat().st_size == 0:
            return "partial"
        if ref.endswith(".html") and not target.read_text().rstrip().endswith("</html>"):
            return "partial"
    return {"<title>OLD</title>": "old", "<title>NEW</title>": "new"}.get(
        next((t for t in ("<title>OLD</title>", "<title>NEW</title>") if t in text), ""), "partial")


def leftovers(run):
    """What a finished rebuild must not leave: temporary entries, or more than the one build it links to."""
    found = [p.name for p in run.iterdir() if p.name.startswith(".")]
    versions = run / "report.versions"
    if versions.is_dir() and len(list(versions.iterdir())) != 1:
        found.append(f"report.versions holds {sorted(p.name for p in versions.iterdir())}")
    return found


old = work / "template"
shutil.copytree(template, old)
build_report(old, title="OLD")
if legacy and (old / "report").is_symlink():  # a report written before the versioned layout: a real folder
    target = (old / "report").resolve()
    (old / "report").unlink()
    shutil.copytree(target, old / "report")
    shutil.rmtree(old / "report.versions")
assert state(old) == "old", state(old)

probe = work / "probe"
shutil.copytree(old, probe, symlinks=True)
total, _ = rebuild(probe)
assert state(probe) == "new", state(probe)
points = list(range(1, total + 1))
if len(points) > 90:
    step = -(-len(points) // 60)
    points = sorted(set(points[::step]) | set(points[-30:]))
states, problems = {}, {}
for k in points:
    run = work / f"run-{k}"
    shutil.copytree(old, run, symlinks=True)
    _, killed = rebuild(run, kill_at=k)
    states[k] = state(run) if killed else "finished"
    rebuild(run)
    if state(run) != "new" or leftovers(run):
        problems[k] = [state(run), *leftovers(run)]
    shutil.rmtree(run)
print(json.dumps({"changes": total, "states": states, "after_rebuild": problems}))
'''


def small_run(folder: Path) -> Path:
    """A run folder with a table, one figure and one executed notebook."""
    folder.mkdir(parents=True)
    pd.DataFrame({"checkpoint": ["baseline:x"], "n_ok": [2], "auc": [1.0]}).to_csv(folder / "score_summary.csv",
                                                                                  index=False)
    (folder / "figures").mkdir()
    Image.new("RGB", (8, 6), "steelblue").save(folder / "figures" / "04_fig.png")
    (folder / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Scores"), nbformat.v4.new_code_cell("1 + 1", execution_count=1)]
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nbformat.write(nb, folder / "notebooks" / "02_nb.ipynb")
    return folder


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked rebuilds")
@pytest.mark.parametrize("layout", ["versioned", "legacy"])
def test_a_rebuild_killed_at_any_moment_leaves_the_old_or_the_new_report(tmp_path, layout):
    template = small_run(tmp_path / "template")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(template), str(work), layout], capture_output=True,
                          text=True, timeout=600, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    states = result["states"]
    assert result["changes"] >= 5 and len(states) >= 5
    broken = {k: s for k, s in states.items() if s not in {"old", "new"}}
    assert not broken, f"the report path held no complete report when killed before change {broken}"
    assert {"old", "new"} <= set(states.values())  # the kill points span the swap
    assert not result["after_rebuild"], result["after_rebuild"]


def test_a_rebuild_swaps_a_link_and_keeps_one_build(tmp_path):
    run = small_run(tmp_path / "run")
    first = build_report(run, title="OLD")
    old_target = (run / "report").resolve()
    build_report(run, title="NEW")
    link = run / "report"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative: the run folder can move
    assert "<title>NEW</title>" in (link / "index.html").read_text() and first.index == link / "index.html"
    assert not old_target.exists() and [p.name for p in (run / "report.versions").iterdir()] == [
        link.resolve().name]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "without renameat2"])
def test_a_report_folder_of_the_old_layout_becomes_the_link(tmp_path, monkeypatch, exchange):
    import clipeval.report.build as build
    import clipeval.report.publish as publish

    if not exchange:  # macOS, musl, old kernels: the folder is moved aside, then the link renamed in
        monkeypatch.setattr(publish, "exchange", lambda a, b: False)
    run = small_run(tmp_path / "run")
    (run / "report").mkdir()
    (run / "report" / "index.html").write_text("<title>OLD</title>")
    build.build_report(run, title="NEW")
    assert (run / "report").is_symlink() and "<title>NEW</title>" in (run / "report" / "index.html").read_text()
    assert sorted(p.name for p in run.iterdir()) == ["figures", "notebooks", "report", "report.versions",
                                                    "score_summary.csv"]
