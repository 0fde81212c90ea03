"""The README's measured blocks agree with the committed files they are generated from."""

import shutil

import pandas as pd
import pytest

from clipeval.runs.cli import main
from clipeval.runs.measured import (
    BENCH_RESULTS_DIR,
    BLOCK,
    README_PATH,
    RENDERERS,
    SNAPSHOT_FILES,
    Sources,
    read_blocks,
    render_blocks,
    replace_blocks,
    snapshot_differences,
    snapshot_run,
    stale_blocks,
    update_readme,
)

README = README_PATH.read_text()


def test_readme_measured_blocks_agree_with_the_committed_files():
    stale = stale_blocks(README, render_blocks())
    assert not stale, f"README measured blocks differ from their files: {stale}; run `make measured`"


def test_every_renderer_has_one_block_in_the_readme():
    assert set(read_blocks(README)) == set(RENDERERS)


def test_phrases_do_not_start_a_line():
    """A line that starts with a comment is an HTML block in Markdown: the phrase would show unformatted."""
    for match in BLOCK.finditer(README):
        if not match["body"].startswith("\n"):
            line = README[README.rfind("\n", 0, match.start()) + 1:match.start()]
            assert line.strip(" -*0123456789."), f"{match['name']} starts a line"


def test_the_snapshot_holds_the_files_the_tables_read():
    assert all((BENCH_RESULTS_DIR / "offline" / name).is_file() for name in SNAPSHOT_FILES)


def _sources(tmp_path):
    """A copy of the committed sources that a test may change."""
    shutil.copytree(BENCH_RESULTS_DIR / "offline", tmp_path / "snapshot")
    shutil.copytree(BENCH_RESULTS_DIR, tmp_path / "bench", ignore=shutil.ignore_patterns("*_work"))
    return Sources(bench_dir=tmp_path / "bench", snapshot_dir=tmp_path / "snapshot")


def test_a_changed_number_in_a_file_makes_the_readme_stale(tmp_path):
    sources = _sources(tmp_path)
    summary = pd.read_csv(sources.snapshot_dir / "score_summary.csv")
    summary.loc[0, "auc"] = 0.1234
    summary.to_csv(sources.snapshot_dir / "score_summary.csv", index=False)
    blocks = render_blocks(sources)
    assert "0.123" in blocks["score_summary"]
    assert stale_blocks(README, blocks) == ["score_summary"]


def test_a_hand_edit_inside_a_block_makes_the_readme_stale():
    edited = README.replace("| all | 0.473 |", "| all | 0.474 |", 1)
    assert edited != README
    assert stale_blocks(edited, render_blocks()) == ["dual_test_retrieval"]


def test_replace_blocks_keeps_tables_indented_and_phrases_inline():
    text = ("Intro <!-- measured:a -->old<!-- /measured -->.\n\n- item\n\n  <!-- measured:b -->\n  stale\n"
            "  <!-- /measured -->\n")
    replaced = replace_blocks(text, {"a": "new phrase", "b": "| x |\n| --- |\n| 1 |"})
    assert replaced == ("Intro <!-- measured:a -->new phrase<!-- /measured -->.\n\n- item\n\n"
                        "  <!-- measured:b -->\n\n  | x |\n  | --- |\n  | 1 |\n\n  <!-- /measured -->\n")
    assert read_blocks(replaced) == {"a": "new phrase", "b": "| x |\n| --- |\n| 1 |"}
    assert replace_blocks(replaced, read_blocks(replaced)) == replaced


@pytest.mark.parametrize(("blocks", "message"), [({"a": "x"}, "unknown \\['b'\\]"),
                                                 ({"a": "x", "b": "y", "c": "z"}, "missing \\['c'\\]")])
def test_replace_blocks_refuses_unknown_or_missing_blocks(blocks, message):
    text = "<!-- measured:a -->1<!-- /measured --> <!-- measured:b -->2<!-- /measured -->"
    with pytest.raises(ValueError, match=message):
        replace_blocks(text, blocks)


def test_a_block_named_twice_is_refused():
    with pytest.raises(ValueError, match="occurs twice"):
        read_blocks("<!-- measured:a -->1<!-- /measured --> <!-- measured:a -->2<!-- /measured -->")


def test_update_readme_snapshots_a_run_and_rewrites_the_blocks(tmp_path):
    sources = _sources(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(sources.snapshot_dir, run)
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["mrr"] = 0.5
    metrics.to_csv(run / "metrics.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert snapshot_differences(run, sources.snapshot_dir) == ["metrics.csv"]
    assert update_readme(readme, sources, from_run=run) == ["retrieval_metrics"]
    assert snapshot_differences(run, sources.snapshot_dir) == []
    assert "| 0.500 (" in read_blocks(readme.read_text())["retrieval_metrics"]
    assert update_readme(readme, sources) == []


def test_snapshot_of_an_incomplete_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks score_summary\.csv"):
        snapshot_run(tmp_path / "run", tmp_path / "snapshot")
    assert not (tmp_path / "snapshot").exists()


def test_cli_check_says_the_readme_is_up_to_date(capsys):
    assert main(["measured", "--check"]) == 0
    assert f"the README's {len(RENDERERS)} measured blocks are up to date" in capsys.readouterr().out
