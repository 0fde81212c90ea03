"""The dual-encoder commands: unset options keep the library defaults, set ones reach it."""

import json

import pytest

from clipeval.models.registry import load_encoder
from clipeval.runs.cli import main
from clipeval.train.dual import TrainConfig

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
    assert capsys.readouterr().err.count("\n") == 1


def test_retrieve_accepts_several_cut_offs_after_one_flag():
    from clipeval.runs.cli import build_parser

    base = ["retrieve", "--pairs", "p.csv", "--checkpoint", "hf:x", "--out", "o"]
    assert build_parser().parse_args([*base, "--k", "1", "5", "10"]).k == [1, 5, 10]
    assert build_parser().parse_args([*base, "--k", "1", "--k", "5"]).k == [1, 5]
    assert build_parser().parse_args(base).k is None
