"""bench/reproducibility.py holds a run to what docs/reproducibility.md promises, and no further."""

import shutil

import pandas as pd
import pytest

from measured_sources import BENCH_RESULTS_DIR, SNAPSHOT_FILES
from reproducibility import check_run, main


@pytest.fixture
def run(tmp_path):
    """A run folder holding a copy of the committed snapshot's tables."""
    shutil.copytree(BENCH_RESULTS_DIR / "offline", tmp_path / "run")
    return tmp_path / "run"


def _edit(path, change):
    table = pd.read_csv(path)
    change(table)
    table.to_csv(path, index=False)


def _verdicts(run):
    return {check.name: check for check in check_run(run)}


def test_the_snapshot_itself_is_byte_identical(run, capsys):
    assert all(check.identical for check in check_run(run))
    assert main([str(run)]) == 0
    assert capsys.readouterr().out.count("byte-identical") == len(SNAPSHOT_FILES)


def test_estimates_moved_within_their_cis_are_as_expected(run):
    def within(table):
        table["hit_rate"] = (table["hit_rate_ci_low"] + table["hit_rate"]) / 2
    _edit(run / "metrics.csv", within)
    _edit(run / "score_summary.csv", lambda table: table.__setitem__("auc", table["auc"] + 0.01))
    checks = _verdicts(run)
    assert not checks["metrics.csv"].identical and not checks["metrics.csv"].broken
    assert not checks["score_summary.csv"].broken
    assert any(note.startswith("auc: largest change 0.01") for note in checks["score_summary.csv"].notes)


def test_an_estimate_outside_the_snapshot_ci_breaks_the_statement(run):
    _edit(run / "metrics.csv", lambda table: table.loc.__setitem__((0, "mrr"), table.loc[0, "mrr_ci_high"] + 0.01))
    assert _verdicts(run)["metrics.csv"].broken == ["mrr outside the other run's CI in 1 row(s)"]
    assert main([str(run)]) == 1


def test_a_changed_chance_level_or_count_breaks_it(run):
    _edit(run / "metrics.csv", lambda table: table.__setitem__("mrr_chance", table["mrr_chance"] * 1.001))
    _edit(run / "score_summary.csv", lambda table: table.__setitem__("matched_count", table["matched_count"] + 1))
    checks = _verdicts(run)
    assert checks["metrics.csv"].broken == ["mrr_chance differs (a count or chance level: no model computes it)"]
    assert checks["score_summary.csv"].broken == [
        "matched_count differs (a count or chance level: no model computes it)"]


def test_other_rows_break_it_and_extra_columns_are_noted(run):
    _edit(run / "label_metric_bias.csv", lambda table: table.__setitem__("k", table["k"] + 1))
    _edit(run / "metrics.csv", lambda table: table.__setitem__("trivial", False))
    checks = _verdicts(run)
    assert checks["label_metric_bias.csv"].broken[0].startswith("the rows differ")
    assert checks["metrics.csv"].notes == ["columns in the run only: ['trivial']"]
    assert not checks["metrics.csv"].broken


def test_a_run_without_the_tables_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'empty'} lacks score_summary.csv")
