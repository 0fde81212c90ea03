"""The GPU box rehearsed here: the hub mirror's layout and coverage, and a reduced rehearsal of the paper profile.

The reduced rehearsal is ``make rehearse`` through the same mechanism (``params/rehearsal.yaml`` extended
again, ``run_notebooks`` on its ``hub_mirror``) on a mirror with a few repositories and small datasets:
one ``hf:`` CLIP and open_clip's SigLIP (its hub tokenizer) through every paper notebook, the three
benchmarks with the size check off, k = 1 only, where random weights are far from every published
number even on 12 images; notebook 12 classifies CIFAR-10's stand-in and compares the scenes' and
SugarCrepe's hard negatives (ImageNet-1k's 1,000 and CIFAR-100's 100 class prompts would keep SigLIP's
full-size text tower busy for minutes: their stand-ins are read as the paper profile reads them, without a
model); the pretrained baseline (torchvision's weight file) and the two labellers through the command line.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clipeval.data.benchmarks import BENCHMARKS, POKEMON_REPO
from clipeval.data.sugarcrepe import SUGARCREPE_CATEGORIES
from clipeval.data.zero_shot_prompts import packaged_prompts
from clipeval.labels.captioner import DEFAULT_MODEL as CAPTIONER
from clipeval.labels.classifier import DEFAULT_MODEL as CLASSIFIER
from clipeval.layout import RunLayout
from clipeval.models.baseline import resnet_weights_file
from clipeval.models.catalogue import CATALOGUE
from clipeval.models.hub_mirror import MIRROR_FILE, MIRROR_NOTE, mirror_env, spec_repos
from clipeval.paths import PARAMS_DIR, PROJECT_ROOT
from clipeval.profiles import load_profile
from clipeval.rehearsal.hub_cache import add_repo, etag, repo_folder
from clipeval.rehearsal.mirror import (
    CIFAR10_REPO,
    CIFAR100_REPO,
    COCO_WDS,
    IMAGENET_REPO,
    SUGARCREPE,
    build_mirror,
    mirror_contents,
)
from clipeval.rehearsal.model_repos import timm_repo
from clipeval.rehearsal.reduced import reduced_rehearsal
from clipeval.report.build import build_profile_report
from clipeval.runs.notebooks import run_notebooks

CHECKPOINTS = ["hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-16-SigLIP@webli"]
ROWS = 12  # images per mirrored dataset


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The reduced rehearsal (:func:`clipeval.rehearsal.reduced.reduced_rehearsal`), run once: its profile and run."""
    root = tmp_path_factory.mktemp("rehearsal")
    extra = (timm_repo(CLASSIFIER), CAPTIONER, *spec_repos("baseline:bert-resnet50"))
    profile = reduced_rehearsal(root, CHECKPOINTS, rows=ROWS, extra_repos=extra, zero_shot_sets={},
                                zero_shot_benchmarks={"imagenet1k": None, "cifar100": None})
    return profile, root / "run", run_notebooks(profile, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def mirror(rehearsal):
    return Path(rehearsal[0]).parent / "mirror"


def _snapshot(mirror: Path, repo: str, repo_type: str = "model") -> Path:
    folder = repo_folder(mirror / "hf" / "hub", repo, repo_type)
    return folder / "snapshots" / (folder / "refs" / "main").read_text()


def test_add_repo_writes_huggingface_hubs_layout(tmp_path):
    source = tmp_path / "saved"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.safetensors").write_bytes(b"\0" * 64)
    tags = {"config.json": etag(source / "config.json"), "sub/weights.safetensors": etag(source / "sub" /
                                                                                          "weights.safetensors")}
    assert tags["config.json"] == "9e26dfeeb6e641a33dae4961196235bdb965b21b"  # git hash-object of "{}"
    assert len(tags["sub/weights.safetensors"]) == 64  # an LFS file: its SHA-256
    snapshot = add_repo(tmp_path / "hub", "org/name", source, absent=("config.json", "tokenizer.json"))
    folder = tmp_path / "hub" / "models--org--name"
    assert snapshot.parent.parent == folder and (folder / "refs" / "main").read_text() == snapshot.name
    for name, tag in tags.items():
        link = snapshot / name
        assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
        assert link.resolve() == (folder / "blobs" / tag).resolve()
    assert (folder / ".no_exist" / snapshot.name / "tokenizer.json").is_file()  # asked for, absent
    assert not (folder / ".no_exist" / snapshot.name / "config.json").exists()  # present


def _names_a_hub_repository(spec: str) -> bool:
    """A spec written in the docs that downloads: not a local path, not the ``hf:owner/name`` placeholder."""
    target = spec.partition(":")[2]
    local = (target.startswith("/") or target.count("/") >= 2  # no hub name has two slashes: a local path
             or any(part in target for part in ("/path/", "tiny-random", "outputs/")))
    return not local and spec != "hf:owner/name" and (not spec.startswith("hf:") or "/" in target)


def test_the_mirror_holds_every_repository_the_paper_profile_catalogue_and_docs_name():
    held = set().union(*mirror_contents().values())
    paper = load_profile("paper")
    specs = set(paper["checkpoints"]) | set(CATALOGUE)
    specs |= {source["model"] for source in paper["label_sources"].values()}
    docs = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")), PARAMS_DIR / "paper.yaml"]
    specs |= {spec for path in docs for spec in re.findall(r"(?:hf|open_clip|baseline):[\w./@:-]*\w", path.read_text())
              if _names_a_hub_repository(spec)}
    needed = {repo for spec in specs for repo in spec_repos(spec)}
    needed |= {str(source["path"]).removeprefix("hf:") for source in paper["benchmarks"].values()
               if str(source["path"]).startswith("hf:")}
    needed |= {str(source.get("hf_dataset")).removeprefix("hf:") for source in paper["zero_shot_benchmarks"].values()
               if str(source.get("hf_dataset")).startswith("hf:")}
    needed |= {timm_repo(CLASSIFIER), CAPTIONER, SUGARCREPE}
    assert {"timm/ViT-B-16-SigLIP", "bert-base-uncased", resnet_weights_file(), POKEMON_REPO, IMAGENET_REPO,
            CIFAR10_REPO, CIFAR100_REPO} <= needed
    assert needed <= held, sorted(needed - held)


def test_the_mirror_has_the_files_real_downloads_have(mirror):
    clip = _snapshot(mirror, "openai/clip-vit-base-patch32")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
            "vocab.json", "merges.txt"} <= {path.name for path in clip.iterdir()}
    assert len(json.loads((clip / "vocab.json").read_text())) == 49408  # CLIP's real BPE
    assert json.loads((clip / "preprocessor_config.json").read_text())["crop_size"] == {"height": 224, "width": 224}
    siglip = _snapshot(mirror, "timm/ViT-B-16-SigLIP")
    assert {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "spiece.model"} <= {path.name for path in siglip.iterdir()}
    assert (siglip.parent.parent / ".no_exist" / siglip.name / "config.json").is_file()
    assert (mirror / "torch" / "hub" / "checkpoints" / resnet_weights_file()).stat().st_size > 90e6  # full size
    coco = _snapshot(mirror, COCO_WDS, "dataset")
    assert (coco / "dataset_type.txt").read_text().strip() == "retrieval"
    assert (coco / "test" / "nshards.txt").read_text().strip() == "1" and (coco / "test" / "0.tar").is_file()
    assert (_snapshot(mirror, POKEMON_REPO, "dataset") / "data" / "train-00000-of-00001.parquet").is_file()
    cifar100 = _snapshot(mirror, CIFAR100_REPO, "dataset")
    assert {path.relative_to(cifar100).as_posix() for path in cifar100.rglob("*.parquet")} == {
        "cifar100/train-00000-of-00001.parquet", "cifar100/test-00000-of-00001.parquet"}
    card = yaml.safe_load((cifar100 / "README.md").read_text().split("---")[1])
    assert [feature["name"] for feature in card["dataset_info"]["features"]] == ["img", "fine_label", "coarse_label"]
    assert len(card["dataset_info"]["features"][1]["dtype"]["class_label"]["names"]) == 100
    imagenet = _snapshot(mirror, IMAGENET_REPO, "dataset")
    assert {path.name for path in (imagenet / "data").iterdir()} == {
        f"{split}-00000-of-00001.parquet" for split in ("train", "validation", "test")}
    for stem in SUGARCREPE_CATEGORIES:
        items = json.loads((mirror / "sugarcrepe" / "data" / f"{stem}.json").read_text())
        assert items and all((mirror / "coco" / "val2017" / item["filename"]).is_file() for item in items.values())
    held = json.loads((mirror / "hf" / MIRROR_FILE).read_text())
    assert held["note"] == MIRROR_NOTE and resnet_weights_file() in held["torch_files"]


