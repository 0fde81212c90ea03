"""Warnings about results that look fine but are not: one helper, each check above and below its threshold,
and the retrieval command's worst queries, hubs and per-query columns."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from clipeval.data.retrieval_sets import RetrievalSet, RetrievalSource, load_retrieval_set, read_retrieval_tables
from clipeval.data.sources import PairsTableError, SourceOptions
from clipeval.embed.options import EmbedOptions
from clipeval.eval.caveats import (
    HUBS_LISTED,
    circular_warnings,
    hub_warnings,
    same_checkpoint,
    truncation_warnings,
    unknown_vocabulary_warnings,
)
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.retrieval import evaluate_retrieval
from clipeval.jobs import steps
from clipeval.labels.zero_shot import ZeroShot
from clipeval.models.dual import DualEncoderConfig, build_dual_encoder, save_dual
from clipeval.models.encoder import _unknown
from clipeval.models.registry import load_encoder
from clipeval.runs.cli import main
from clipeval.warn import RunWarning, warn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = EmbedOptions(device="cpu", progress=False, embedding_cache=False)
SCENE_CAPTIONS = ["a red circle", "a blue square", "a green triangle above a red circle", "a small blue square"]


@pytest.fixture(scope="module")
def tiny_dual(tmp_path_factory) -> str:
    """A tiny random dual encoder whose word vocabulary is the scenes' words, with a 16-token context."""
    torch.manual_seed(0)
    config = DualEncoderConfig(embed_dim=16, image_size=32, text_dim=32, text_layers=2, text_heads=2,
                               text_hidden_dim=37, context_length=16, pool_heads=4)
    model, tokenizer = build_dual_encoder(config, SCENE_CAPTIONS * 3)
    return f"dual:{save_dual(model, tokenizer, tmp_path_factory.mktemp('dual') / 'dual')}"


