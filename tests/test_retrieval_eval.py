import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.options import PairsTableError
from clipeval.data.retrieval_sets import (
    RetrievalSet,
    RetrievalSource,
    load_retrieval_set,
    read_retrieval_tables,
    retrieval_set_from_pairs,
)
from clipeval.data.sources import read_pairs
from clipeval.embed.engine import LazyEncoder, embed_set
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.retrieval import compare_checkpoints, evaluate_retrieval, hub_items
from clipeval.metrics.retrieval import summarize
from clipeval.runs.cli import main


def test_set_from_pairs_uses_matched_rows_only(challenge_csv):
    dataset = retrieval_set_from_pairs(read_pairs(challenge_csv), "challenge")
    assert len(dataset.queries) == 16 and len(dataset.images) == 16
    assert len(dataset.relevant) == 16  # one matched caption per image; mismatched rows add no relevance


def write_coco(path, captions):
    """A COCO captions file: ``captions`` is a list of (image file name, caption) annotations."""
    files = list(dict.fromkeys(name for name, _ in captions))
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": name} for i, name in enumerate(files)],
        "annotations": [{"id": 100 + a, "image_id": files.index(name), "caption": caption}
                        for a, (name, caption) in enumerate(captions)]}))
    return path


def test_every_coco_caption_row_is_a_query(tmp_path):
    coco = write_coco(tmp_path / "captions_val.json", [("a.jpg", "A cat."), ("b.jpg", "A cat."), ("b.jpg", "A dog.")])
    dataset = load_retrieval_set(RetrievalSource("coco", pairs=str(coco)))
    assert dataset.queries["text"].tolist() == ["A cat.", "A cat.", "A dog."]
    assert dataset.queries["row_id"].tolist() == [0, 1, 2]
    assert dataset.relevant.tolist() == [[0, 0], [1, 1], [2, 1]]  # each annotation: its own image only
    merged = load_retrieval_set(RetrievalSource("coco", pairs=str(coco), distinct_captions=True))
    assert merged.queries["text"].tolist() == ["A cat.", "A dog."]
    assert merged.relevant.tolist() == [[0, 0], [0, 1], [1, 1]]


def test_mismatched_captions_are_distractors_not_queries_with_relevance():
    pairs = pd.DataFrame({"image": ["a", "a", "b", "b", "c"], "caption": ["x", "y", "y", "x", "z"],
                          "match": [True, False, True, False, False]})
    dataset = retrieval_set_from_pairs(pairs, "t")
    assert dataset.queries["text"].tolist() == ["x", "y", "z"] and dataset.queries["row_id"].tolist() == [0, 2, 4]
    assert dataset.images["image"].tolist() == ["a", "b", "c"]
    assert dataset.relevant.tolist() == [[0, 0], [1, 1]]  # "z" is a query with no relevant image


def test_tables_with_multi_relevant_queries(tmp_path, challenge_csv):
    images = pd.DataFrame({"image_id": ["a", "b", "c"],
                           "image": [str(challenge_csv.parent / "images" / n) for n in
                                     ("chelsea.png", "coffee.png", "rocket.jpg")]})
    queries = pd.DataFrame({"query_id": ["q1", "q2", "q3"], "caption": ["a cat", "a drink or a cat", "no match"]})
    relevance = pd.DataFrame({"query_id": ["q1", "q2", "q2"], "image_id": ["a", "a", "b"]})
    for name, table in (("images", images), ("queries", queries), ("relevance", relevance)):
        table.to_csv(tmp_path / f"{name}.csv", index=False)
    dataset = read_retrieval_tables(tmp_path / "queries.csv", tmp_path / "images.csv", tmp_path / "relevance.csv")
    assert dataset.relevant.tolist() == [[0, 0], [1, 0], [1, 1]]
    relevance.loc[0, "image_id"] = "zzz"
    relevance.to_csv(tmp_path / "relevance.csv", index=False)
    with pytest.raises(PairsTableError, match="not in the queries"):
        read_retrieval_tables(tmp_path / "queries.csv", tmp_path / "images.csv", tmp_path / "relevance.csv")


