"""Score histograms, the Spearman heatmap, and notebook 03 under papermill on a synthetic run."""

import matplotlib

matplotlib.use("Agg")

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
from matplotlib import pyplot as plt
from matplotlib.patches import Rectangle

from clipeval.layout import RunLayout
from clipeval.metrics.compare import add_percentiles, load_run_scores, pivot_scores, spearman_matrix
from clipeval.paths import NOTEBOOKS_DIR
from clipeval.plots.scores import plot_score_histograms, plot_spearman_heatmap

CHECKPOINTS = ("dual:outputs/offline/models/dual", "baseline:bert-resnet50-random")


def make_run(run_dir, n_pairs=40, checkpoints=CHECKPOINTS):
    """Write a synthetic results.csv + scores.csv; pair 3 fails under the second checkpoint."""
    rng = np.random.default_rng(0)
    match = np.arange(n_pairs) % 2 == 0
    pd.DataFrame({"image": [f"{i}.png" for i in range(n_pairs)], "caption": [f"caption {i}" for i in range(n_pairs)],
                  "match": match}).to_csv(run_dir / "results.csv", index=False)
    rows = []
    for index, checkpoint in enumerate(checkpoints):
        cosine = np.where(match, 0.3, 0.2) / (index + 1) + rng.normal(0, 0.04, n_pairs)
        for row_id in range(n_pairs):
            failed = index == 1 and row_id == 3
            rows.append({"row_id": row_id, "checkpoint": checkpoint, "cosine": np.nan if failed else cosine[row_id],
                         "clip_score_100": np.nan if failed else 100 * max(cosine[row_id], 0),
                         "clip_score_2_5": np.nan if failed else 2.5 * max(cosine[row_id], 0),
                         "status": "decode_error" if failed else "ok", "error": "broken file" if failed else ""})
    pd.DataFrame(rows).to_csv(run_dir / "scores.csv", index=False)
    return run_dir


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bar_widths(ax):
    return {round(patch.get_width(), 9) for patch in ax.patches if isinstance(patch, Rectangle) and patch.get_width()}


def all_text(figure):
    return " ".join(text.get_text() for text in figure.findobj(matplotlib.text.Text))


def test_histograms_facet_per_checkpoint_with_shared_bins(tmp_path):
    table = load_run_scores(RunLayout(make_run(tmp_path)))
    path = tmp_path / "figures" / "hist.png"
    figure = plot_score_histograms(table, "cosine", bins=25, path=path)
    assert len(figure.axes) == 2
    widths = [bar_widths(ax) for ax in figure.axes]
    assert len(widths[0]) == 1 and widths[0] == widths[1]  # one bin width, the same in every facet
    assert figure.axes[0].get_xlim() == figure.axes[1].get_xlim()
    text = all_text(figure)
    assert "RANDOM INIT" in figure.axes[1].get_title() and "RANDOM INIT" not in figure.axes[0].get_title()
    assert "scores show no learned image-text alignment" in figure.axes[1].get_title() and "1 not ok (excluded)" in text
    assert "matched" in text and "mismatched" in text and "pair type" in text
    assert figure.axes[0].get_xlabel().startswith("cosine similarity")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["hist.png"]  # no temporary file left behind


def test_percentile_histograms_three_checkpoints(tmp_path):
    checkpoints = (*CHECKPOINTS, "open_clip:ViT-B-16-SigLIP@webli")
    table = add_percentiles(load_run_scores(RunLayout(make_run(tmp_path, checkpoints=checkpoints))))
    figure = plot_score_histograms(table, "percentile", bins=20)
    assert len(figure.axes) == 3
    assert all(ax.get_xlabel().startswith("percentile") for ax in figure.axes if ax.get_xlabel())


def test_spearman_heatmap(tmp_path):
    table = load_run_scores(RunLayout(make_run(tmp_path)))
    figure = plot_spearman_heatmap(spearman_matrix(table), len(pivot_scores(table)), path=tmp_path / "spearman.png")
    assert len(figure.axes) == 2  # heatmap + colour bar
    assert "n = 39 pairs" in figure.axes[0].get_title()
    assert any("RANDOM INIT" in label.get_text() for label in figure.axes[0].get_yticklabels())
    assert (tmp_path / "spearman.png").stat().st_size > 0


def test_no_ok_rows_is_an_error(tmp_path):
    table = load_run_scores(RunLayout(make_run(tmp_path))).assign(status="decode_error")
    with pytest.raises(ValueError, match="no pair has status ok"):
        plot_score_histograms(table)


def test_notebook_is_clean_and_runs_under_papermill(tmp_path):
    source = NOTEBOOKS_DIR / "03_score_histograms.ipynb"
    notebook = nbformat.read(source, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code_cells[0].metadata.get("tags", [])
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells)
    run_dir = make_run(tmp_path)
    papermill.execute_notebook(str(source), str(tmp_path / "executed.ipynb"), parameters={"run_dir": str(run_dir)},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    figures = sorted(path.name for path in (run_dir / "figures").iterdir())
    assert figures == ["score_histograms_cosine.png", "score_histograms_percentile.png", "score_spearman.png"]
    summary = pd.read_csv(run_dir / "score_summary.csv", index_col="checkpoint")
    assert summary.loc["baseline:bert-resnet50-random", "n_excluded"] == 1
