"""Notebooks: committed stripped with a tagged parameters cell; they run under papermill."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clipeval.layout import CurationLayout, RunLayout
from clipeval.paths import NOTEBOOKS_DIR
from clipeval.profiles import RUN_KEYS, load_profile
from clipeval.runs.notebooks import notebook_parameters, run_notebooks

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    assert {"01_explore_data", "02_score_pairs"} <= {path.stem for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped_and_parameterised(path):
    cells = json.loads(path.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])


PROFILES = ["offline", "paper", "rehearsal"]


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_name_existing_notebooks(profile):
    params = load_profile(profile)
    for name in params["notebooks"]:
        assert (NOTEBOOKS_DIR / f"{name}.ipynb").is_file()
    assert params["checkpoints"]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_value_reaches_a_notebook(profile):
    params = load_profile(profile)
    declared = set().union(*(notebook_parameters(NOTEBOOKS_DIR / f"{name}.ipynb", params)
                             for name in params["notebooks"]))
    assert set(params) - declared <= set(RUN_KEYS)  # a misspelt key would be silently ignored


def test_checkpoints_override_and_parameter_filtering():
    params = load_profile("offline", checkpoints=["hf:a", "open_clip:b@c"])
    assert params["checkpoints"] == ["hf:a", "open_clip:b@c"]
    injected = notebook_parameters(NOTEBOOKS_DIR / "01_explore_data.ipynb", params)
    assert "checkpoints" not in injected and injected["pairs_path"] == params["pairs_path"]


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match=r"available: .*offline"):
        load_profile("no-such-profile")


def test_score_notebooks_run_under_papermill(tiny_specs, challenge_csv, tmp_path, capfd):
    profile = tmp_path / "smoke.yaml"
    profile.write_text(yaml.safe_dump({
        "run_dir": "outputs/smoke", "pairs_path": str(challenge_csv), "image_column": "image",
        "caption_column": "caption", "checkpoints": [tiny_specs["hf-clip"], tiny_specs["open_clip"]],
        "batch_size": 8, "device": "cpu", "precision": "auto",
        "notebooks": ["01_explore_data", "02_score_pairs"]}))
    executed = run_notebooks(profile, cwd=tmp_path)
    run_dir = tmp_path / "outputs" / "smoke"
    assert [path.name for path in executed] == ["01_explore_data.ipynb", "02_score_pairs.ipynb"]
    for name in ("results.csv", "scores.csv", "stats.json", "stats.log", "manifest.json"):
        assert (run_dir / name).is_file(), name
    for figure in ("01_sample_grid.png", "01_image_sizes.png", "01_caption_lengths.png",
                   "02_matched_vs_mismatched.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 10_000, figure
    assert len(pd.read_csv(run_dir / "results.csv")) == 48
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["score"]["checkpoints"][0]["weights_sha256"]
    executed_cells = json.loads(Path(executed[1]).read_text())["cells"]
    assert any(cell.get("outputs") for cell in executed_cells if cell["cell_type"] == "code")
    for path in executed:  # executed notebooks read clean: no library warning (tqdm's "IProgress not found"...)
        noise = [output["text"] for cell in json.loads(Path(path).read_text())["cells"]
                 for output in cell.get("outputs", []) if output.get("name") == "stderr"]
        assert not noise, f"{Path(path).name}: {noise}"
    # the kernel talks over socket files: no "Kernel is running over TCP without encryption" in the run's log
    assert "without encryption" not in capfd.readouterr().err


def test_hub_checkpoint_offline_stops_the_notebook_with_one_line(challenge_csv, tmp_path):
    from clipeval.runs.notebooks import NotebookFailed

    profile = tmp_path / "offline-hub.yaml"
    profile.write_text(yaml.safe_dump({"run_dir": "outputs/hub", "pairs_path": str(challenge_csv),
                                       "checkpoints": ["hf:openai/clip-vit-base-patch32"],
                                       "notebooks": ["02_score_pairs"]}))
    with pytest.raises(NotebookFailed, match="cannot load hf:openai/clip-vit-base-patch32: no model hub"):
        run_notebooks(profile, cwd=tmp_path)
    cells = json.loads((tmp_path / "outputs" / "hub" / "notebooks" / "02_score_pairs.ipynb").read_text())["cells"]
    errors = [out for cell in cells if cell["cell_type"] == "code" for out in cell["outputs"]
              if out["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "SystemExit"
    assert not any("File " in line for line in errors[0]["traceback"])  # no stack trace dump


@pytest.mark.parametrize("with_benchmark", [False, True], ids=["no-benchmarks", "tiny-benchmark"])
def test_retrieval_notebook_compares_with_published_numbers_or_says_why_not(tiny_specs, challenge_csv, tmp_path,
                                                                             with_benchmark):
    from test_benchmarks import _wds

    params = {"run_dir": "outputs/nb04", "retrieval_pairs_path": str(challenge_csv), "retrieval_dataset": "challenge",
              "checkpoints": [tiny_specs["hf-clip"]], "n_resamples": 20, "batch_size": 16, "device": "cpu",
              "notebooks": ["04_retrieval_eval"]}
    if with_benchmark:  # a tiny set in CLIP_benchmark's webdataset format (not the benchmark's size: unchecked)
        root = _wds(tmp_path / "wds_flickr30k", n_images=4)
        params["benchmarks"] = {"flickr30k-1k": {"kind": "wds", "path": str(root), "check_size": False}}
    profile = tmp_path / "nb04.yaml"
    profile.write_text(yaml.safe_dump(params))
    executed = run_notebooks(profile, cwd=tmp_path)
    cells = json.loads(Path(executed[0]).read_text())["cells"]
    text = "".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
                   for cell in cells if cell["cell_type"] == "code" for out in cell["outputs"])
    run_dir = tmp_path / "outputs" / "nb04"
    if with_benchmark:  # a tiny random checkpoint has no published numbers: measured, nothing to compare
        assert "Nothing to compare: no checkpoint of this run" in text
        assert (run_dir / "benchmarks" / "flickr30k-1k" / "metrics.csv").is_file()
        assert set(pd.read_csv(run_dir / "published_comparison.csv")["status"]) == {"no published number"}
    else:
        assert "Nothing to compare: this profile names no standard benchmark" in text
        assert not (run_dir / "published_comparison.csv").exists()
    assert (run_dir / "metrics.csv").is_file()


def test_retrieval_appendix_notebook_searches_with_the_finder(tiny_specs, challenge_csv, tmp_path):
    profile = tmp_path / "nb05.yaml"
    profile.write_text(yaml.safe_dump({
        "run_dir": "outputs/nb05", "search_pairs_path": str(challenge_csv), "search_dataset": "challenge",
        "search_queries": ["a cat", "qwzx flurb"], "checkpoints": [tiny_specs["hf-clip"], tiny_specs["open_clip"]],
        "top": 3, "batch_size": 16, "device": "cpu", "notebooks": ["05_retrieval_appendix"]}))
    run_notebooks(profile, cwd=tmp_path)
    run_dir = tmp_path / "outputs" / "nb05"
    assert sorted(path.name for path in (run_dir / "figures").iterdir()) == ["05_search_0.png", "05_search_1.png"]
    index = json.loads((run_dir / "finder" / "challenge" / "manifest.json").read_text())
    assert index["images"] == pd.read_csv(challenge_csv)["image"].nunique()  # one item per image
    assert list(index["checkpoints"]) == [tiny_specs["hf-clip"], tiny_specs["open_clip"]]
    assert "search" in json.loads((run_dir / "manifest.json").read_text())["steps"]


def test_a_profile_extends_another_with_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"a": 1, "m": {"x": {"k": 1, "j": 2}, "y": 3}, "l": [1, 2]}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "a": 2, "m": {"x": {"k": 5}},
                                                         "l": [3]}))
    assert load_profile(tmp_path / "child.yaml") == {"a": 2, "m": {"x": {"k": 5, "j": 2}, "y": 3}, "l": [3]}


def test_profiles_extending_each_other_in_a_loop_are_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="extend each other in a loop"):
        load_profile(tmp_path / "a.yaml")


def test_the_rehearsal_is_the_paper_profile_on_the_mirror_with_fewer_images_and_no_label_threshold():
    paper, rehearsal = load_profile("paper"), load_profile("rehearsal")
    assert {key for key in rehearsal if rehearsal[key] != paper.get(key)} == {
        "run_dir", "hub_mirror", "benchmarks", "label_sources", "zero_shot_benchmarks", "sugarcrepe"}
    assert rehearsal["run_dir"] == "outputs/rehearsal"
    for name, source in paper["benchmarks"].items():
        assert rehearsal["benchmarks"][name] == {**source, "max_images": 100}
    for name, source in paper["label_sources"].items():
        assert rehearsal["label_sources"][name] == {**source, "threshold": 0.0}
    for name, spec in paper["zero_shot_benchmarks"].items():  # the same sets, fewer images and one template
        assert rehearsal["zero_shot_benchmarks"][name] == {**spec, "max_images": 100, "max_templates": 1}
    assert set(rehearsal["sugarcrepe"]) == set(paper["sugarcrepe"])  # the mirror's folders, in the same keys


def test_a_profile_on_a_mirror_that_is_not_built_says_how_to_build_it(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"extends": "rehearsal", "run_dir": str(tmp_path / "run"),
                                       "hub_mirror": str(tmp_path / "no-mirror")}))
    with pytest.raises(FileNotFoundError, match=r"no rehearsal hub mirror .* make rehearsal-hub"):
        run_notebooks(profile, cwd=tmp_path)


def test_the_image_finder_notebook_indexes_searches_and_photographs_the_page(tiny_specs, challenge_csv, tmp_path):
    profile = tmp_path / "finder.yaml"
    first_image = str(Path(challenge_csv).parent / pd.read_csv(challenge_csv)["image"].iloc[0])
    profile.write_text(yaml.safe_dump({
        "run_dir": "outputs/finder", "checkpoints": [tiny_specs["hf-clip"]], "finder_source": str(challenge_csv),
        "finder_id_column": "", "finder_text_queries": ["a cat", "a red circle left of a blue square"],
        "finder_image_queries": [first_image], "finder_compare_queries_path": str(challenge_csv),
        "finder_compare_queries": 20, "finder_screenshot_query": "a cat", "top": 3, "batch_size": 8,
        "device": "cpu", "precision": "auto", "notebooks": ["10_image_finder"]}))
    run_notebooks(profile, cwd=tmp_path)
    run_dir = tmp_path / "outputs" / "finder"
    assert (run_dir / "finder" / Path(challenge_csv).stem / "manifest.json").is_file()
    for figure in ("10_text_queries.png", "10_image_queries.png", "10_finder_page.png"):  # Chromium is required
        assert (run_dir / "figures" / figure).stat().st_size > 10_000, figure
    cells = json.loads((run_dir / "notebooks" / "10_image_finder.ipynb").read_text())["cells"]
    table = next(output["data"]["text/plain"] for cell in cells for output in cell.get("outputs", [])
                 if "recall@10 against exact" in "".join(output.get("data", {}).get("text/plain", "")))
    assert "approximate" in "".join(table)


TINY_DUAL = {"embed_dim": 16, "image_size": 32, "text_dim": 32, "text_layers": 2, "text_heads": 2,
             "text_hidden_dim": 37, "pool_heads": 4}


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> Path:
    """Captioned scenes at a notebook-test size (the offline profile's are 5000/400/600 at 64 px)."""
    from clipeval.data.scenes import generate_scenes

    return generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=24, n_val=8, n_test=12, image_size=32, seed=1)


