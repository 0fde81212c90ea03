import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clipeval.data.retrieval_sets import load_retrieval_set, read_retrieval_tables, retrieval_set_from_pairs
from clipeval.data.sources import PairsTableError, read_pairs
from clipeval.eval.metrics import summarize
from clipeval.eval.retrieval import compare_checkpoints, evaluate_retrieval, search


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
    dataset = load_retrieval_set("coco", coco)
    assert dataset.queries["text"].tolist() == ["A cat.", "A cat.", "A dog."]
    assert dataset.queries["row_id"].tolist() == [0, 1, 2]
    assert dataset.relevant.tolist() == [[0, 0], [1, 1], [2, 1]]  # each annotation: its own image only
    merged = load_retrieval_set("coco", coco, distinct_captions=True)
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
    report = evaluate_retrieval(dataset, [spec], ks=(1, 5), n_resamples=50, progress=False)
    assert set(report.metrics["direction"]) == {"text_to_image", "image_to_text"}
    row = report.metrics[(report.metrics["direction"] == "text_to_image") & (report.metrics["k"] == 5)].iloc[0]
    assert row["n_images_unreadable"] == 1 and row["n_queries_without_relevant"] == 1
    assert row["hit_rate_ci_low"] <= row["hit_rate"] <= row["hit_rate_ci_high"]
    # same numbers from a dense score matrix over the readable images
    from clipeval.eval.embed import embed_set
    from clipeval.models.registry import load_encoder
    embedded = embed_set(load_encoder(spec, device="cpu"), dataset, progress=False)
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


def test_search_returns_top_images_per_query(tiny_specs, challenge_csv):
    dataset = retrieval_set_from_pairs(read_pairs(challenge_csv), "challenge")
    results = search(dataset, [tiny_specs["hf-clip"]], ["a cat", "zzkq !!"], top=3, progress=False)
    assert len(results) == 2 and all(len(items) == 3 for items in results["top_items"])
    assert all(np.all(np.diff(scores) <= 0) for scores in results["top_scores"])


def test_cli_retrieve_writes_metrics(tiny_specs, challenge_csv, tmp_path):
    subprocess.run([sys.executable, "-m", "clipeval", "retrieve", "--pairs", str(challenge_csv), "--checkpoint",
                    tiny_specs["hf-clip"], "--out", str(tmp_path), "--bootstrap", "20", "--no-progress",
                    "--k", "1", "--k", "3"], check=True, capture_output=True, timeout=300)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 4 and set(metrics["k"]) == {1, 3}
    assert "retrieve" in json.loads((tmp_path / "manifest.json").read_text())["steps"]


def test_retrieval_notebooks_run_under_papermill(tiny_specs, challenge_csv, tmp_path):
    import yaml

    from clipeval.runs.notebooks import run_notebooks

    profile = tmp_path / "smoke.yaml"
    profile.write_text(yaml.safe_dump({
        "run_dir": "outputs/smoke", "retrieval_pairs_path": str(challenge_csv), "retrieval_dataset": "challenge",
        "search_pairs_path": str(challenge_csv), "search_dataset": "challenge", "n_resamples": 50,
        "checkpoints": [tiny_specs["hf-clip"], tiny_specs["open_clip"]], "device": "cpu",
        "notebooks": ["04_retrieval_eval", "05_retrieval_appendix"]}))
    run_notebooks(profile, cwd=tmp_path)
    figures = tmp_path / "outputs" / "smoke" / "figures"
    for name in ("04_retrieval_metrics.png", "04_hit_rate_curve.png", "04_best_queries_0.png",
                 "04_worst_queries_1.png", "05_search_0.png", "05_search_1.png"):
        assert (figures / name).stat().st_size > 10_000, name
    assert len(pd.read_csv(tmp_path / "outputs" / "smoke" / "metrics.csv")) == 2 * 2 * 3