def test_open_clip_openai_tags_load_with_quick_gelu(tmp_path):
    """OpenAI's weights were trained with QuickGELU; open_clip 3 builds ``RN50`` with GELU unless told."""
    mirror = build_mirror(tmp_path / "mirror", only=[spec_repos("open_clip:RN50@openai")[0]], progress=False)
    script = ("import warnings; warnings.simplefilter('error')\n"
              "from clipeval.models.registry import load_encoder\n"
              "encoder = load_encoder('open_clip:RN50@openai', device='cpu', progress=False)\n"
              "print(sorted({type(m).__name__ for m in encoder.model.modules() if 'GELU' in type(m).__name__}))")
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, **mirror_env(mirror)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "['QuickGELU']"


def test_the_reduced_rehearsal_runs_every_paper_notebook(rehearsal):
    _, run_dir, executed = rehearsal
    assert [path.stem for path in executed] == load_profile("paper")["notebooks"]
    for path in executed:
        outputs = [output for cell in json.loads(path.read_text())["cells"] for output in cell.get("outputs", [])]
        assert not [output for output in outputs if output.get("output_type") == "error"], path.name
    scores = pd.read_csv(run_dir / "scores.csv")
    assert set(scores["checkpoint"]) == set(CHECKPOINTS) and (scores["status"] == "ok").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hub_mirror"]["note"] == MIRROR_NOTE
    assert all(entry["random_init"] for entry in manifest["steps"]["score"]["checkpoints"])