@pytest.fixture(scope="module")
def tiny_dual(tiny_scenes, tmp_path_factory) -> Path:
    """A tiny dual encoder trained one epoch on the scenes (a history for notebook 06, a checkpoint for the rest)."""
    from clipeval.models.dual import DualEncoderConfig
    from clipeval.train.dual import train_dual
    from clipeval.train.options import TrainConfig

    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, device="cpu", progress=False,
                         model=DualEncoderConfig(**TINY_DUAL))
    return Path(train_dual(tiny_scenes, tmp_path_factory.mktemp("dual") / "dual", config))


def _run_profile(tmp_path: Path, name: str, params: dict) -> Path:
    """Run one notebook through ``run_notebooks`` with ``params`` as its profile; returns the run folder."""
    profile = tmp_path / f"{name}.yaml"
    profile.write_text(yaml.safe_dump({"run_dir": f"outputs/{name}", "device": "cpu", "notebooks": [name], **params}))
    run_notebooks(profile, cwd=tmp_path)
    return tmp_path / "outputs" / name


def _assert_finite(table: pd.DataFrame, columns) -> None:
    values = table[list(columns)].to_numpy(float)
    assert np.isfinite(values).all(), table[list(columns)]


def test_fine_tune_notebook_writes_its_tables_per_mode(tiny_scenes, tiny_dual, tmp_path):
    modes = {"full": 1e-3, "lit": 1e-3, "lora": 1e-2}
    run_dir = _run_profile(tmp_path, "11_fine_tune", {
        "model_dir": str(tiny_dual), "scenes_dir": str(tiny_scenes), "n_resamples": 20, "finetune_steps": 2,
        "finetune_batch_size": 8, "finetune_lrs": modes})
    layout = RunLayout(run_dir)
    hard, retrieval = pd.read_csv(layout.finetune_hard_negatives), pd.read_csv(layout.finetune_retrieval)
    history, costs = pd.read_csv(layout.finetune_history), pd.read_csv(layout.finetune_costs)
    for table in (hard, retrieval, history, costs):
        assert list(table["mode"].unique()) == list(modes)
    difference = ["before", "after", "difference", "ci_low", "ci_high"]
    assert list(hard.columns) == ["mode", "negative_kind", "n", *difference]
    per_mode = hard.groupby("mode")["negative_kind"]
    assert all(sorted(kinds) == ["all", "colour", "count", "relation"] for _, kinds in per_mode)
    _assert_finite(hard, difference)
    np.testing.assert_allclose(hard["difference"], hard["after"] - hard["before"], atol=1e-12)
    kinds = hard[hard["negative_kind"] != "all"].groupby("mode")["n"].sum()
    assert (hard[hard["negative_kind"] == "all"].set_index("mode")["n"] == kinds).all()
    assert {"mode", "queries", "direction", "metric", *difference, "n_queries"} <= set(retrieval.columns)
    assert set(retrieval["queries"]) == {"all", "relation", "no relation"}
    assert set(retrieval["direction"]) == {"text_to_image", "image_to_text"}
    assert retrieval.groupby("mode").size().nunique() == 1
    _assert_finite(retrieval, difference)
    assert (retrieval["ci_low"] <= retrieval["ci_high"]).all()
    assert {"epoch", "train_loss", "val_mrr"} <= set(history.columns)
    _assert_finite(history, ["train_loss", "val_mrr"])
    assert costs.set_index("mode")["lr"].to_dict() == modes
    assert (costs["total_steps"] == 2).all() and (costs["n_train_hard_negatives"] > 0).all()
    assert (costs["trainable_parameters"] <= costs["total_parameters"]).all()
    lit = costs.set_index("mode").loc[["lit", "lora"]]
    assert (lit["trainable_parameters"] < lit["total_parameters"]).all()
    for mode in modes:
        assert (run_dir / "models" / "finetune" / mode / "checkpoint").is_dir(), mode
    manifest = json.loads(layout.manifest.read_text())["steps"]["finetune_study"]
    assert manifest["params"]["modes"] == modes
    assert [entry["spec"] for entry in manifest["checkpoints"]] == [f"dual:{tiny_dual}"]
    for figure in ("11_finetune_history.png", "11_finetune_differences.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 10_000, figure


def test_curation_notebook_writes_rule_quality_and_curates_the_challenge_set(tiny_scenes, tiny_dual, tiny_specs,
                                                                             challenge_csv, score_table, tmp_path):
    from clipeval.data.sources import read_pairs

    specs = [f"dual:{tiny_dual}", tiny_specs["hf-clip"]]
    pairs_path = tiny_scenes / "pairs_test.csv"
    run_dir = tmp_path / "outputs" / "08_curation"  # notebook 02's run: the scenes' pairs, whose match is known
    score_table(read_pairs(pairs_path), specs, run_dir=run_dir)
    _run_profile(tmp_path, "08_curation", {"pairs_path": str(pairs_path), "curation_challenge_path": str(challenge_csv),
                                           "checkpoints": specs, "curation_fraction": 0.3, "batch_size": 16})
    layout = RunLayout(run_dir)
    rules = pd.read_csv(layout.curation_rules)
    assert list(rules.columns) == ["checkpoint", "rule", "fraction", "kept", "kept_fraction", "precision", "recall"]
    assert list(rules["checkpoint"].unique()) == specs
    per_checkpoint = rules.groupby("checkpoint")["rule"]
    assert all(list(names) == ["laion400m", "laion2b", "datacomp-l14-30pct"] for _, names in per_checkpoint)
    n_pairs = len(pd.read_csv(pairs_path))
    np.testing.assert_allclose(rules["kept_fraction"], rules["kept"] / n_pairs)
    assert ((rules["kept_fraction"] - rules["fraction"]).abs() <= 1 / n_pairs + 1e-9).all()
    _assert_finite(rules, ["precision", "recall"])
    assert rules[["precision", "recall"]].stack().between(0, 1).all()
    pr = pd.read_csv(layout.curation_precision_recall)
    assert list(pr["checkpoint"].unique()) == specs and (pr.groupby("checkpoint").size() == 20).all()
    assert (pr.groupby("checkpoint")["recall"].apply(lambda recall: recall.is_monotonic_increasing)).all()
    summary = pd.read_csv(CurationLayout(layout.challenge_run.root / "curated").summary)
    assert summary["rows_in"].iloc[0] == len(pd.read_csv(challenge_csv))
    assert (summary["rows_in"] == summary["kept"] + summary["dropped"]).all()
    assert (summary["rows_in"].iloc[1:].to_numpy() == summary["kept"].iloc[:-1].to_numpy()).all()
    manifest = json.loads(layout.manifest.read_text())["steps"]["curation_study"]
    assert [entry["spec"] for entry in manifest["checkpoints"]] == specs
    for figure in ("08_kept_fraction.png", "08_examples_around_cut.png", "08_precision_recall.png",
                   "08_kept_overlap.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 10_000, figure



@pytest.mark.parametrize("executors", [["local"], pytest.param(["local", "ray"], marks=pytest.mark.slow)],
                         ids=["local", "local-and-ray"])  # Ray's cluster and actors start in about a minute here
def test_sharded_runs_notebook_scores_every_row_as_the_whole_table_does(tiny_scenes, tiny_dual, score_table,
                                                                         tmp_path, executors):
    from clipeval.data.sources import read_pairs

    pairs_path, spec, n_shards = tiny_scenes / "pairs_test.csv", f"dual:{tiny_dual}", 4
    run_dir = _run_profile(tmp_path, "09_sharded_runs", {
        "pairs_path": str(pairs_path), "checkpoints": [spec], "sharded_shards": n_shards,
        "sharded_executors": executors, "sharded_ray_actors": 2, "sharded_rule": "top:0.3[{spec}]",
        "batch_size": 16})
    layout = RunLayout(run_dir)
    summary = pd.read_csv(layout.sharded_executors)
    assert list(summary.columns) == ["executor", "shards", "rows_this_run", "wall_s", "rows_per_s", "processes",
                                     "max_cosine_difference", "curation_same_as_one_table"]
    assert summary["executor"].tolist() == executors
    pairs = read_pairs(pairs_path)
    assert (summary["shards"] == n_shards).all() and (summary["rows_this_run"] == len(pairs)).all()
    assert (summary["max_cosine_difference"] <= 1e-6).all()  # each executor encoded for itself: no cache
    assert summary["curation_same_as_one_table"].all()
    column = f"cosine[{spec}]"
    whole = np.sort(score_table(pairs, [spec]).results["similarity"].to_numpy())
    for executor in executors:  # the same scores as the table scored whole, by any executor
        scored = pd.concat(map(pd.read_parquet, RunLayout(layout.sharded_study / executor).scored_shards()))
        assert scored["uid"].is_unique
        np.testing.assert_allclose(np.sort(scored[column].to_numpy()), whole, atol=1e-6, rtol=0)
    resumed = pd.read_csv(RunLayout(layout.sharded_study / "local").shard_table)
    assert len(resumed) == n_shards and resumed["this_run"].sum() == 2  # the two "interrupted" shards only
    manifest = json.loads(layout.manifest.read_text())["steps"]["sharded_study"]
    assert manifest["params"]["executors"] == executors
    assert (run_dir / "figures" / "09_shard_throughput.png").stat().st_size > 10_000


def test_dual_encoder_notebook_benchmarks_the_trained_model(tiny_scenes, tiny_dual, tmp_path):
    run_dir = _run_profile(tmp_path, "06_train_dual_encoder", {
        "model_dir": str(tiny_dual), "scenes_dir": str(tiny_scenes), "batch_size": 64, "n_samples": 6})
    result = json.loads(RunLayout(run_dir).dual_encoder_eval.read_text())
    assert result["checkpoint"] == f"dual:{tiny_dual}" and result["split"] == "test"
    retrieval = pd.DataFrame(result["retrieval"]).T
    assert list(retrieval.index) == ["all", "seen", "unseen"]
    n_captions = (pd.read_csv(tiny_scenes / "pairs_test.csv")["match"]).sum()
    assert retrieval.loc["all", "n_queries"] == n_captions == retrieval.loc[["seen", "unseen"], "n_queries"].sum()
    hit_rates = retrieval[["hit_rate@1", "hit_rate@5", "hit_rate@10"]].to_numpy()
    assert ((hit_rates >= 0) & (hit_rates <= 1)).all() and (np.diff(hit_rates, axis=1) >= 0).all()
    assert retrieval["mrr"].between(0, 1).all()
    match = result["match_scores"]
    assert match["gap"] == pytest.approx(match["matched_mean"] - match["mismatched_mean"])
    assert 0 <= match["auc"] <= 1
    hard = pd.DataFrame(result["hard_negatives"]).set_index(["negative_kind", "subset"])
    assert set(hard.index) == {(kind, subset) for kind in ("all", "colour", "count", "relation")
                               for subset in ("all", "seen", "unseen")}
    for kind in ("all", "colour", "count", "relation"):
        assert hard.loc[(kind, "all"), "n"] == hard.loc[(kind, "seen"), "n"] + hard.loc[(kind, "unseen"), "n"]
    assert hard["accuracy"].between(0, 1).all()
    figures = {path.name: path.stat().st_size for path in (run_dir / "figures").glob("*.png")}
    assert set(figures) == {"06_scene_samples.png", "06_training_curves.png", "06_similarity_heatmap.png",
                            "06_retrieval_seen_unseen.png", "06_match_histogram.png", "06_hard_negatives.png"}
    assert min(figures.values()) > 10_000, figures


def test_benchmarks_notebook_classifies_the_scenes_and_compares_their_hard_negatives(tiny_scenes, tiny_dual,
                                                                                      tiny_specs, tmp_path):
    specs = [f"dual:{tiny_dual}", tiny_specs["open_clip"]]
    run_dir = _run_profile(tmp_path, "12_benchmarks", {
        "scenes_dir": str(tiny_scenes), "pairs_path": str(tiny_scenes / "pairs_test.csv"), "checkpoints": specs,
        "batch_size": 32, "n_resamples": 50})
    run = RunLayout(run_dir)
    metrics = pd.read_csv(run.zero_shot_metrics)
    assert set(metrics["dataset"]) == {"scenes-shape", "scenes-colour"} and set(metrics["checkpoint"]) == set(specs)
    top1 = metrics[metrics["metric"] == "top1_accuracy"].set_index(["checkpoint", "dataset"])
    from clipeval.data.classification_sets import read_scene_classes

    for name, attribute in (("scenes-shape", "shape"), ("scenes-colour", "colour")):
        truth = read_scene_classes(tiny_scenes, "test", attribute)
        assert (top1.xs(name, level="dataset")["n_images"] == len(truth.images)).all()
        assert top1.xs(name, level="dataset")["chance"].tolist() == pytest.approx([1 / len(truth.classnames)] * 2)
    hard = pd.read_csv(run.hard_negative_accuracy)
    n_negatives = (~pd.read_csv(tiny_scenes / "pairs_test.csv")["match"]).sum()
    assert (hard[hard["negative_kind"] == "all"]["n"] + hard[hard["negative_kind"] == "all"]["n_unscored"]
            == n_negatives).all()
    assert {"colour", "count", "relation", "all", "mean"} <= set(hard["negative_kind"])
    steps = json.loads(run.manifest.read_text())["steps"]
    assert {"classify", "hard_negatives"} <= set(steps)
    figures = {path.name for path in (run_dir / "figures").glob("12_*.png")}
    assert figures == {"12_zero_shot.png", "12_hard_negatives.png"}
