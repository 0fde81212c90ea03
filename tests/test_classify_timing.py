"""``classify`` times its stages into ``zero_shot_stats.json``, as ``bench/bench_zero_shot.py`` reads them: the
image stage (read, decode, encode), the class embeddings (``text_encode``, the model's lazy load inside) apart."""

import json

import numpy as np
import pytest
from PIL import Image

from clipeval.layout import RunLayout
from clipeval.runs.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_classify_records_each_stage_with_its_items(tmp_path, tiny_specs):
    rng = np.random.default_rng(0)
    for name in ("red", "green", "blue"):
        folder = tmp_path / "val" / name
        folder.mkdir(parents=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{index}.jpg")
    (tmp_path / "templates.txt").write_text("a photo of a {c}.\n{c}\n")
    spec = tiny_specs["open_clip"]
    assert main(["classify", "--images", str(tmp_path / "val"), "--templates", str(tmp_path / "templates.txt"),
                 "--checkpoint", spec, "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
                 "--no-embedding-cache", "--bootstrap", "20"]) == 0
    stats = json.loads(RunLayout(tmp_path / "run").zero_shot_stats.read_text())["checkpoints"][spec]["val"]
    stages = stats["timing"]["stages"]
    assert {name: stages[name]["items"] for name in ("image_read", "image_decode", "image_encode")} == \
        {"image_read": 12, "image_decode": 12, "image_encode": 12}
    assert stages["text_encode"]["items"] == stats["prompts"] == 6
    assert stages["model_load"]["calls"] == 1 and stages["model_load"]["wall_s"] <= stages["text_encode"]["wall_s"]
