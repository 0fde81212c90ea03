"""``clipeval report --run-dir`` on the output folder of every command, and a job added from outside the package."""

import html

import pandas as pd
import pytest
from PIL import Image

from clipeval.data.scenes import generate_scenes
from clipeval.jobs.job import Command, Job
from clipeval.jobs.registry import JOBS, register_job
from clipeval.layout import RunLayout
from clipeval.models.tiny import build_tiny_classifier
from clipeval.report.kinds import detect_kind
from clipeval.runs.cli import main
from toy_job import TOY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=24, n_val=8, n_test=8, image_size=32, seed=4)


def _report(folder, capsys) -> str:
    capsys.readouterr()
    assert main(["report", "--run-dir", str(folder)]) == 0, capsys.readouterr().err
    return (folder / "report" / "index.html").read_text()


def test_every_command_folder_gets_a_report_of_its_kind(tmp_path, tiny_specs, scenes, capsys):
    spec, pairs, out = tiny_specs["open_clip"], str(scenes / "pairs_test.csv"), tmp_path
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(3):
        Image.new("RGB", (32, 32), (80 * number, 40, 200)).save(photos / f"img{number}.png")
    commands = {
        "score": ["score", "--pairs", pairs, "--checkpoint", spec, "--out", str(out / "score"), *CPU],
        "sharded score": ["score", "--shards", str(out / "shards"), "--checkpoint", spec, "--out",
                          str(out / "sharded"), *CPU],
        "retrieve": ["retrieve", "--pairs", pairs, "--checkpoint", spec, "--bootstrap", "20", "--out",
                     str(out / "retrieve"), *CPU],
        "curation": ["curate", "--scores", str(out / "score"), "--rule", "top:50%", "--out", str(out / "curated")],
        "eval set": ["build-evalset", "--images", str(photos), "--labeller", "classifier", "--model",
                     str(build_tiny_classifier(tmp_path / "clf", ["a cat", "a dog"])), "--threshold", "0", "--out",
                     str(out / "evalset"), *CPU],
        "fine-tune": ["finetune", "--checkpoint", spec, "--pairs", str(scenes / "pairs_train.csv"), "--holdout",
                      "0.25", "--steps", "1", "--batch-size", "8", "--bootstrap", "20", "--out",
                      str(out / "finetune"), *CPU],
        "index": ["index", pairs, "--checkpoint", spec, "--out", str(out / "index"), *CPU],
    }
    assert main(["make-shards", "--pairs", pairs, "--out", str(out / "shards"), "--shards", "2"]) == 0
    folders = {"score": "score", "sharded score": "sharded", "retrieve": "retrieve", "curation": "curated",
               "eval set": "evalset", "fine-tune": "finetune", "index": "index"}
    sections = {"score": "Pair scores", "sharded score": "Time and memory", "retrieve": "Retrieval metrics",
                "curation": "This curation", "eval set": "This eval set", "fine-tune": "This fine-tune",
                "index": "This index"}
    for kind, command in commands.items():
        assert main(command) == 0, kind
    for kind, folder in folders.items():
        assert detect_kind(out / folder).name == kind
        page = _report(out / folder, capsys)
        assert f"This folder holds a {kind}" in html.unescape(page), kind
        assert f">{sections[kind]}</h2>" in page, kind
        assert "is missing" not in page and "could not be read" not in page, kind


def test_a_job_added_from_outside_the_package_gets_its_command_and_report_section(tmp_path, capsys):
    register_job(TOY)  # the one line
    try:
        assert JOBS["toy"] is TOY
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "write a toy table (a job from the tests)" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["toy", "--help"])
        shown = capsys.readouterr().out
        assert "--rows ROWS" in shown and "rows to write (default: 3)" in shown
        assert "python -m clipeval toy --out outputs/toy --rows 7" in shown
        assert main(["toy", "--out", str(tmp_path), "--rows", "7"]) == 0
        assert len(pd.read_csv(tmp_path / "toy.csv")) == 7
        assert detect_kind(tmp_path).name == "toy"
        page = _report(tmp_path, capsys)
        assert ">Toy counts</h2>" in page and '<td class="num">7</td>' in page
        assert RunLayout(tmp_path).report.is_symlink()
    finally:
        JOBS.pop("toy")
    with pytest.raises(SystemExit):  # gone with its job
        main(["toy", "--out", str(tmp_path)])


def test_a_job_whose_command_is_taken_is_refused():
    clash = Job("another-score", commands=(Command("score", "a second score", (), lambda args: 0),))
    with pytest.raises(ValueError, match="the command 'score' is another job's"):
        register_job(clash)
    assert "another-score" not in JOBS
