import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from clipeval.data.fetch import FetchOptions
from clipeval.data.sources import read_pairs
from clipeval.layout import RESULT_COLUMNS, SCORE_COLUMNS
from clipeval.models.registry import load_encoder

QUIET = {"batch_size": 4, "chunk_size": 10}


@pytest.fixture
def pairs_with_problems(challenge_csv, tmp_path):
    """The challenge set plus a broken image, a missing file and an empty caption, in the middle."""
    pairs = pd.read_csv(challenge_csv)
    pairs["image"] = [str(challenge_csv.parent / ref) for ref in pairs["image"]]  # the table is written elsewhere
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    extra = pd.DataFrame({"image": [str(tmp_path / "broken.jpg"), str(tmp_path / "absent.png"),
                                    str(challenge_csv.parent / "images" / "coffee.png")],
                          "caption": ["a broken file", "a missing file", ""],
                          "match": [True, True, True], "image_name": "x", "caption_source": "x"})
    table = pd.concat([pairs.iloc[:5], extra, pairs.iloc[5:]], ignore_index=True)
    path = tmp_path / "pairs.csv"
    table.to_csv(path, index=False)
    return path


def test_scores_equal_a_hand_computation(tiny_specs, challenge_csv, score_table):
    pairs = read_pairs(challenge_csv)
    run = score_table(pairs.iloc[:6], [tiny_specs["hf-clip"]], **QUIET)
    encoder = load_encoder(tiny_specs["hf-clip"], device="cpu")
    model = encoder.model
    from clipeval.data.images import read_image
    expected = []
    with torch.no_grad():
        for _, row in pairs.iloc[:6].iterrows():
            pixels = encoder.preprocess(read_image(row["image"], challenge_csv.parent).image)[None]
            image = model.get_image_features(pixel_values=pixels).pooler_output[0]
            tokens = encoder.tokenizer([row["caption"]], padding=True, return_tensors="pt")
            text = model.get_text_features(**tokens).pooler_output[0]
            expected.append(float(image @ text / (image.norm() * text.norm())))
    np.testing.assert_allclose(run.results["similarity"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.results["clip_score_100"], 100 * np.maximum(expected, 0), rtol=1e-5, atol=1e-4)


def test_rows_keep_order_columns_and_failures(tiny_specs, pairs_with_problems, score_table):
    pairs = read_pairs(pairs_with_problems)
    outside = FetchOptions(allow_any_path=True)  # the table names images outside its folder, by absolute path
    run = score_table(pairs, [tiny_specs["open_clip"]], fetch=outside, **QUIET)
    assert list(run.results.columns) == list(pairs.columns) + list(RESULT_COLUMNS)
    pd.testing.assert_frame_equal(run.results[pairs.columns], pairs)
    assert run.results.loc[5:7, "status"].tolist() == ["decode_error", "missing", "empty_caption"]
    assert run.results.loc[5:7, "similarity"].isna().all()
    assert all(run.results.loc[5:7, "error"].str.len() > 0)
    assert (run.results.drop(index=[5, 6, 7])["status"] == "ok").all()
    assert run.results.drop(index=[5, 6, 7])["similarity"].notna().all()
    assert list(run.scores.columns) == list(SCORE_COLUMNS)


def test_many_checkpoints_equal_each_alone(tiny_specs, challenge_csv, score_table):
    pairs = read_pairs(challenge_csv).iloc[:12]
    specs = [tiny_specs["hf-clip"], tiny_specs["open_clip"]]
    uncached = {**QUIET, "embedding_cache": False}  # each run encodes: none reads the vectors of another
    together = score_table(pairs, specs, **uncached)
    assert together.scores["checkpoint"].unique().tolist() == specs
    assert len(together.scores) == 2 * len(pairs)
    for spec in specs:
        alone = score_table(pairs, [spec], **uncached).scores
        mine = together.scores[together.scores["checkpoint"] == spec].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
    assert together.stats["shared"]["stages"]["image_read"]["items"] == len(pairs)  # read once
    assert [entry["cache"] for entry in together.stats["checkpoints"].values()] == [None, None]


def test_stats_have_every_stage_and_field(tiny_specs, challenge_csv, tmp_path, score_table):
    # a cold embedding cache: every stage runs
    run = score_table(read_pairs(challenge_csv), [tiny_specs["hf-clip"]], **QUIET, run_dir=tmp_path,
                      embedding_cache_dir=tmp_path / "cache")
    assert {"pairs", "device", "batch_size", "versions", "shared", "checkpoints", "status_counts"} <= set(run.stats)
    entry = run.stats["checkpoints"][tiny_specs["hf-clip"]]
    assert set(entry["stages"]) == {"model_load", "cache", "image_decode", "image_encode", "text_encode", "score"}
    for stage in entry["stages"].values():
        assert {"wall_s", "cpu_s", "items", "items_per_s", "peak_rss_mib", "peak_gpu_mib"} <= set(stage)
        assert stage["peak_rss_mib"] > 0 and stage["peak_gpu_mib"] is None  # CPU run
    assert entry["pairs_scored"] == 48 and entry["pairs_per_s"] > 0
    assert entry["precision"] == "fp32"
    for name in ("results.csv", "scores.csv", "stats.json", "stats.log", "shards/pairs.parquet",
                 "shards/pairs.done.json", "shards.csv", "run.json"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "shards" / "pairs.parts").exists()
    log = (tmp_path / "stats.log").read_text()
    assert "image_encode" in log and "model_loaded         True" in log and "image_misses 16" in log


def _score_command(pairs, spec, out):
    # no embedding cache: a run warmed by the first one would finish before it can be killed mid-way
    return [sys.executable, "-m", "clipeval", "score", "--pairs", str(pairs), "--checkpoint", spec,
            "--out", str(out), "--chunk-size", "4", "--batch-size", "2", "--device", "cpu", "--no-progress",
            "--no-embedding-cache"]


def test_interrupted_run_resumes_to_identical_results(tiny_specs, pairs_with_problems, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    subprocess.run(_score_command(pairs_with_problems, tiny_specs["hf-clip"], clean), check=True, env=env,
                   capture_output=True, timeout=300)
    process = subprocess.Popen(_score_command(pairs_with_problems, tiny_specs["hf-clip"], resumed), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    parts = resumed / "shards" / "pairs.parts"
    while len(list(parts.glob("chunk-*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(parts.glob("chunk-*.parquet")))
    assert 3 <= done < 13, "the run should have been killed mid-way"
    assert not (resumed / "results.csv").exists()
    subprocess.run(_score_command(pairs_with_problems, tiny_specs["hf-clip"], resumed), check=True, env=env,
                   capture_output=True, timeout=300)
    assert (resumed / "results.csv").read_bytes() == (clean / "results.csv").read_bytes()
    assert (resumed / "scores.csv").read_bytes() == (clean / "scores.csv").read_bytes()
    assert json.loads((resumed / "stats.json").read_text())["chunks_resumed"] == done
    assert len(pd.read_csv(resumed / "results.csv")) == len(pd.read_csv(pairs_with_problems))


def test_each_row_records_caption_truncation_and_the_image_header_size(tiny_specs, challenge_csv, tmp_path,
                                                                       score_table):
    """The tiny CLIP reads 77 tokens with its start and end tokens: 75 words fit, 76 are truncated."""
    from clipeval.models.registry import load_encoder

    encoder = load_encoder(tiny_specs["hf-clip"], device="cpu")
    fits, over = " ".join(["cat"] * 75), " ".join(["cat"] * 76)
    assert [len(ids) for ids in encoder.tokenizer([fits, over])["input_ids"]] == [77, 78]
    pairs = read_pairs(challenge_csv).iloc[:3].copy()
    pairs["caption"] = [fits, over, "a cat"]
    pairs.loc[2, "image"] = "images/absent.png"
    run = score_table(pairs, [tiny_specs["hf-clip"]], **QUIET, run_dir=tmp_path)
    assert run.results["caption_truncated"].tolist()[:2] == [False, True]
    assert run.results["caption_truncated"].isna().tolist() == [False, False, True]  # not scored: unknown
    assert run.stats["checkpoints"][tiny_specs["hf-clip"]]["captions_truncated"] == 1
    from pathlib import Path

    from PIL import Image
    with Image.open(Path(pairs.attrs["base_dir"]) / pairs["image"].iloc[0]) as image:
        assert (run.results["image_width"].iloc[0], run.results["image_height"].iloc[0]) == image.size
    assert run.results["image_width"].isna().tolist() == [False, False, True]
    written = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False, na_values=[""])
    assert written["caption_truncated"].tolist()[:2] == [False, True]