def test_every_published_number_deviates_and_the_report_says_rehearsal(rehearsal):
    profile, run_dir, _ = rehearsal
    metrics = pd.read_csv(run_dir / "benchmark_metrics.csv")
    assert set(metrics["dataset"]) == set(BENCHMARKS) and set(metrics["checkpoint"]) == set(CHECKPOINTS)
    comparison = pd.read_csv(run_dir / "published_comparison.csv")
    compared = comparison[comparison["published"].notna()]
    assert len(compared) == 2 * 2 * 2  # two published checkpoints x two benchmarks x two directions, k = 1
    assert compared["flagged"].all()  # random weights cannot reach a published number
    report = build_profile_report(profile)
    page = report.index.read_text()
    assert MIRROR_NOTE in page and f"{len(compared)} deviate" in page
    assert "hf:openai/clip-vit-base-patch32 (RANDOM INIT)" in page
    assert '<span class="badge">2 deviate</span> from the published number' in page  # zero-shot: CIFAR-10's two
    assert not report.failed_notebooks


def test_every_zero_shot_published_number_deviates_and_sugarcrepe_sits_beside_the_scenes(rehearsal):
    _, run_dir, executed = rehearsal
    run = RunLayout(run_dir)
    metrics = pd.read_csv(run.zero_shot_metrics)
    assert set(metrics["dataset"]) == {"cifar10"} and (metrics["n_images"] == ROWS).all()
    compared = metrics[metrics["published"].notna()]
    assert sorted(compared["checkpoint"]) == sorted(CHECKPOINTS) and (compared["metric"] == "top1_accuracy").all()
    assert compared["deviates"].all()  # random weights cannot reach a published number
    cells = json.loads(next(path for path in executed if path.stem == "12_benchmarks").read_text())["cells"]
    printed = "".join(text for cell in cells for output in cell.get("outputs", [])
                      for text in output.get("text", []))
    assert "2 of 2 published numbers deviate" in printed and printed.count("DEVIATES: ") == 2
    accuracy = pd.read_csv(run.hard_negative_accuracy, keep_default_na=False)
    assert set(accuracy["dataset"]) == {"pairs_test", "sugarcrepe"} and set(accuracy["checkpoint"]) == set(CHECKPOINTS)
    sugarcrepe = accuracy[accuracy["dataset"] == "sugarcrepe"]
    assert set(sugarcrepe["negative_kind"]) == {*SUGARCREPE_CATEGORIES.values(), "all", "mean"}
    assert (sugarcrepe["n_unscored"] == 0).all()  # every item's image is in the mirror's COCO folder


