"""A new user's first hour: where the cache goes, a failed run never blocking its fix, path errors that say
where they looked, Ctrl-C without a traceback, and a --help that teaches."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clipeval.data.options import PairsTableError
from clipeval.data.sources import read_pairs
from clipeval.embed.cache import CACHE_ENV, default_cache_dir
from clipeval.layout import RunFolderMismatch
from clipeval.models.registry import CheckpointError, load_encoder
from clipeval.paths import PROJECT_ROOT
from clipeval.runs.cli import all_commands, build_parser, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INTERRUPTED = "interrupted; run the same command again to resume (finished chunks/shards are kept)"


def test_the_cache_lives_in_the_users_cache_folder_not_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clipeval" / "embeddings"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset_or_relative in ("", "relative/cache"):  # the XDG rule: a relative value is ignored
        monkeypatch.setenv("XDG_CACHE_HOME", unset_or_relative)
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "clipeval" / "embeddings"
    assert not default_cache_dir().is_relative_to(PROJECT_ROOT)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))  # the override still wins
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache_dir() is None


def _pairs_csv(challenge_csv, folder: Path, repeat: int = 1) -> Path:
    """The challenge pairs with absolute image paths (repeated ``repeat`` times), so any working folder reads them."""
    pairs = read_pairs(challenge_csv)
    pairs["image"] = [str(Path(pairs.attrs["base_dir"]) / ref) for ref in pairs["image"]]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.csv"
    pd.concat([pairs] * repeat, ignore_index=True).to_csv(path, index=False)
    return path


def test_a_run_that_failed_before_scoring_never_blocks_its_fix(tiny_specs, challenge_csv, tmp_path, capsys):
    pairs, out = _pairs_csv(challenge_csv, tmp_path), tmp_path / "run"
    base = ["score", "--pairs", str(pairs), "--out", str(out), "--device", "cpu", "--no-progress"]
    typo = tiny_specs["hf-clip"] + "-typo"
    assert main([*base, "--checkpoint", typo]) == 2
    assert (out / "run.json").is_file() and "no such directory" in capsys.readouterr().err
    assert main([*base, "--checkpoint", tiny_specs["hf-clip"]]) == 0  # the corrected command, same --out
    assert len(pd.read_csv(out / "results.csv")) == 48
    # a run that did score something is protected: the refusal says what differs and the two ways on
    capsys.readouterr()
    assert main([*base, "--checkpoint", tiny_specs["open_clip"]]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"holds an earlier run with different checkpoints (['{tiny_specs['hf-clip']}'] then, " in error
    assert "rerun with --overwrite to discard it, or choose another --out folder" in error
    assert len(pd.read_csv(out / "results.csv")) == 48


def test_a_run_still_going_is_never_replaced_even_before_its_first_chunk(tmp_path):
    from clipeval.layout import RunLayout, claim_run

    layout = RunLayout(tmp_path / "run")
    claim_run(layout, {"checkpoints": ["hf:a"]})
    assert claim_run(layout, {"checkpoints": ["hf:b"]}) == "replaced"  # nothing scored, no other process: replaced
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = json.loads(layout.incomplete.read_text())
        layout.incomplete.write_text(json.dumps({**marker, "pid": running.pid}))  # as if that process were scoring
        with pytest.raises(RunFolderMismatch, match=r"different checkpoints \(\['hf:b'\] then, \['hf:c'\] now\)"):
            claim_run(layout, {"checkpoints": ["hf:c"]})
    finally:
        running.kill()
        running.wait()
    assert claim_run(layout, {"checkpoints": ["hf:c"]}) == "replaced"


def test_a_refusal_lists_every_difference_readably(tiny_specs, challenge_csv, tmp_path, score_table):
    pairs, run_dir = read_pairs(challenge_csv).iloc[:8], tmp_path / "run"
    score_table(pairs, [tiny_specs["hf-clip"]], chunk_size=4, run_dir=run_dir, batch_size=4)
    with pytest.raises(RunFolderMismatch) as refused:
        score_table(pairs, [tiny_specs["open_clip"]], chunk_size=5, run_dir=run_dir, batch_size=4)
    assert "different checkpoints (" in str(refused.value) and " and chunk_size (4 then, 5 now)" in str(refused.value)


def test_an_evalset_build_that_failed_never_blocks_and_a_refusal_names_rebuild(tmp_path, capsys):
    from PIL import Image

    from clipeval.models.tiny import build_tiny_classifier

    (tmp_path / "photos").mkdir()
    for index in range(3):
        Image.new("RGB", (32, 32), (80 * index, 40, 200)).save(tmp_path / "photos" / f"img{index}.png")
    folder = build_tiny_classifier(tmp_path / "clf", ["a cat", "a dog"])
    base = ["build-evalset", "--images", str(tmp_path / "photos"), "--labeller", "classifier", "--threshold", "0",
            "--out", str(tmp_path / "set"), "--device", "cpu", "--no-progress"]
    assert main([*base, "--model", str(tmp_path / "no-such-classifier")]) == 2  # failed: wrote no eval set
    assert (tmp_path / "set" / "run.json").is_file()  # but claimed the folder
    assert main([*base, "--model", str(folder)]) == 0
    capsys.readouterr()
    assert main([*base, "--model", str(folder), "--threshold", "0.01"]) == 2  # a complete build is protected
    assert "rerun with --rebuild to discard it, or choose another --out folder" in capsys.readouterr().err


def test_checkpoint_path_errors_name_the_absolute_path_and_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    with pytest.raises(CheckpointError) as dual:
        load_encoder("dual:outputs/offline/models/dual", device="cpu")
    assert f"no such folder {here / 'outputs/offline/models/dual'} (relative to the current folder {here})" \
        in str(dual.value)
    (here / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"missing config\.json, model\.safetensors in .*/empty \(relative"):
        load_encoder("dual:empty", device="cpu")
    # two slashes: no hub name looks like that, so it is a local folder, not a hub download that fails offline
    with pytest.raises(CheckpointError) as hf:
        load_encoder("hf:models/my/clip", device="cpu")
    assert f"no such directory {here / 'models/my/clip'} (relative to the current folder {here})" in str(hf.value)
    with pytest.raises(CheckpointError, match=rf"no such weights file {here}/weights\.pt \(relative"):
        load_encoder("open_clip:ViT-B-32@./weights.pt", device="cpu")
    with pytest.raises(CheckpointError, match=rf"no such folder {here}/oc \(relative"):
        load_encoder("open_clip:./oc", device="cpu")


def test_pairs_and_images_dir_errors_name_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    with pytest.raises(PairsTableError, match=rf"no such file {here}/pairs\.csv \(relative to the current folder"):
        read_pairs("pairs.csv")
    with pytest.raises(PairsTableError, match=rf"no such folder {here}/photos \(relative to the current folder"):
        read_pairs("photos", kind="folder")
    (here / "annotations").mkdir()
    coco = here / "annotations" / "captions_val2017.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"image_id": 1, "caption": "a cat"}]}))
    with pytest.raises(PairsTableError) as images_dir:
        read_pairs("annotations/captions_val2017.json", images_dir="val2017")
    assert f"--images-dir val2017: no such folder {here / 'val2017'} (relative to the current folder {here})" \
        in str(images_dir.value)
    (here / "val2017").mkdir()
    assert read_pairs("annotations/captions_val2017.json", images_dir="val2017").attrs["base_dir"] == \
        str(here / "val2017")


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    from clipeval.jobs import steps

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "score", interrupted)
    assert main(["score", "--pairs", "p.csv", "--checkpoint", "hf:x", "--out", str(tmp_path)]) == 130
    error = capsys.readouterr().err
    assert error.strip() == INTERRUPTED and "Traceback" not in error


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_a_terminal_stops_a_real_run_cleanly_and_the_rerun_resumes(tiny_specs, challenge_csv, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C, with a decode process: the workers are quiet."""
    pairs = _pairs_csv(challenge_csv, tmp_path, repeat=4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "clipeval", "score", "--pairs", str(pairs), "--checkpoint",
               tiny_specs["hf-clip"], "--out", str(out), "--device", "cpu", "--chunk-size", "8", "--batch-size", "8",
               "--decode-processes", "1", "--no-progress", "--no-embedding-cache"]  # no cache: every chunk works
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # a shell that starts a job in the background (CI, `make test &`) hands it SIGINT ignored; a terminal does not
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    parts, deadline = out / "shards" / "pairs.parts", time.monotonic() + 240
    while not any(parts.glob("*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before the test could interrupt it"
    os.killpg(process.pid, signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error[-2000:]
    assert error.rstrip().endswith(INTERRUPTED) and "Traceback" not in error, error[-2000:]
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0 and "chunks reused from an interrupted run" in resumed.stderr
    assert len(pd.read_csv(out / "results.csv")) == 192


def test_a_command_says_where_the_embedding_cache_is(tiny_specs, challenge_csv, tmp_path, monkeypatch, capsys,
                                                     score_table):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    pairs = _pairs_csv(challenge_csv, tmp_path)
    assert main(["score", "--pairs", str(pairs), "--checkpoint", tiny_specs["hf-clip"], "--out", str(tmp_path / "a"),
                 "--device", "cpu", "--no-progress"]) == 0
    error = capsys.readouterr().err
    assert error.count("embedding cache: ") == 1
    assert f"embedding cache: {tmp_path / 'cache' / 'embeddings.sqlite'} (${CACHE_ENV} moves it" in error
    score_table(read_pairs(pairs), [tiny_specs["hf-clip"]], run_dir=tmp_path / "b")  # the library (notebooks): quiet
    assert "embedding cache" not in capsys.readouterr().err


def _help(argv: list[str], capsys) -> str:
    """A command's help, as argparse formats it 200 columns wide (no flag's help wrapped)."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_help_teaches_defaults_the_spec_grammar_and_an_example_per_command(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    top = _help([], capsys)
    for form in ("hf:OWNER/NAME", "open_clip:ARCH@TAG", "open_clip:hf-hub:OWNER/NAME", "baseline:NAME", "dual:FOLDER",
                 "Relative paths are resolved against the current folder", "example:", "~/.cache/clipeval"):
        assert form in top, form
    score = _help(["score"], capsys)
    for shown in ("images / captions per forward pass (default: 32)", "(default: 256)", "(default: local)",
                  "dual:FOLDER", "example:\n  python -m clipeval score --pairs"):
        assert shown in score, shown
    assert "dual:FOLDER" in _help(["retrieve"], capsys)
    assert "(default: tar)" in _help(["make-shards"], capsys)
    assert "run_dir" in _help(["run-notebooks"], capsys) and "extends: NAME" in _help(["report"], capsys)
    commands = build_parser()._subparsers._group_actions[0].choices
    examples = {command.name: command.example for command in all_commands()}
    assert all(examples.values())  # a new command gets its example
    assert set(commands) == set(examples) | {old for command in all_commands() for old, _ in command.deprecated}
    for name, example in examples.items():
        assert f"example:\n  {example}" in commands[name].format_help(), name
        words = shlex.split(example)
        assert words[:3] == ["python", "-m", "clipeval"]
        build_parser().parse_args(words[3:])  # every example is a command the parser takes
