"""What a command-line run leaves for its user: the score summary and figures, and a report that fits its kind."""

import json
from pathlib import Path

import pandas as pd
import pytest

from clipeval.report.kinds import detect_kind
from clipeval.runs.cli import main

CPU = ["--device", "cpu", "--no-progress", "--batch-size", "8"]


@pytest.fixture
def own_pairs(challenge_csv, tmp_path):
    """A user's own pairs table: image paths and captions, no ``match`` column."""
    pairs = pd.read_csv(challenge_csv)[["image", "caption"]]
    pairs["image"] = [str(challenge_csv.parent / image) for image in pairs["image"]]
    path = tmp_path / "my_pairs.csv"
    pairs.to_csv(path, index=False)
    return path


def _images_root(pairs: Path) -> list[str]:
    """``--image-root`` for a table naming its images by absolute path outside its own folder."""
    return ["--image-root", str(Path(pd.read_csv(pairs)["image"][0]).parent.parent)]


def test_score_writes_the_summary_and_the_figures_for_pairs_without_match(tiny_specs, own_pairs, tmp_path, capsys):
    specs = [tiny_specs["hf-clip"], tiny_specs["open_clip"]]
    out = tmp_path / "run"
    assert main(["score", "--pairs", str(own_pairs), "--checkpoint", specs[0], "--checkpoint", specs[1],
                 "--out", str(out), *CPU, *_images_root(own_pairs)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "score_summary.csv")
    assert summary["checkpoint"].tolist() == specs
    assert (summary["n_ok"] == 48).all() and {"all_mean", "all_std", "all_q50"} <= set(summary.columns)
    assert "auc" not in summary.columns  # nothing is marked matched or mismatched
    figures = sorted(path.name for path in (out / "figures").glob("*.png"))
    assert figures == ["score_histograms_cosine.png", "score_spearman.png"]
    assert "scores.csv" in printed and "figures/score_spearman.png" in printed
    assert f"python -m clipeval report --run-dir {out}" in printed


def test_score_with_match_summarises_matched_vs_mismatched(tiny_specs, challenge_csv, tmp_path):
    out = tmp_path / "run"
    assert main(["score", "--pairs", str(challenge_csv), "--checkpoint", tiny_specs["hf-clip"], "--out", str(out),
                 *CPU]) == 0
    summary = pd.read_csv(out / "score_summary.csv")
    assert {"matched_mean", "mismatched_mean", "auc", "gap"} <= set(summary.columns)
    figures = sorted(path.name for path in (out / "figures").glob("*.png"))
    assert figures == ["score_histograms_cosine.png", "score_histograms_percentile.png"]  # one checkpoint: no ρ


def test_report_on_a_cli_score_run_names_its_kind_and_never_asks_for_notebooks(tiny_specs, own_pairs, tmp_path,
                                                                               capsys):
    out = tmp_path / "run"
    assert main(["score", "--pairs", str(own_pairs), "--checkpoint", tiny_specs["hf-clip"], "--out", str(out),
                 *CPU, *_images_root(own_pairs)]) == 0
    assert detect_kind(out).name == "score"
    capsys.readouterr()
    assert main(["report", "--run-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    page = (out / "report" / "index.html").read_text()
    assert "a score run (python -m clipeval score --pairs" in printed and "0 file(s) missing" in printed
    assert "make notebooks" not in printed + page and "offline profile" not in printed + page
    assert "score_histograms_cosine.png" in page and "Executed notebooks" not in page
    assert "Retrieval metrics" not in page  # a score run has none, so none is listed as missing
    assert "next: python -m clipeval curate --scores" in printed

    # a curation of that run, reported as a curation: the drop reasons with their scores and cut
    assert main(["curate", "--scores", str(out), "--rule", "top:30%", "--out", str(out / "curated"),
                 "--no-progress"]) == 0
    assert main(["report", "--run-dir", str(out / "curated")]) == 0
    printed = capsys.readouterr().out
    page = (out / "curated" / "report" / "index.html").read_text()
    assert "a curation (python -m clipeval curate)" in printed and "0 file(s) missing" in printed
    assert "This curation" in page and "lowest score" in page and "make notebooks" not in page


def test_report_on_a_retrieve_folder_lists_only_retrieval_files(tmp_path, capsys):
    out = tmp_path / "retrieval"
    out.mkdir()
    metrics = {"checkpoint": "hf:x", "dataset": "d", "direction": "text_to_image", "k": 1, "n_queries": 2,
               "n_images": 2}
    for metric in ("hit_rate", "recall", "mrr", "median_rank"):
        metrics |= {metric: 0.5, f"{metric}_ci_low": 0.4, f"{metric}_ci_high": 0.6, f"{metric}_chance": 0.5}
    pd.DataFrame([metrics]).to_csv(out / "metrics.csv", index=False)
    (out / "manifest.json").write_text(json.dumps({"steps": {"retrieve": {"checkpoints": [{"spec": "hf:x"}]}}}))
    assert main(["report", "--run-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a retrieve run" in printed and "1 file(s) missing" in printed
    assert "retrieval_stats.json is missing: rerun the same `python -m clipeval retrieve ...` command" in printed
    page = (out / "report" / "index.html").read_text()
    assert "results.csv" not in page and "make notebooks" not in page and "Figures" not in page


def test_report_on_a_folder_with_no_run_says_what_it_looks_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run-dir", str(tmp_path / "empty")]) == 2
    assert "holds no clipeval run" in capsys.readouterr().err
