"""The docs' measured blocks agree with the committed files they are generated from."""

import re
import shutil

import pandas as pd
import pytest

from clipeval.paths import PROJECT_ROOT
from measured import (
    BLOCK,
    RENDERERS,
    blocks_in,
    documents,
    main,
    read_blocks,
    render_blocks,
    replace_blocks,
    snapshot_differences,
    snapshot_run,
    stale_blocks,
    update_documents,
)
from measured_sources import BENCH_RESULTS_DIR, SNAPSHOT_FILES, Sources


def test_the_measured_blocks_agree_with_the_committed_files():
    stale = stale_blocks(documents(), render_blocks())
    assert not stale, f"measured blocks differ from their files: {stale}; run `make measured`"


def test_every_renderer_has_one_block_in_the_docs():
    assert set(blocks_in(documents())) == set(RENDERERS)


def test_phrases_do_not_start_a_line():
    """A line that starts with a comment is an HTML block in Markdown: the phrase would show unformatted."""
    for path in documents():
        text = path.read_text()
        for match in BLOCK.finditer(text):
            if not match["body"].startswith("\n"):
                line = text[text.rfind("\n", 0, match.start()) + 1:match.start()]
                assert line.strip(" -*0123456789."), f"{match['name']} starts a line in {path.name}"


def test_the_snapshot_holds_the_files_the_tables_read():
    assert all((BENCH_RESULTS_DIR / "offline" / name).is_file() for name in SNAPSHOT_FILES)


def _copy(tmp_path):
    """A copy of the committed sources and documents that a test may change."""
    shutil.copytree(BENCH_RESULTS_DIR / "offline", tmp_path / "snapshot")
    shutil.copytree(BENCH_RESULTS_DIR, tmp_path / "bench", ignore=shutil.ignore_patterns("*_work"))
    (tmp_path / "docs").mkdir()
    for path in documents():
        shutil.copy(path, tmp_path / path.relative_to(PROJECT_ROOT))
    return Sources(bench_dir=tmp_path / "bench", snapshot_dir=tmp_path / "snapshot"), documents(tmp_path)


def test_a_changed_number_in_a_file_makes_its_block_stale(tmp_path):
    sources, paths = _copy(tmp_path)
    summary = pd.read_csv(sources.snapshot_dir / "score_summary.csv")
    summary.loc[0, "auc"] = 0.1234
    summary.to_csv(sources.snapshot_dir / "score_summary.csv", index=False)
    blocks = render_blocks(sources)
    assert "0.123" in blocks["score_summary"]
    assert stale_blocks(paths, blocks) == ["score_summary"]


def test_a_bias_that_changes_sign_changes_its_verb(tmp_path):
    """A phrase whose words follow a result's direction (drops / rises) is rendered whole, not only its number."""
    sources, paths = _copy(tmp_path)
    committed = render_blocks()
    bias = pd.read_csv(sources.snapshot_dir / "label_metric_bias.csv")
    bias["bias"] = -bias["bias"]
    bias.to_csv(sources.snapshot_dir / "label_metric_bias.csv", index=False)
    flipped = render_blocks(sources)
    swap = {"drops": "rises", "rises": "drops"}
    for name in ("self_label_hit_rate_bias", "self_label_mrr_bias"):
        verb, rest = committed[name].split(" ", 1)
        assert flipped[name] == f"{swap[verb]} {rest}"
    assert {"self_label_hit_rate_bias", "self_label_mrr_bias"} <= set(stale_blocks(paths, flipped))


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_a_hand_edit_inside_a_block_makes_it_stale(tmp_path, name):
    _, paths = _copy(tmp_path)
    path = blocks_in(paths)[name][0]
    text = path.read_text()
    opening = f"<!-- measured:{name} -->"
    digit = re.compile(r"\d").search(text, text.index(opening) + len(opening))
    path.write_text(text[:digit.start()] + str((int(digit[0]) + 1) % 10) + text[digit.end():])
    assert stale_blocks(paths, render_blocks()) == [name]


def test_replace_blocks_keeps_tables_indented_and_phrases_inline():
    text = ("Intro <!-- measured:a -->old<!-- /measured -->.\n\n- item\n\n  <!-- measured:b -->\n  stale\n"
            "  <!-- /measured -->\n")
    replaced = replace_blocks(text, {"a": "new phrase", "b": "| x |\n| --- |\n| 1 |"})
    assert replaced == ("Intro <!-- measured:a -->new phrase<!-- /measured -->.\n\n- item\n\n"
                        "  <!-- measured:b -->\n\n  | x |\n  | --- |\n  | 1 |\n\n  <!-- /measured -->\n")
    assert read_blocks(replaced) == {"a": "new phrase", "b": "| x |\n| --- |\n| 1 |"}
    assert replace_blocks(replaced, read_blocks(replaced)) == replaced


def test_a_block_with_no_renderer_is_refused():
    with pytest.raises(ValueError, match=r"no renderer: \['b'\]"):
        replace_blocks("<!-- measured:a -->1<!-- /measured --> <!-- measured:b -->2<!-- /measured -->", {"a": "x"})


def test_a_block_named_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="occurs twice"):
        read_blocks("<!-- measured:a -->1<!-- /measured --> <!-- measured:a -->2<!-- /measured -->")
    for name in ("one.md", "two.md"):
        (tmp_path / name).write_text("<!-- measured:a -->1<!-- /measured -->")
    with pytest.raises(ValueError, match=r"occurs in .*one\.md and .*two\.md"):
        blocks_in([tmp_path / "one.md", tmp_path / "two.md"])


def test_update_documents_snapshots_a_run_and_rewrites_the_blocks(tmp_path):
    sources, paths = _copy(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(sources.snapshot_dir, run)
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["mrr"] = 0.5
    metrics.to_csv(run / "metrics.csv", index=False)
    before = {path: path.read_text() for path in paths}
    assert snapshot_differences(run, sources.snapshot_dir) == ["metrics.csv"]
    assert update_documents(paths, sources, from_run=run) == ["retrieval_metrics"]
    assert snapshot_differences(run, sources.snapshot_dir) == []
    path, body = blocks_in(paths)["retrieval_metrics"]
    assert "| 0.500 (" in body
    assert [p for p in paths if p.read_text() != before[p]] == [path]
    assert update_documents(paths, sources) == []


def test_snapshot_of_an_incomplete_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks score_summary\.csv"):
        snapshot_run(tmp_path / "run", tmp_path / "snapshot")
    assert not (tmp_path / "snapshot").exists()


def test_check_says_the_blocks_are_up_to_date(capsys):
    assert main(["--check"]) == 0
    assert f"the {len(RENDERERS)} measured blocks are up to date" in capsys.readouterr().out
