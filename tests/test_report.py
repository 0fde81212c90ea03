"""The run report: built from a small run folder, self-contained, and graceful about what is missing."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from PIL import Image

from clipeval.jobs.tables import format_value
from clipeval.report.build import build_report, notebook_errors
from clipeval.runs.cli import main

CHECKPOINTS = ["dual:outputs/offline/models/dual", "baseline:bert-resnet50-random"]


def _notebook(error: bool = False) -> nbformat.NotebookNode:
    """A tiny executed notebook: markdown, a printed line, an inline PNG and (optionally) an error."""
    nb = nbformat.v4.new_notebook()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    code = nbformat.v4.new_code_cell("print('scored 3 pairs')", execution_count=1)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="scored 3 pairs\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Scores"), code]
    if error:
        failed = nbformat.v4.new_code_cell("1 / 0", execution_count=2)
        failed.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                                 traceback=["ZeroDivisionError: division by zero"])]
        nb.cells.append(failed)
    return nb


def _make_run(folder: Path, error: bool = False) -> Path:
    """A run folder with a few of the real files (same columns as the steps write), a figure and a notebook."""
    folder.mkdir(parents=True)
    pd.DataFrame({"image": ["a.png", "b.png", "c.png"], "caption": ["x", "y", "z"], "similarity": [0.9, 0.2, None],
                  "status": ["ok", "ok", "missing"]}).to_csv(folder / "results.csv", index=False)
    pd.DataFrame({"checkpoint": CHECKPOINTS, "n_ok": [2, 2], "n_excluded": [1, 1], "matched_count": [1, 1],
                  "matched_mean": [0.9091, 0.0417], "mismatched_count": [1, 1], "mismatched_mean": [0.2, 0.04],
                  "auc": [1.0, 0.5], "gap": [0.7091, 0.0017]}).to_csv(folder / "score_summary.csv", index=False)
    metrics = {"checkpoint": CHECKPOINTS[0], "dataset": "tiny", "direction": "text_to_image", "k": 1,
               "n_queries": 3, "n_images": 3}
    for metric, value in {"hit_rate": 0.6667, "recall": 0.6667, "mrr": 0.8333, "median_rank": 1.0}.items():
        metrics |= {metric: value, f"{metric}_ci_low": value - 0.1, f"{metric}_ci_high": value + 0.1,
                    f"{metric}_chance": 0.3333}
    pd.DataFrame([metrics]).to_csv(folder / "metrics.csv", index=False)
    (folder / "manifest.json").write_text(json.dumps({
        "git_commit": "abc123", "created_utc": "2026-01-01T00:00:00+00:00", "versions": {"python": "3.11"},
        "steps": {"score": {"seed": None, "checkpoints": [{"spec": s} for s in CHECKPOINTS],
                            "data": [{"path": "pairs.csv"}]}}}))
    (folder / "figures").mkdir()
    Image.new("RGB", (40, 30), "steelblue").save(folder / "figures" / "02_matched_vs_mismatched.png")
    (folder / "notebooks").mkdir()
    nbformat.write(_notebook(error), folder / "notebooks" / "02_score_pairs.ipynb")
    return folder


class _Links(HTMLParser):
    """Every resource a page refers to: href and src attributes, and the text of style elements."""

    def __init__(self):
        super().__init__()
        self.references: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        self.references += [value for name, value in attrs if name in {"href", "src"} and value]

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def _pages(report_dir: Path) -> list[Path]:
    return sorted(report_dir.rglob("*.html"))


def test_report_builds_from_a_small_run_folder(tmp_path):
    report = build_report(_make_run(tmp_path / "run"), profile_notebooks=["02_score_pairs", "04_retrieval_eval"])
    page = report.index.read_text()
    assert report.index == tmp_path / "run" / "report" / "index.html"
    assert "0.909" in page and "0.042" in page and "RANDOM INIT" in page  # score summary
    assert "0.833" in page and "0.733–0.933" in page  # MRR and its CI from metrics.csv
    assert "abc123" in page and "missing" in page  # manifest; results.csv's status counts
    assert report.figures == ["figures/02_matched_vs_mismatched.png"]
    assert [p.name for p in report.notebooks] == ["02_score_pairs"] and not report.failed_notebooks
    assert "scored 3 pairs" in (report.folder / "notebooks" / "02_score_pairs.html").read_text()


def test_every_link_and_image_resolves_inside_the_report(tmp_path):
    report = build_report(_make_run(tmp_path / "run"))
    folder = report.folder.resolve()
    checked = 0
    for page in _pages(report.folder):
        for reference in _parse(page).references:
            if reference.startswith(("#", "data:")):
                continue
            target = (page.parent / reference.split("#")[0]).resolve()
            assert target.is_relative_to(folder) and target.is_file(), f"{page.name}: {reference}"
            checked += 1
    assert checked >= 2  # the figure and the notebook link at least


def test_nothing_is_loaded_from_the_network(tmp_path):
    report = build_report(_make_run(tmp_path / "run"))
    for page in _pages(report.folder):
        parsed = _parse(page)
        remote = [r for r in parsed.references if re.match(r"(https?:)?//", r)]
        assert not remote, f"{page.name} loads {remote}"
        css = "".join(parsed.styles)
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", css), page.name


def test_a_run_folder_missing_files_gives_a_report_saying_what_is_missing(tmp_path):
    (tmp_path / "run").mkdir()
    report = build_report(tmp_path / "run", profile_notebooks=["02_score_pairs", "03_score_histograms"])
    page = report.index.read_text()
    assert all(section.missing for section in report.sections)
    assert ("score_summary.csv is missing: steps.compare writes it (notebook 02_score_pairs, 03_score_histograms, "
            "make notebooks)") in page
    # a file another profile's notebook writes is not called missing
    assert ("dual_encoder_eval.json: not in this run; the profile runs no notebook that calls "
            "steps.scenes_benchmark (06_train_dual_encoder)") in page
    assert "holds no PNG" in page and "holds no executed notebook" in page


def test_an_unreadable_file_becomes_a_note(tmp_path):
    run = _make_run(tmp_path / "run")
    pd.DataFrame({"something": [1]}).to_csv(run / "metrics.csv", index=False)
    (run / "manifest.json").write_text("{not json")
    report = build_report(run)
    page = report.index.read_text()
    assert "metrics.csv could not be read: KeyError" in page and "manifest.json could not be read" in page
    assert "0.909" in page  # the other sections are intact


def test_a_notebook_with_an_error_output_is_flagged(tmp_path):
    report = build_report(_make_run(tmp_path / "run", error=True))
    assert [page.name for page in report.failed_notebooks] == ["02_score_pairs"]
    assert report.failed_notebooks[0].errors == ["cell 2: ZeroDivisionError: division by zero"]
    page = report.index.read_text()
    assert "1 notebook(s) hold an error output: 02_score_pairs" in page and "badge" in page
    # still rendered, so the traceback can be read
    assert "ZeroDivisionError" in (report.folder / "notebooks" / "02_score_pairs.html").read_text()


def test_a_clean_run_has_no_error_output_in_its_notebooks(tmp_path):
    report = build_report(_make_run(tmp_path / "run"))
    for page in report.notebooks:
        source = nbformat.read(tmp_path / "run" / "notebooks" / f"{page.name}.ipynb", as_version=4)
        assert notebook_errors(source) == [] and page.errors == []


def test_a_rebuilt_report_replaces_the_old_one(tmp_path):
    run = _make_run(tmp_path / "run")
    build_report(run)
    (run / "figures" / "02_matched_vs_mismatched.png").unlink()
    report = build_report(run)
    assert not (report.folder / "figures" / "02_matched_vs_mismatched.png").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_cli_builds_a_profile_report_and_fails_on_an_error_output(tmp_path, capsys):
    run = _make_run(tmp_path / "run", error=True)
    profile = tmp_path / "tiny.yaml"
    profile.write_text(f"run_dir: {run}\nnotebooks: [02_score_pairs]\n")
    assert main(["report", "--profile", str(profile)]) == 1
    captured = capsys.readouterr()
    assert f"report -> {run / 'report' / 'index.html'}" in captured.out
    assert "warning: 02_score_pairs holds an error output" in captured.err
    assert "The docs quote no run of this profile" in (run / "report" / "index.html").read_text()
    assert main(["report", "--profile", str(profile), "--run-dir", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize(("value", "text"), [(3862, "3,862"), (2.0, "2"), (0.47298, "0.473"), (0.0072142, "0.0072"),
                                             (20343.03, "20,343"), (float("nan"), ""), (None, ""), ("ok", "ok")])
def test_format_value(value, text):
    assert format_value(value) == text


def test_benchmark_deviations_are_flagged_with_their_hint(tmp_path):
    from clipeval.metrics.published import HINT_BELOW, compare_with_published

    run = _make_run(tmp_path / "run")
    measured = pd.DataFrame({"checkpoint": "hf:openai/clip-vit-base-patch32", "dataset": "coco-5k",
                             "direction": "text_to_image", "k": [1, 5], "hit_rate": [0.12, 0.556],
                             "hit_rate_ci_low": [0.11, 0.55], "hit_rate_ci_high": [0.13, 0.562]})
    published = pd.DataFrame({"checkpoint": "hf:openai/clip-vit-base-patch32", "dataset": "coco-5k",
                              "direction": "text_to_image", "k": [1, 5], "published": [30.4, 55.9],
                              "source": "open_clip retrieval results"})
    compare_with_published(measured, published).to_csv(run / "published_comparison.csv", index=False)
    page = build_report(run).index.read_text()
    assert "1 deviate" in page and "measured 12.0, published 30.4" in page
    assert HINT_BELOW.split(":")[0] in page
    assert page.index("DEVIATES") < page.index("within tolerance")  # flagged rows first


def test_a_profile_without_benchmarks_says_so(tmp_path):
    page = build_report(_make_run(tmp_path / "run"), profile_notebooks=["04_retrieval_eval"]).index.read_text()
    assert "published_comparison.csv: not in this run; the profile names no standard benchmark" in page