def test_evaluation_matches_dense_metrics_and_reports_unreadable_images(tiny_specs, challenge_csv, tmp_path):
    pairs = read_pairs(challenge_csv)
    broken = pd.DataFrame({"image": [str(tmp_path / "missing.png")], "caption": ["a lost picture"], "match": [True]})
    table = pd.concat([pairs, broken], ignore_index=True)
    table.attrs = pairs.attrs
    dataset = retrieval_set_from_pairs(table, "challenge")
    spec = tiny_specs["open_clip"]
    cold = EmbedOptions(embedding_cache_dir=tmp_path / "cache", progress=False)  # a cold cache: every stage runs
    report = evaluate_retrieval(dataset, [spec], RetrievalOptions(ks=(1, 5), n_resamples=50), cold)
    assert set(report.metrics["direction"]) == {"text_to_image", "image_to_text"}
    row = report.metrics[(report.metrics["direction"] == "text_to_image") & (report.metrics["k"] == 5)].iloc[0]
    assert row["n_images_unreadable"] == 1 and row["n_queries_without_relevant"] == 1
    assert row["hit_rate_ci_low"] <= row["hit_rate"] <= row["hit_rate_ci_high"]
    # same numbers from a dense score matrix over the readable images
    from clipeval.models.registry import load_encoder
    embedded = embed_set(load_encoder(spec, device="cpu"), dataset, EmbedOptions(progress=False))
    scores = (embedded.texts @ embedded.images.T).numpy()
    relevance = np.zeros(scores.shape, bool)
    position = {p: i for i, p in enumerate(embedded.image_positions)}
    for q, image in dataset.relevant:
        if image in position:
            relevance[q, position[image]] = True
    dense = summarize(scores, relevance, ks=(1, 5))
    assert row["hit_rate"] == pytest.approx(dense["hit_rate@5"])
    assert row["mrr"] == pytest.approx(dense["mrr"])
    same = compare_checkpoints(report.per_query.assign(checkpoint="x"), "x", "x", n_resamples=20)
    assert same.difference == 0
    # every row names its query and its top items, not only their positions
    texts, refs = dataset.queries["text"], dataset.images["image"]
    for line in report.per_query.itertuples():
        query_names, item_names = (texts, refs) if line.direction == "text_to_image" else (refs, texts)
        assert line.query_name == query_names.iloc[line.query]
        assert line.top_names == item_names.iloc[line.top_items].tolist()
    assert str(tmp_path / "missing.png") not in set(report.per_query["query_name"])  # unreadable: not a query
    assert row["hit_rate_chance"] == pytest.approx(1 - 11 / 16)  # 1 relevant of 16 readable images, top 5
    assert row["recall_chance"] == pytest.approx(5 / 16)
    assert row["mrr_chance"] == pytest.approx(np.mean(1 / np.arange(1, 17)))
    stats = report.stats["checkpoints"][spec]
    assert set(stats["stages"]) == {"model_load", "image_read", "cache", "image_decode", "image_encode", "text_encode",
                                    "rank", "metrics"}
    assert stats["stages"]["image_read"]["items"] == 17 and stats["images_unreadable"] == 1


def test_notebook_05_searches_with_the_finder_one_image_each_as_brute_force_ranks_them(tiny_specs, challenge_csv,
                                                                                        tmp_path):
    from clipeval.jobs import steps

    spec, texts = tiny_specs["hf-clip"], ["a cat", "zzkq !!"]
    embed = EmbedOptions(device="cpu", progress=False, embedding_cache=False)
    found = steps.search(tmp_path, str(challenge_csv), texts, [spec], "challenge", top=3, embed=embed)
    assert len(found.results) == 2 and all(len(set(items)) == 3 for items in found.results["top_items"])
    assert found.index.items["image"].is_unique  # one result per image, never once per caption
    assert "search" in json.loads((tmp_path / "manifest.json").read_text())["steps"]
    # the reference: every image and query through the embedding path, ranked by cosine in float32
    dataset = retrieval_set_from_pairs(read_pairs(challenge_csv), "challenge")
    reference = embed_set(LazyEncoder(spec, embed), RetrievalSet("q", pd.DataFrame({"text": texts}), dataset.images,
                                                                  np.empty((0, 2), np.int64), dataset.base_dir), embed)
    scores = np.asarray(reference.texts @ reference.images.T, dtype=np.float32)
    names = dataset.images["image"].to_numpy()[reference.image_positions]
    for row in found.results.itertuples():
        best = np.argsort(-scores[row.query], kind="stable")[:3]
        assert found.index.items["image"].iloc[row.top_items].tolist() == names[best].tolist()
        np.testing.assert_allclose(row.top_scores, scores[row.query][best], atol=2e-3)  # float16 vectors
        assert all(np.diff(row.top_scores) <= 0)


def test_cli_retrieve_writes_metrics(tiny_specs, challenge_csv, tmp_path):
    spec = tiny_specs["hf-clip"]
    command = [sys.executable, "-m", "clipeval", "retrieve", "--pairs", str(challenge_csv), "--checkpoint", spec,
               "--out", str(tmp_path), "--bootstrap", "20", "--no-progress", "--workers", "2", "--fetch-timeout", "5",
               "--k", "1", "--k", "3"]
    env = {**os.environ, "CLIPEVAL_EMBEDDING_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, env=env)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 4 and set(metrics["k"]) == {1, 3}
    assert {"hit_rate_chance", "recall_chance", "mrr_chance", "median_rank_chance"} <= set(metrics.columns)
    manifest = json.loads((tmp_path / "manifest.json").read_text())["steps"]["retrieve"]
    fetch = manifest["params"]["embed"]["fetch"]
    assert fetch["read_threads"] == 2 and fetch["timeout"] == 5 and manifest["params"]["options"]["ks"] == [1, 3]
    assert "--workers is deprecated and will be removed in the next release; use --read-threads" in done.stderr
    stats = json.loads((tmp_path / "retrieval_stats.json").read_text())
    assert stats["queries"] == 16 and stats["read_threads"] == 2
    assert "text_encode" in stats["checkpoints"][spec]["stages"]
    assert "image_encode" in (tmp_path / "retrieval_stats.log").read_text()
    assert done.stdout.count(spec) == 1  # the checkpoint once, not on every row of the table
    assert "Loading weights" not in done.stderr
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, env=env)  # warm: from the cache
    warm = json.loads((tmp_path / "retrieval_stats.json").read_text())["checkpoints"][spec]
    assert not warm["model_loaded"] and warm["cache"] == {"image_hits": 16, "image_misses": 0,
                                                           "text_hits": 16, "text_misses": 0}
    assert pd.read_csv(tmp_path / "metrics.csv").equals(metrics)


