"""Pseudo-labelling: the classifier and zero-shot labellers, eval-set files and the labels' own quality."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.fetch import FetchOptions
from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.retrieval import evaluate_retrieval
from clipeval.labels.base import LabelRun, image_table, run_stats
from clipeval.labels.classifier import Classifier, labels_from_probabilities, readable_names
from clipeval.labels.evalset import complete, evalset_tables, write_evalset
from clipeval.labels.quality import judged_set, label_precision_recall, metric_bias, precision_recall_by_threshold
from clipeval.labels.zero_shot import ZeroShot
from clipeval.layout import EvalsetLayout
from clipeval.models.tiny import build_tiny_classifier

CPU = EmbedOptions(device="cpu", progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_confident_classes_are_kept_and_synonyms_merged():
    names = readable_names(["tabby, tabby cat", "crane", "crane", "sea_lion"])
    assert names == ["tabby", "crane", "crane", "sea lion"]
    probabilities = np.array([[0.90, 0.05, 0.03, 0.02],   # confident tabby
                              [0.10, 0.50, 0.39, 0.01],   # two "crane" classes: one query, the best probability
                              [0.30, 0.30, 0.20, 0.20]])  # nothing confident
    kept = labels_from_probabilities(["a", "b", "c"], probabilities, names, threshold=0.85)
    assert kept.values.tolist() == [["a", "tabby", 0.90]]
    top2 = labels_from_probabilities(["a", "b", "c"], probabilities, names, threshold=0.35, top_k=2)
    assert top2[["image", "text"]].values.tolist() == [["a", "tabby"], ["b", "crane"]]
    assert top2["confidence"].tolist() == pytest.approx([0.90, 0.50])
    multi = labels_from_probabilities(["c"], probabilities[2:], names, threshold=0.2, multi_label=True)
    assert set(multi["text"]) == {"tabby", "crane", "sea lion"} and len(multi) == 3


def _images(folder, n=6):
    rng = np.random.default_rng(0)
    refs = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        refs.append(f"img{i}.png")
    return refs


def test_the_classifier_labels_every_readable_image_and_accounts_for_the_rest(tmp_path):
    folder = build_tiny_classifier(tmp_path / "clf", ["a red circle", "a blue square", "a green cross"])
    refs = [*_images(tmp_path), "absent.png"]
    everything = Classifier(str(folder), threshold=0.0, device="cpu", batch_size=4, progress=False)
    run = everything.label(refs, tmp_path)
    assert run.labels["image"].tolist() == refs[:-1]  # top-1 of each readable image
    assert set(run.labels["text"]) <= {"a red circle", "a blue square", "a green cross"}
    assert run.images["status"].tolist() == ["ok"] * 6 + ["missing"]
    assert run.stats["images_labelled"] == 6 and run.labels["labeller"].eq("classifier").all()
    confident = Classifier(str(folder), threshold=1.0, device="cpu", progress=False).label(refs, tmp_path)
    assert confident.labels.empty and confident.images["status"].tolist() == ["no_label"] * 6 + ["missing"]
    with pytest.raises(ValueError, match="threshold"):
        Classifier(str(folder), threshold=1.5)


def test_the_zero_shot_labeller_picks_the_most_probable_text(tiny_specs, tmp_path):
    refs = _images(tmp_path, 3)
    vocabulary = ["a red circle", "a blue square"]
    run = ZeroShot(tiny_specs["open_clip"], vocabulary, threshold=0.0,
                   options=EmbedOptions(device="cpu", embedding_cache=False)).label(refs, tmp_path)
    assert len(run.labels) == 3 and set(run.labels["text"]) <= set(vocabulary)
    assert ((run.labels["confidence"] >= 0.5) & (run.labels["confidence"] <= 1.0)).all()  # top-1 of 2 classes


def _run(labels: list[tuple[str, str, float]], refs: list[str], labeller: str) -> LabelRun:
    table = pd.DataFrame(labels, columns=["image", "text", "confidence"]).assign(labeller=labeller, model="m",
                                                                                 threshold=0.5)
    images = image_table(refs, ["ok"] * len(refs), [""] * len(refs), table)
    return LabelRun(table, images, run_stats(table, images))


def test_class_labels_share_queries_and_captions_do_not():
    refs = ["x.png", "y.png", "z.png"]
    classes = _run([("x.png", "cat", 0.9), ("y.png", "cat", 0.7), ("y.png", "dog", 0.6)], refs, "classifier")
    queries, images, relevance = evalset_tables(classes)
    assert queries[["caption", "n_relevant"]].values.tolist() == [["cat", 2], ["dog", 1]]
    assert queries["confidence"].tolist() == pytest.approx([0.8, 0.6])
    assert images["status"].tolist() == ["ok", "ok", "no_label"] and len(relevance) == 3
    captions = _run([("x.png", "a cat", 0.9), ("y.png", "a cat", 0.8)], refs, "captioner")
    queries, _, relevance = evalset_tables(captions)
    assert len(queries) == 2 and relevance["image_id"].tolist() == ["i000000", "i000001"]


def test_an_eval_set_round_trips_into_the_retrieval_evaluation(tiny_specs, tmp_path):
    refs = _images(tmp_path, 4)
    run = _run([(refs[0], "red", 0.9), (refs[1], "red", 0.9), (refs[2], "blue", 0.8)], refs, "classifier")
    out = write_evalset(run, tmp_path / "evalset", base_dir=tmp_path)
    assert complete(out)
    EvalsetLayout(out).queries.unlink()
    assert not complete(out)
    write_evalset(run, out, base_dir=tmp_path)
    dataset = read_retrieval_tables(out / "queries.csv", out / "images.csv", out / "relevance.csv")
    assert dataset.relevant.tolist() == [[0, 0], [0, 1], [1, 2]] and len(dataset.images) == 4
    beside = FetchOptions(image_root=tmp_path)  # images.csv names the images from outside its folder
    report = evaluate_retrieval(dataset, [tiny_specs["hf-clip"]], RetrievalOptions(ks=(1,), n_resamples=10),
                                EmbedOptions(device="cpu", progress=False, fetch=beside))
    text_to_image = report.metrics[report.metrics["direction"] == "text_to_image"].iloc[0]
    assert text_to_image["n_queries"] == 2 and text_to_image["n_images_unreadable"] == 0


def test_label_precision_recall_and_metric_bias_on_a_hand_made_case():
    queries = pd.DataFrame({"text": ["cat", "dog"]})
    images = pd.DataFrame({"image": ["c1", "c2", "d1", "cd"]})
    pseudo = RetrievalSet("p", queries, images, np.array([[0, 0], [0, 2], [1, 2]]), None)  # c1, d1 as cat; d1 as dog
    truth = {("cat", "c1"), ("cat", "c2"), ("cat", "cd"), ("dog", "d1"), ("dog", "cd")}
    judge = lambda text, image: (text, image) in truth  # noqa: E731
    true_set = judged_set(pseudo, judge)
    assert true_set.relevant.tolist() == [[0, 0], [0, 1], [0, 3], [1, 2], [1, 3]]
    quality = label_precision_recall(pseudo, true_set)
    assert quality["precision"] == pytest.approx(2 / 3) and quality["recall"] == pytest.approx(2 / 5)
    assert quality["coverage"] == pytest.approx(2 / 4) and quality["correct_pairs"] == 2
    labels = pd.DataFrame({"image": ["c1", "d1", "d1", "cd"], "text": ["cat", "cat", "dog", "dog"],
                           "confidence": [0.9, 0.4, 0.8, 0.3]})
    sweep = precision_recall_by_threshold(labels, judge, ["c1", "c2", "d1", "cd"], [0.0, 0.5, 0.95])
    assert sweep["precision"].tolist()[:2] == pytest.approx([3 / 4, 1.0]) and np.isnan(sweep["precision"].iloc[2])
    assert sweep["recall"].tolist() == pytest.approx([3 / 5, 2 / 5, 0.0])
    assert sweep["coverage"].tolist() == pytest.approx([3 / 4, 2 / 4, 0.0])
    metrics = pd.DataFrame({"checkpoint": ["m"], "direction": ["text_to_image"], "k": [1], "hit_rate": [0.5],
                            "recall": [0.25], "mrr": [0.6]})
    bias = metric_bias(metrics, metrics.assign(hit_rate=0.75, recall=0.5, mrr=0.6))
    assert bias.set_index("metric")["bias"].to_dict() == pytest.approx({"hit_rate": -0.25, "recall": -0.25,
                                                                      "mrr": 0.0})


def test_a_scene_classifier_trains_saves_and_labels_scenes_judged_by_their_contents(tmp_path):
    from clipeval.data.scenes import SCENE_CLASSES, generate_scenes, scene_class_judge, scene_classes, scene_from_row
    from clipeval.train.options import ClassifierConfig
    from clipeval.train.scene_classifier import train_scene_classifier

    root = tmp_path / "scenes"
    generate_scenes(root, n_train=24, n_val=8, n_test=8, image_size=32)
    scenes = pd.read_csv(root / "scenes.csv", keep_default_na=False)
    judge = scene_class_judge(root)
    for row in scenes.to_dict("records"):
        present = scene_classes(scene_from_row(row))
        assert {text for text in SCENE_CLASSES if judge(text, str(root / row["image"]))} == present
    config = ClassifierConfig(architecture="test_efficientnet", image_size=32, epochs=1, batch_size=8, device="cpu")
    folder = train_scene_classifier(root, tmp_path / "clf", config, progress=False)
    assert (folder / "history.json").is_file() and not list(tmp_path.glob(".clf.*"))
    test = scenes[scenes["split"] == "test"]["image"].tolist()
    run = Classifier(str(folder), threshold=0.0, device="cpu", progress=False).label(test, root)
    assert run.stats["multi_label"] and set(run.labels["text"]) <= set(SCENE_CLASSES)
    assert run.labels.groupby("image").size().min() > 1  # independent classes: several labels per image at 0


def test_build_evalset_writes_a_set_the_retrieve_command_reads_and_reuses_it(tmp_path, capsys, tiny_specs):
    from clipeval.runs.cli import main

    (tmp_path / "photos" / "sub").mkdir(parents=True)
    _images(tmp_path / "photos", 3)
    _images(tmp_path / "photos" / "sub", 2)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    folder = build_tiny_classifier(tmp_path / "clf", ["a cat", "a dog"])
    command = ["build-evalset", "--images", str(tmp_path / "photos"), "--labeller", "classifier", "--model",
               str(folder), "--threshold", "0", "--out", str(tmp_path / "set"), "--device", "cpu", "--no-progress"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"built {tmp_path / 'set'}: ")
    evaluate = printed.split("evaluate it: python -m clipeval ")[1].split()  # the command it prints, as written
    evaluate = [tiny_specs["hf-clip"] if word == "SPEC" else str(tmp_path / "eval") if word == "DIR" else word
                for word in evaluate]
    assert main([*evaluate, "--device", "cpu", "--no-progress", "--bootstrap", "20"]) == 0
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert (metrics["n_images"] == 5).all() and set(metrics["direction"]) == {"text_to_image", "image_to_text"}
    capsys.readouterr()
    images = pd.read_csv(tmp_path / "set" / "images.csv")
    assert sorted(images["image"]) == ["../photos/img0.png", "../photos/img1.png", "../photos/img2.png",
                                       "../photos/sub/img0.png", "../photos/sub/img1.png"]
    queries = pd.read_csv(tmp_path / "set" / "queries.csv")
    assert {"labeller", "model", "threshold", "confidence", "n_relevant"} <= set(queries.columns)
    assert main(command) == 0 and capsys.readouterr().out.startswith("reused")
    assert main([*command, "--rebuild"]) == 0 and capsys.readouterr().out.startswith("built")
    assert main(["build-evalset", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no image folder" in capsys.readouterr().err


def test_the_label_study_writes_its_tables_and_judges_every_miss(tiny_specs, tmp_path):
    from clipeval.data.scenes import SCENE_CLASSES, generate_scenes
    from clipeval.studies.labels import compute_label_study

    root = generate_scenes(tmp_path / "scenes", n_train=4, n_val=4, n_test=12, image_size=32)
    classifier = build_tiny_classifier(tmp_path / "clf", list(SCENE_CLASSES), multi_label=True)
    sources = {"zero-shot": {"kind": "zero-shot", "model": tiny_specs["open_clip"], "threshold": 0.0},
               "classifier": {"kind": "classifier", "model": str(classifier), "threshold": 0.5}}
    studies = compute_label_study(tmp_path / "run", root, sources, [tiny_specs["hf-clip"]], "test",
                          RetrievalOptions(ks=(1, 5), n_resamples=10), CPU, thresholds=(0.0, 0.5, 0.9))
    assert [study.name for study in studies] == ["zero-shot", "classifier"]
    for study in studies:
        assert len(study.run.images) == 12 and len(study.truth.queries) == len(study.pseudo.queries)
        assert set(study.metrics["set"]) == {"pseudo", "true"} and study.sweep["threshold"].tolist() == [0, 0.5, 0.9]
        assert set(study.per_query["judgement"]) <= {"hit", "model error", "label error (missed)",
                                                      "label error (wrong)"}
        assert (study.per_query["judgement"] == "hit").tolist() == (study.per_query["first_rank"] == 1).tolist()
    assert len(studies[0].run.labels) == 12  # zero-shot at threshold 0: the top class of every scene
    quality = pd.read_csv(tmp_path / "run" / "label_quality.csv")
    assert quality["source"].tolist() == ["zero-shot", "classifier"]
    assert quality["precision"].between(0, 1).all() and (tmp_path / "run" / "evalsets" / "classifier").is_dir()
    for name in ("label_threshold_sweep.csv", "label_metric_bias.csv"):
        assert (tmp_path / "run" / name).is_file()


def test_a_source_with_no_label_at_its_threshold_is_reported_not_evaluated(tiny_specs, tmp_path):
    from clipeval.data.scenes import generate_scenes
    from clipeval.studies.labels import compute_label_study

    root = generate_scenes(tmp_path / "scenes", n_train=0, n_val=0, n_test=6, image_size=32)
    sources = {"never sure": {"kind": "zero-shot", "model": tiny_specs["open_clip"], "threshold": 1.0}}
    [study] = compute_label_study(tmp_path / "run", root, sources, [tiny_specs["hf-clip"]], "test",
                          RetrievalOptions(ks=(1,), n_resamples=10), CPU, thresholds=(0.0, 1.0))
    assert len(study.run.labels) == 6 and len(study.pseudo.queries) == 0 and len(study.pseudo.images) == 6
    assert study.metrics.empty and study.bias.empty and study.per_query.empty
    assert study.quality["coverage"] == 0 and study.quality["pseudo_pairs"] == 0
    assert study.unlabelled.startswith("never sure: no label reached its threshold 1 (its most confident label: ")
    quality = pd.read_csv(tmp_path / "run" / "label_quality.csv")
    assert quality["coverage"].tolist() == [0.0]
    assert list(pd.read_csv(tmp_path / "run" / "label_metric_bias.csv").columns)[:3] == ["checkpoint", "direction", "k"]


def test_build_evalset_with_no_label_at_the_threshold_says_so(tmp_path, capsys):
    from clipeval.runs.cli import main

    (tmp_path / "photos").mkdir()
    _images(tmp_path / "photos", 2)
    folder = build_tiny_classifier(tmp_path / "clf", ["a cat", "a dog"])
    command = ["build-evalset", "--images", str(tmp_path / "photos"), "--labeller", "classifier", "--model",
               str(folder), "--threshold", "1", "--out", str(tmp_path / "set"), "--device", "cpu", "--no-progress"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "no image of" in error and "got a label at threshold 1.0" in error and "lower --threshold" in error
    assert (tmp_path / "set" / "images.csv").is_file()  # written, for a look at what was labelled