def test_the_paper_profile_reads_every_classification_stand_in(mirror):
    """What notebook 12 reads for each zero-shot benchmark, read here without a model: the rehearsal's specs (the
    paper profile's, capped) on the mirror, with the class names and templates the paper profile uses."""
    script = ("import json\n"
              "from clipeval.jobs.zero_shot import ClassificationSource, read_classification_source\n"
              "from clipeval.profiles import load_profile\n"
              "for name, spec in load_profile('rehearsal')['zero_shot_benchmarks'].items():\n"
              "    dataset, templates = read_classification_source(ClassificationSource(**spec, name=name))\n"
              "    first = read_classification_source(ClassificationSource(**{**spec, 'max_images': 5}))[0]\n"
              "    print(json.dumps({'name': name, 'classes': list(dataset.classnames), 'templates': templates,\n"
              "                      'labels': dataset.images['label'].tolist(), 'first': len(first.images),\n"
              "                      'columns': sorted(dataset.images.columns)}))\n")
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, **mirror_env(mirror)}, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    read = {entry["name"]: entry for entry in map(json.loads, run.stdout.splitlines())}
    assert set(read) == {"imagenet1k", "cifar10", "cifar100"}
    for name, entry in read.items():
        packaged = packaged_prompts(name)
        assert entry["classes"] == list(packaged.classnames) and entry["templates"] == list(packaged.templates[:1])
        assert entry["labels"] == [index % len(packaged.classnames) for index in range(ROWS)]  # the validation/test
        assert entry["first"] == 5  # max_images: the first 5 of the split
    assert read["cifar100"]["columns"] == ["coarse_label", "image", "label"]  # fine_label is the class