def test_no_progress_hides_the_model_libraries_bars(tiny_specs, challenge_csv, tmp_path, capfd):
    base = ["retrieve", "--pairs", str(challenge_csv), "--checkpoint", tiny_specs["hf-clip"], "--bootstrap", "10",
            "--no-embedding-cache"]  # so that both runs load the model
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "Loading weights" in capfd.readouterr().err  # the bar this test is about does show by default
    assert main([*base, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    # no bar, no library log: only the run's own warnings (this random model has hubs)
    assert all(line.startswith("warning: ") for line in capfd.readouterr().err.splitlines())
    from transformers.utils import logging
    assert logging.is_progress_bar_enabled()  # quiet was scoped to the run


def test_no_model_is_loaded_when_the_images_are_not_found(tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("clipeval.embed.engine.load_encoder", no_loading)
    (tmp_path / "val").mkdir()
    coco = write_coco(tmp_path / "captions_val.json", [("a.jpg", "A cat."), ("b.jpg", "A dog."), ("c.jpg", "A cow.")])
    base = ["retrieve", "--pairs", str(coco), "--checkpoint", "hf:x", "--out", str(tmp_path / "out")]
    assert main([*base, "--images-dir", str(tmp_path / "val")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "found 0 of 3 images" in error
    assert f"looked in {tmp_path / 'val'} " in error and str(tmp_path / "val" / "a.jpg") in error
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "b.jpg")  # 1 of 3 found: too few, unless asked to go on
    assert main([*base, "--images-dir", str(tmp_path / "val")]) == 2
    assert "found 1 of 3 images" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="a model was loaded"):
        main([*base, "--images-dir", str(tmp_path / "val"), "--allow-missing-images"])
    assert not (tmp_path / "out").exists()


def test_hub_items_flags_an_item_first_for_many_queries():
    # image->text: 40 images ranking 200 captions; caption 7 comes first for 30 of them
    tops = [7] * 30 + list(range(100, 110))
    image_to_text = pd.DataFrame({"direction": "image_to_text", "query": range(40), "n_items": 200, "n_relevant": 1,
                                  "top_items": [[t, 0] for t in tops], "top_names": [[f"caption {t}"] for t in tops]})
    # text->image: 25 captions ranking the 40 images, each a different first image (4% each: no hub)
    text_to_image = pd.DataFrame({"direction": "text_to_image", "query": range(25), "n_items": 40,
                                  "n_relevant": [4 if q == 7 else 1 for q in range(25)],
                                  "top_items": [[q] for q in range(25)],
                                  "top_names": [[f"{q}.jpg"] for q in range(25)]})
    hubs = hub_items(pd.concat([image_to_text, text_to_image], ignore_index=True).assign(checkpoint="m"))
    assert hubs[["direction", "item", "name", "top1_queries"]].values.tolist() == [
        ["image_to_text", 7, "caption 7", 30]]
    assert hubs["top1_share"].iloc[0] == 0.75 and hubs["fair_share"].iloc[0] == 1 / 200
    assert hubs["relevant_share"].iloc[0] == 0.1  # caption 7 truly describes 4 of the 40 images


def test_hit_counts_are_hits_in_the_top_k_beside_chance():
    from clipeval.eval.retrieval import hit_counts

    metrics = pd.DataFrame({"checkpoint": ["a", "a", "a"], "dataset": ["pokemon-blip"] * 3,
                            "direction": ["text_to_image", "text_to_image", "image_to_text"], "k": [5, 1, 5],
                            "n_queries": [833, 833, 833], "n_queries_without_relevant": [0, 0, 0],
                            "hit_rate": [6 / 833, 0.001, 0.5], "hit_rate_chance": [5 / 833, 1 / 833, 0.1]})
    counts = hit_counts(metrics, "text_to_image", k=5)
    assert counts.to_dict("records") == [{"checkpoint": "a", "dataset": "pokemon-blip", "queries": 833, "hits": 6,
                                          "hits_chance": 5.0, "hit_rate": pytest.approx(100 * 6 / 833)}]
