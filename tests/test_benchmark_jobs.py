"""The benchmark jobs from the command line: ``classify`` (zero-shot) and ``hard-negatives``, their files,
manifest entries, report sections and published numbers."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.jobs.zero_shot import _with_published
from clipeval.layout import RunLayout
from clipeval.report.kinds import detect_kind
from clipeval.runs.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = ["--device", "cpu", "--no-progress", "--bootstrap", "50"]
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 230)}


def class_tree(root, per_class: int = 3):
    """One folder of solid-colour images per class, as ImageNet's val folders are laid out."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_classify_writes_its_tables_manifest_and_report_section(tmp_path, tiny_specs, capsys):
    images = class_tree(tmp_path / "val")
    (tmp_path / "templates.txt").write_text("a photo of something {c}.\n{c}\n")
    out = tmp_path / "run"
    specs = [tiny_specs["hf-clip"], tiny_specs["open_clip"]]
    assert main(["classify", "--images", str(images), "--templates", str(tmp_path / "templates.txt"),
                 *[arg for spec in specs for arg in ("--checkpoint", spec)], "--out", str(out), *CPU]) == 0
    printed = capsys.readouterr().out
    assert "9 images, 3 classes, 2 template(s)" in printed and "worst 3 classes (recall)" in printed
    run = RunLayout(out)
    metrics = pd.read_csv(run.zero_shot_metrics)
    assert sorted(set(metrics["checkpoint"])) == sorted(specs) and set(metrics["dataset"]) == {"val"}
    top1 = metrics[metrics["metric"] == "top1_accuracy"]
    assert top1["chance"].tolist() == pytest.approx([1 / 3] * 2) and (top1["n_images"] == 9).all()
    assert (metrics["ci_low"] <= metrics["estimate"]).all() and (metrics["estimate"] <= metrics["ci_high"]).all()
    assert metrics["published"].isna().all() and not metrics["deviates"].any()  # tiny random: none published
    predictions = pd.read_parquet(run.zero_shot_predictions)
    assert len(predictions) == 18 and predictions["status"].eq("ok").all()
    per_class = pd.read_csv(run.zero_shot_per_class)
    assert per_class.groupby("checkpoint")["n_images"].sum().tolist() == [9, 9]
    # the top-1 accuracy is the per-image predictions' mean, and the confusion cells count every image
    for spec in specs:
        mine = predictions[predictions["checkpoint"] == spec]
        assert top1.set_index("checkpoint").loc[spec, "estimate"] == pytest.approx(mine["correct_top1"].mean())
    assert pd.read_csv(run.zero_shot_confusion).groupby("checkpoint")["n_images"].sum().tolist() == [9, 9]
    step = json.loads(run.manifest.read_text())["steps"]["classify"]
    assert step["params"]["datasets"]["val"]["classes"] == 3 and len(step["checkpoints"]) == 2
    assert detect_kind(out).name == "zero-shot classification"
    assert main(["report", "--run-dir", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert ">Zero-shot classification</h2>" in page and "the 3 worst classes" in page


def test_classify_names_what_is_missing_in_one_line(tmp_path, tiny_specs, capsys):
    images = class_tree(tmp_path / "val")
    base = ["classify", "--checkpoint", tiny_specs["hf-clip"], "--out", str(tmp_path / "run"), *CPU]
    assert main([*base, "--images", str(images)]) == 2
    assert "give the prompt templates: --templates FILE" in capsys.readouterr().err
    assert main([*base, "--prompts", "cifar10"]) == 2
    assert "give one labelled image set" in capsys.readouterr().err
    assert main([*base, "--images", str(images), "--prompts", "cifar10"]) == 2  # 10 names for 3 folders
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(("estimate", "low", "high", "flagged"), [(0.10, 0.08, 0.12, True), (0.633, 0.62, 0.645, False),
                                                                  (0.60, 0.55, 0.65, False)])
def test_a_measurement_far_from_the_published_top1_is_flagged(estimate, low, high, flagged):
    spec = "hf:openai/clip-vit-base-patch32"  # open_clip's table gives its ImageNet-1k top-1: 63.32
    metrics = pd.DataFrame({"checkpoint": [spec, spec], "dataset": ["imagenet1k", "my-photos"],
                            "metric": ["top1_accuracy"] * 2, "estimate": [estimate] * 2, "ci_low": [low] * 2,
                            "ci_high": [high] * 2})
    merged = _with_published(metrics, [spec])
    assert merged["published"].iloc[0] == pytest.approx(63.32) and np.isnan(merged["published"].iloc[1])
    assert merged["deviates"].tolist() == [flagged, False]
    assert "openclip_results.csv" in merged["published_source"].iloc[0]


def sugarcrepe_files(root, images):
    """SugarCrepe's layout in small: two categories' JSON files naming images of a COCO-like folder."""
    data = root / "data"
    data.mkdir(parents=True)
    (data / "replace_att.json").write_text(json.dumps({
        "0": {"filename": "red.png", "caption": "a red thing", "negative_caption": "a blue thing"},
        "1": {"filename": "blue.png", "caption": "a blue thing", "negative_caption": "a red thing"}}))
    (data / "swap_obj.json").write_text(json.dumps({
        "0": {"filename": "green.png", "caption": "a green dog on a cat", "negative_caption": "a green cat on a dog"},
        "1": {"filename": "gone.png", "caption": "a missing photo", "negative_caption": "a photo missing"}}))
    for name, colour in COLOURS.items():
        Image.fromarray(np.full((24, 24, 3), colour, np.uint8)).save(images / f"{name}.png")
    return data


def test_hard_negatives_on_sugarcrepe_files_counts_each_category_and_the_missing_image(tmp_path, tiny_specs,
                                                                                      capsys):
    images = tmp_path / "val2017"
    images.mkdir()
    data = sugarcrepe_files(tmp_path, images)
    out = tmp_path / "run"
    spec = tiny_specs["hf-clip"]
    assert main(["hard-negatives", "--sugarcrepe", str(data), "--coco-images", str(images), "--checkpoint", spec,
                 "--out", str(out), "--category", "replace_att", "--category", "swap_obj", *CPU]) == 0
    assert "accuracy (chance 0.5)" in capsys.readouterr().out
    run = RunLayout(out)
    accuracy = pd.read_csv(run.hard_negative_accuracy).set_index("negative_kind")
    assert accuracy.loc["replace-attribute", "n"] == 2 and accuracy.loc["swap-object", "n"] == 1
    assert accuracy.loc["swap-object", "n_unscored"] == 1  # the missing image: counted apart, never dropped
    assert (accuracy["chance"] == 0.5).all() and set(accuracy["dataset"]) == {"sugarcrepe"}
    outcomes = pd.read_csv(run.hard_negative_outcomes)
    compared = outcomes[outcomes["outcome"] == "ok"]
    assert (compared["correct"] == (compared["true_score"] > compared["negative_score"])).all()
    assert accuracy.loc["all", "accuracy"] == pytest.approx(compared["correct"].mean())
    assert "hard_negatives" in json.loads(run.manifest.read_text())["steps"]
    assert detect_kind(out).name == "hard-negative accuracy"
    assert main(["report", "--run-dir", str(out)]) == 0
    assert ">Compositional hard negatives</h2>" in (out / "report" / "index.html").read_text()


def test_hard_negatives_needs_match_and_negative_kind(tmp_path, tiny_specs, challenge_csv, capsys):
    pairs = pd.read_csv(challenge_csv).drop(columns=["negative_kind"], errors="ignore")
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["hard-negatives", "--pairs", str(tmp_path / "pairs.csv"), "--checkpoint", tiny_specs["hf-clip"],
                 "--out", str(tmp_path / "run"), *CPU, "--image-root", str(challenge_csv.parent)]) == 2
    assert "no negative_kind column" in capsys.readouterr().err