@pytest.fixture
def photos(challenge_csv, tmp_path):
    """Four of the challenge set's images copied into ``tmp_path / "photos"``; their names."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(path.name for path in (challenge_csv.parent / "images").iterdir())[:4]
    for name in names:
        shutil.copy(challenge_csv.parent / "images" / name, folder / name)
    return names


def test_warn_prints_one_warning_line_each_on_stderr_and_returns_records(capsys):
    records = warn([RunWarning("hub", "one", "m"), RunWarning("trivial_metric", "two")])
    assert capsys.readouterr().err == "warning: one\nwarning: two\n"
    assert records == [{"kind": "hub", "message": "one", "checkpoint": "m"},
                       {"kind": "trivial_metric", "message": "two", "checkpoint": None}]
    assert RunWarning(**records[0]) == RunWarning("hub", "one", "m")


def test_truncation_warns_above_a_tenth_of_the_captions_and_not_at_it():
    (fired,) = truncation_warnings([("m", 11, 100, 32)])
    assert fired.kind == "truncation" and "m truncated 11 of 100 captions (11%" in fired.message
    assert "32-token context" in fired.message
    assert truncation_warnings([("m", 10, 100, 32), ("n", 0, 0, None)]) == []


def test_score_warns_when_a_checkpoint_truncates_most_captions(tiny_dual, challenge_csv, photos, tmp_path, capsys):
    long = "a red circle above a blue square beside a green triangle below a small red circle and a blue square"
    pairs = pd.DataFrame({"image": [f"photos/{name}" for name in photos], "caption": [long] * 3 + ["a red circle"]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    capsys.readouterr()
    steps.score(tmp_path / "run", str(tmp_path / "pairs.csv"), [tiny_dual], embed=CPU)
    err = capsys.readouterr().err
    assert f"warning: {tiny_dual} truncated 3 of 4 captions (75%, more than 10%) to its 16-token context" in err
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert [record["kind"] for record in stats["warnings"]] == ["truncation"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["steps"]["score"]["warnings"] == stats["warnings"]
    pairs.assign(caption="a red circle").to_csv(tmp_path / "short.csv", index=False)
    steps.score(tmp_path / "short", str(tmp_path / "short.csv"), [tiny_dual], embed=CPU)
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "short" / "stats.json").read_text())["warnings"] == []


def test_a_word_is_unknown_when_the_tokenizer_only_spells_it_or_maps_it_to_unk(tiny_dual, tiny_specs):
    assert _unknown("zebra", ["z", "##e", "##b", "##r", "##a"], "[UNK]")
    assert _unknown("bébé", ["b", "[UNK]"], "[UNK]")
    assert _unknown("qxjzv", ["q", "x", "j", "z", "v</w>"], None)
    assert not _unknown("playing", ["play", "##ing"], "[UNK]") and not _unknown("tv", ["t", "v"], None)
    dual = load_encoder(tiny_dual, device="cpu")  # a word vocabulary: a word that is not one token is not known
    assert dual.unknown_words(["red", "circle", "zebra", "photo"]) == [False, False, True, True]
    clip = load_encoder(tiny_specs["hf-clip"], device="cpu")  # CLIP's BPE knows real words
    assert clip.unknown_words(["zebra", "photo", "qxjzv"]) == [False, False, True]


def test_unknown_vocabulary_warns_above_a_tenth_of_the_entries():
    unknown = {"a zebra": ["zebra"]}
    (fired,) = unknown_vocabulary_warnings("m", ["a zebra"] + [f"class {i}" for i in range(8)], unknown)
    assert "does not know a word of 1 of its 9 vocabulary entries (11%" in fired.message
    assert "'a zebra' (zebra)" in fired.message
    assert unknown_vocabulary_warnings("m", ["a zebra"] + [f"class {i}" for i in range(9)], unknown) == []


def test_a_zero_shot_eval_set_outside_the_labellers_vocabulary_warns_and_so_does_evaluating_its_labeller(
        tiny_dual, tiny_specs, challenge_csv, photos, tmp_path, capsys):
    known = ZeroShot(tiny_dual, ["a red circle", "a blue square"], threshold=0.0, options=CPU).label(
        photos, tmp_path / "photos")
    assert known.stats["vocabulary_unknown"] == {} and known.stats["warnings"] == []
    (tmp_path / "vocabulary.txt").write_text("a zebra\na giraffe\na red circle\n")
    build = ["build-evalset", "--images", str(tmp_path / "photos"), "--labeller", "zero-shot", "--model", tiny_dual,
             "--vocabulary", str(tmp_path / "vocabulary.txt"), "--threshold", "0", "--out", str(tmp_path / "set"),
             "--device", "cpu", "--no-progress"]
    assert main(build) == 0
    err = capsys.readouterr().err
    assert "warning: the zero-shot labeller" in err and "2 of its 3 vocabulary entries (67%" in err
    stats = json.loads((tmp_path / "set" / "evalset.json").read_text())["stats"]
    assert stats["vocabulary_unknown"] == {"a zebra": ["zebra"], "a giraffe": ["giraffe"]}
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["steps"]["build-evalset"]["warnings"] == stats["warnings"]
    assert main(build) == 0 and "2 of its 3 vocabulary entries" in capsys.readouterr().err  # reused: said again
    tables = [f"--{name}={tmp_path / 'set' / name}.csv" for name in ("queries", "images", "relevance")]
    retrieve = ["retrieve", *tables, "--bootstrap", "10", "--device", "cpu", "--no-progress", "--no-embedding-cache",
                "--image-root", str(tmp_path / "photos")]  # the eval set names its images from outside its folder
    assert main([*retrieve, "--checkpoint", tiny_dual, "--out", str(tmp_path / "own")]) == 0
    assert f"warning: {tiny_dual} is evaluated on queries, whose labels it produced" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert "circular_evaluation" in [record["kind"] for record in manifest["steps"]["retrieve"]["warnings"]]
    assert main([*retrieve, "--checkpoint", tiny_specs["hf-clip"], "--out", str(tmp_path / "other")]) == 0
    assert "whose labels it produced" not in capsys.readouterr().err


def test_circular_evaluation_compares_checkpoints_not_spellings(tmp_path, monkeypatch):
    (tmp_path / "models" / "dual").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert same_checkpoint("dual:models/dual", f"dual:{tmp_path / 'models' / 'dual'}")
    assert same_checkpoint("dual:./models/dual/", "dual:models/dual")
    assert not same_checkpoint("dual:models/dual", "dual:models/other") and not same_checkpoint("hf:a/b", "hf:a/c")
    queries = pd.DataFrame({"caption": ["x"], "labeller": ["zero-shot"], "model": [f"dual:{tmp_path}/models/dual"]})
    (fired,) = circular_warnings(queries, ["hf:a/b", "dual:models/dual"], "set")
    assert fired.checkpoint == "dual:models/dual" and "(zero-shot labeller" in fired.message
    assert circular_warnings(queries.drop(columns="model"), ["dual:models/dual"], "set") == []


def test_metrics_whose_k_covers_every_candidate_are_marked_trivial(tiny_specs, challenge_csv, photos, tmp_path):
    images = [f"{tmp_path}/photos/{name}" for name in photos] * 2  # 8 images, 5 captions
    dataset = RetrievalSet("five", pd.DataFrame({"text": [f"caption {i}" for i in range(5)]}),
                           pd.DataFrame({"image": images}), np.array([[i, i] for i in range(5)]))
    report = evaluate_retrieval(dataset, [tiny_specs["hf-clip"]], RetrievalOptions(ks=(1, 5, 10), n_resamples=10),
                                CPU)
    trivial = report.metrics.set_index(["direction", "k"])["trivial"]
    assert trivial.to_dict() == {("text_to_image", 1): False, ("text_to_image", 5): False,
                                 ("text_to_image", 10): True, ("image_to_text", 1): False,
                                 ("image_to_text", 5): True, ("image_to_text", 10): True}
    assert (report.metrics.loc[report.metrics["trivial"], "hit_rate"] == 1.0).all()
    messages = [warning.message for warning in report.warnings if warning.kind == "trivial_metric"]
    assert messages == [
        "five text_to_image: HitRate@10 and Recall@10 rank all 8 candidates (k >= 8), so they are 1.0 by "
        "construction, whatever the model; marked trivial in metrics.csv",
        "five image_to_text: HitRate@5, @10 and Recall@5, @10 rank all 5 candidates (k >= 5), so they are 1.0 by "
        "construction, whatever the model; marked trivial in metrics.csv"]
    assert report.stats["warnings"] == [warning.record() for warning in report.warnings]


def test_hubs_are_named_with_their_count_and_share_up_to_a_few():
    hubs = pd.DataFrame({"checkpoint": "m", "direction": "text_to_image", "item": range(5),
                         "name": [f"{i}.jpg" for i in range(5)], "top1_queries": [221, 40, 30, 25, 20],
                         "top1_share": np.array([221, 40, 30, 25, 20]) / 395, "fair_share": 1 / 1000,
                         "relevant_share": 0.0})
    messages = [warning.message for warning in hub_warnings(hubs)]
    assert messages[0].startswith("m text_to_image: '0.jpg' (item 0) is the top-1 result of 221 of 395 queries "
                                  "(56%; a fair share is 0.1%)")
    assert len(messages) == HUBS_LISTED + 1 and messages[-1] == ("m text_to_image: and 2 more hub(s) "
                                                                 "(retrieval_stats.json, hubs)")
    assert hub_warnings(hubs.iloc[:0]) == []


def _coco(tmp_path, photos) -> str:
    captions = [(0, "a photo"), (1, "a scan"), (1, "a close-up"), (2, "a drawing"), (3, "a picture")]
    (tmp_path / "captions_val.json").write_text(json.dumps({
        "images": [{"id": 10 + i, "file_name": name} for i, name in enumerate(photos)],
        "annotations": [{"id": 500 + a, "image_id": 10 + i, "caption": text} for a, (i, text) in enumerate(captions)]}))
    return str(tmp_path / "captions_val.json")


def test_retrieve_prints_and_writes_the_worst_queries_and_ranks_carry_names_and_source_ids(
        tiny_specs, challenge_csv, photos, tmp_path, capsys):
    spec = tiny_specs["hf-clip"]
    command = ["retrieve", "--pairs", _coco(tmp_path, photos), "--images-dir", str(tmp_path / "photos"),
               "--checkpoint", spec, "--out", str(tmp_path / "out"), "--bootstrap", "10", "--device", "cpu",
               "--no-progress", "--no-embedding-cache", "--worst", "2"]
    assert main(command) == 0
    out = capsys.readouterr().out
    ranks = pd.read_csv(tmp_path / "out" / "retrieval_ranks.csv")
    text_to_image = ranks[ranks["direction"] == "text_to_image"]
    assert text_to_image["annotation_id"].tolist() == [500, 501, 502, 503, 504]
    assert text_to_image["image_id"].tolist() == [10, 11, 11, 12, 13]
    assert text_to_image["relevant_name"].tolist() == [photos[i] for i in (0, 1, 1, 2, 3)]
    image_to_text = ranks[ranks["direction"] == "image_to_text"]
    assert image_to_text["image_id"].tolist() == [10, 11, 12, 13] and image_to_text["annotation_id"].isna().all()
    for row in ranks.itertuples():  # the relevant item named is the one at first_rank
        names, scores = json.loads(row.top_names), json.loads(row.top_scores)
        assert names[int(row.first_rank) - 1] == row.relevant_name
        assert scores[int(row.first_rank) - 1] == pytest.approx(row.relevant_score, abs=1e-5)
    worst = pd.read_csv(tmp_path / "out" / "retrieval_worst.csv")
    for direction in ("text_to_image", "image_to_text"):
        rows = ranks[ranks["direction"] == direction].sort_values(["first_rank", "query"], ascending=[False, True])
        assert worst.loc[worst["direction"] == direction, "query"].tolist() == rows["query"].head(2).tolist()
    first = worst.iloc[0]
    assert f"worst 2 text_to_image queries of {spec}" in out
    assert (f"  rank {first.first_rank:.0f}/{first.n_items}  {first.query_name!r} -> relevant "
            f"{first.relevant_name!r}") in out
    assert "retrieval_worst.csv" in out


def test_three_retrieval_tables_are_read_with_the_delimiter_given(tmp_path):
    pd.DataFrame({"query_id": ["q1"], "caption": ["a cat"]}).to_csv(tmp_path / "q.csv", sep=";", index=False)
    pd.DataFrame({"image_id": ["i1"], "image": ["a.jpg"]}).to_csv(tmp_path / "i.csv", sep=";", index=False)
    pd.DataFrame({"query_id": ["q1"], "image_id": ["i1"]}).to_csv(tmp_path / "r.csv", sep=";", index=False)
    source = RetrievalSource("t", queries=str(tmp_path / "q.csv"), images=str(tmp_path / "i.csv"),
                             relevance=str(tmp_path / "r.csv"))
    with pytest.raises(PairsTableError):
        read_retrieval_tables(tmp_path / "q.csv", tmp_path / "i.csv", tmp_path / "r.csv")
    dataset = load_retrieval_set(source, SourceOptions(delimiter="semicolon", kind="table"))
    assert dataset.queries["text"].tolist() == ["a cat"] and dataset.relevant.tolist() == [[0, 0]]