@pytest.mark.parametrize(("labeller", "model"), [("classifier", CLASSIFIER), ("captioner", CAPTIONER)])
def test_build_evalset_with_the_real_labellers_names(mirror, tmp_path, labeller, model):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.new("RGB", (120, 90), (40 * index, 90, 200 - 40 * index)).save(images / f"{index}.jpg")
    run = subprocess.run([sys.executable, "-m", "clipeval", "build-evalset", "--images", str(images), "--labeller",
                          labeller, "--threshold", "0", "--out", str(tmp_path / "set"), "--no-progress"],
                         env={**os.environ, **mirror_env(mirror)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    labels = pd.read_csv(tmp_path / "set" / "labels.csv")
    assert len(labels) >= 3 and set(labels["model"]) == {model}


def test_the_pretrained_baseline_loads_bert_and_torchvisions_weight_file(mirror, challenge_csv, tmp_path):
    run = subprocess.run([sys.executable, "-m", "clipeval", "score", "--pairs", str(challenge_csv), "--checkpoint",
                          "baseline:bert-resnet50", "--out", str(tmp_path / "run"), "--no-progress"],
                         env={**os.environ, **mirror_env(mirror)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "LOAD REPORT" not in run.stderr  # BERT's pre-training heads, left out on purpose, are not reported
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert (scores["status"] == "ok").all() and scores["cosine"].notna().all()


def test_siglip_tokenizes_and_reports_truncation_as_open_clip_does(mirror):
    """SigLIP's hub tokenizer: ``</s>`` (id 1) pads and ends every text at 64 tokens; truncation is reported."""
    script = ("from clipeval.models.registry import load_encoder\n"
              "from clipeval.models.catalogue import describe_checkpoint\n"
              "spec = 'open_clip:ViT-B-16-SigLIP@webli'\n"
              "encoder = load_encoder(spec, device='cpu', progress=False)\n"
              "ids = encoder.tokenizer(['a red circle'])[0].tolist()\n"
              "print(len(ids), ids[3:6], encoder.truncated(['word ' * 100, 'a red circle']),"
              " describe_checkpoint(spec).random_init)")
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, **mirror_env(mirror)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "64 [1, 1, 1] [True, False] True"


def _quick_start() -> list[str]:
    """The README's quick-start commands, as written."""
    section = (PROJECT_ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_quick_start_runs_as_written_from_another_folder(mirror, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    work = tmp_path / "my-project"
    (work / "photos").mkdir(parents=True)
    rows = []
    for index, thing in enumerate(("red bicycle", "black cat", "green apple", "wooden chair", "blue car", "old boat")):
        pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(work / "photos" / f"{index}.jpg")
        rows.append({"image": f"photos/{index}.jpg", "caption": f"a photo of a {thing} next to the window"})
    pd.DataFrame(rows).to_csv(work / "my_pairs.csv", index=False)
    commands = _quick_start()
    assert len(commands) == 5
    for line in commands:
        words = shlex.split(line)
        assert words[:3] == ["python", "-m", "clipeval"], line
        run = subprocess.run([sys.executable, *words[1:]], cwd=work, capture_output=True, text=True, timeout=600,
                             env={**os.environ, **mirror_env(mirror), "CLIPEVAL_ROOT": str(work)})
        assert run.returncode == 0, f"{line}\n{run.stderr[-2000:]}"
    _check_quick_start_outputs(work / "runs", pd.DataFrame(rows))


def _check_quick_start_outputs(runs: Path, pairs: pd.DataFrame) -> None:
    """What the README says the quick start writes, checked for its content: columns, rows and values that
    must agree across the files (the mirror's weights are random, so no value is pinned)."""
    from clipeval.layout import RESULT_COLUMNS, SCORE_COLUMNS

    primary = CHECKPOINTS[0]
    results = pd.read_csv(runs / "mine" / "results.csv")
    assert list(results.columns) == [*pairs.columns, *RESULT_COLUMNS]
    assert results[list(pairs.columns)].equals(pairs) and (results["status"] == "ok").all()
    assert results["similarity"].between(-1, 1).all()
    np.testing.assert_allclose(results["clip_score_100"], 100 * results["similarity"].clip(lower=0))
    scores = pd.read_csv(runs / "mine" / "scores.csv")
    assert list(scores.columns) == list(SCORE_COLUMNS) and scores["checkpoint"].tolist() == sorted(CHECKPOINTS * 6)
    np.testing.assert_array_equal(scores.loc[scores["checkpoint"] == primary, "cosine"], results["similarity"])
    summary = pd.read_csv(runs / "mine" / "score_summary.csv")
    assert summary["checkpoint"].tolist() == CHECKPOINTS and summary["n_ok"].tolist() == [6, 6]
    assert (runs / "mine" / "figures" / "score_spearman.png").is_file()

    kept = pd.read_csv(runs / "mine-curated" / "kept.csv")["row_id"]
    dropped = pd.read_csv(runs / "mine-curated" / "dropped.csv")
    assert sorted(kept) == sorted(results["similarity"].nlargest(2).index)  # basic keeps all 6; top 30% of 6: 2
    assert sorted([*kept, *dropped["row_id"]]) == list(range(6))
    assert (dropped["reason"] == f"top 30% by cosine[{primary}]").all()
    assert (dropped["score"] < dropped["cut"]).all() and (results.loc[kept, "similarity"] >= dropped["cut"][0]).all()

    metrics = pd.read_csv(runs / "mine-retrieval" / "metrics.csv")
    assert metrics[["checkpoint", "direction", "k"]].values.tolist() == [
        [spec, direction, k] for spec in CHECKPOINTS for direction in ("text_to_image", "image_to_text")
        for k in (1, 5, 10)]
    assert (metrics["n_queries"] == 6).all() and (metrics["hit_rate"] == 1.0)[metrics["k"] == 10].all()
    assert metrics["hit_rate"].between(metrics["hit_rate_ci_low"], metrics["hit_rate_ci_high"]).all()
    ranks = pd.read_csv(runs / "mine-retrieval" / "retrieval_ranks.csv")
    from_ranks = [(ranks.loc[(ranks["checkpoint"] == spec) & (ranks["direction"] == direction), "first_rank"] <= k
                   ).mean() for spec, direction, k in metrics[["checkpoint", "direction", "k"]].values]
    np.testing.assert_allclose(metrics["hit_rate"], from_ranks)  # the table agrees with the per-query ranks
    worst = pd.read_csv(runs / "mine-retrieval" / "retrieval_worst.csv")
    assert worst.groupby(["checkpoint", "direction"]).size().tolist() == [5, 5, 5, 5]  # --worst 5
    for run in ("mine", "mine-retrieval"):
        page = (runs / run / "report" / "index.html").read_text()
        assert all(spec in page for spec in CHECKPOINTS), run
