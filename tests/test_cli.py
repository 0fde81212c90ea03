"""The dual-encoder commands: unset options keep the library defaults, set ones reach it."""

import json
import subprocess
import sys

import pytest

from clipeval.models.registry import load_encoder
from clipeval.runs.cli import main
from clipeval.train.options import TrainConfig
from fresh_process import HEAVY, imports_after

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_make_scenes_then_train_then_load(tmp_path):
    scenes, model = tmp_path / "scenes", tmp_path / "dual"
    assert main(["make-scenes", "--out", str(scenes), "--train", "16", "--val", "8", "--test", "8",
                 "--image-size", "32", "--seed", "3"]) == 0
    metadata = json.loads((scenes / "metadata.json").read_text())
    assert metadata["seed"] == 3 and metadata["sizes"] == {"train": 16, "val": 8, "test": 8}
    assert main(["train", "--scenes", str(scenes), "--out", str(model), "--epochs", "1", "--batch-size", "8",
                 "--image-size", "32", "--device", "cpu", "--no-progress", "--hard-negatives"]) == 0
    history = json.loads((model / "history.json").read_text())
    assert history["config"]["epochs"] == 1 and history["config"]["batch_size"] == 8
    assert history["config"]["hard_negatives"] is True and history["config"]["lr"] == TrainConfig.lr
    assert load_encoder(f"dual:{model}", device="cpu").encode_texts(["a red circle"]).shape[0] == 1


def test_bad_arguments_are_one_error_line(tmp_path, capsys):
    assert main(["retrieve", "--checkpoint", "hf:x", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error == "error: give a pairs source, or all three of queries, images and relevance tables\n"


def test_retrieve_accepts_several_cut_offs_after_one_flag():
    from clipeval.runs.cli import build_parser

    base = ["retrieve", "--pairs", "p.csv", "--checkpoint", "hf:x", "--out", "o"]
    assert build_parser().parse_args([*base, "--k", "1", "5", "10"]).ks == [1, 5, 10]
    assert build_parser().parse_args([*base, "--k", "1", "--k", "5"]).ks == [1, 5]
    assert build_parser().parse_args(base).ks is None


def test_old_flag_spellings_still_work_and_say_what_replaced_them(capsys):
    from clipeval.embed.options import EmbedOptions
    from clipeval.jobs.flags import options_from
    from clipeval.pipeline.options import ExecutionOptions
    from clipeval.runs.cli import build_parser

    old = ["score-shards", "--shards", "s.tar", "--checkpoint", "hf:x", "--out", "o", "--decode-workers", "1",
           "--num-workers", "3", "--gpus-per-worker", "0.5", "--workers", "4", "--cache-dir", "images"]
    args = build_parser().parse_args(old)
    embed, execution = options_from(args, EmbedOptions), options_from(args, ExecutionOptions)
    assert (embed.decode_processes, execution.ray_actors, execution.gpus_per_actor) == (1, 3, 0.5)
    assert embed.fetch.read_threads == 4 and str(embed.fetch.image_cache_dir) == "images"
    warnings = capsys.readouterr().err
    for before, after in (("--decode-workers", "--decode-processes"), ("--num-workers", "--ray-actors"),
                          ("--gpus-per-worker", "--gpus-per-actor"), ("--workers", "--read-threads"),
                          ("--cache-dir", "--image-cache-dir")):
        assert f"warning: {before} is deprecated and will be removed in the next release; use {after}" in warnings
    new = build_parser().parse_args(["score", "--shards", "s.tar", "--checkpoint", "hf:x", "--out", "o"])
    assert options_from(new, EmbedOptions) == EmbedOptions() and capsys.readouterr().err == ""


def test_the_deprecated_commands_run_the_new_ones(tmp_path, capsys):
    assert main(["score-shards", "--shards", str(tmp_path / "none.tar"), "--checkpoint", "hf:x", "--out",
                 str(tmp_path / "run"), "--no-progress"]) != 0
    assert "warning: score-shards is deprecated" in capsys.readouterr().err
    assert main(["curate-shards", "--scores", str(tmp_path / "nothing"), "--rule", "basic", "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "warning: curate-shards is deprecated" in error and "no scored shard to curate" in error


def test_help_answers_without_importing_a_model_library_or_pandas():
    assert imports_after(["--help"], (*HEAVY, "numpy", "pandas")) == []
    assert imports_after(["score", "--help"], (*HEAVY, "numpy", "pandas")) == []


def test_a_finished_score_run_answers_a_rerun_without_a_model_library(tmp_path, challenge_csv, tiny_specs):
    argv = ["score", "--pairs", str(challenge_csv), "--checkpoint", tiny_specs["open_clip"], "--out",
            str(tmp_path / "run"), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    written = (tmp_path / "run" / "score_summary.csv").stat().st_mtime_ns
    assert imports_after(argv, HEAVY) == []
    assert (tmp_path / "run" / "score_summary.csv").stat().st_mtime_ns == written


def test_a_closed_output_pipe_ends_a_command_quietly():
    """`clipeval ... | head` closes the pipe early: no BrokenPipeError traceback, SIGPIPE's status."""
    run = subprocess.Popen([sys.executable, "-m", "clipeval", "checkpoints"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    run.stdout.close()  # the reader is gone before the command writes
    stderr = run.stderr.read().decode()
    assert run.wait(timeout=120) == 141 and stderr == ""
