"""Sharded runs: shard formats, the local and Ray executors, resuming by shard, curation over shards."""

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.curate.engine import curate_run, curate_table
from clipeval.curate.rules import AnyOf, Percentile, Threshold, TopFraction, parse_rule
from clipeval.curate.sketch import ScoreHistogram
from clipeval.data.shards import (
    ShardReadError,
    expand_braces,
    list_shards,
    read_shard,
    write_filtered_shard,
    write_shards,
)
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.steps import score, score_shards
from clipeval.layout import CurationLayout, RunFolderMismatch, RunLayout, score_column
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.pipeline.scorer import ShardScorer
from clipeval.pipeline.views import results_view, scores_view
from clipeval.runs.cli import main
from fresh_process import MODEL_LIBRARIES, imports_after

SPEC = "hf:tiny"  # the checkpoint name of the hand-made scored shards
CPU = EmbedOptions(device="cpu", progress=False)


def _curate(run_dir, rules, out_dir, exact_limit=10**9):
    rules = [parse_rule(rule) if isinstance(rule, str) else rule for rule in rules]
    return curate_run(RunLayout(run_dir), rules, CurationLayout(out_dir), exact_limit, progress=False)


@pytest.fixture(scope="module")
def tar_shards(tmp_path_factory, challenge_csv):
    """The challenge set's 48 pairs in 4 webdataset shards."""
    pairs = read_pairs(challenge_csv)
    return pairs, write_shards(pairs, tmp_path_factory.mktemp("shards"), 4, "tar")


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory, tar_shards, tiny_specs):
    """The same 4 shards scored by the local executor and by Ray with 2 workers (real processes).

    Each executor has an empty embedding cache of its own: Ray's actors encode every vector themselves
    instead of reading the local run's (the tests check that their caches missed).
    """
    _, shards = tar_shards
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for executor in ("local", "ray"):
        score_shards(root / executor, [str(path) for path in shards], [tiny_specs["hf-clip"]],
                     embed=replace(CPU, embedding_cache_dir=root / f"{executor}-cache"),
                     execution=ExecutionOptions(executor, ray_actors=2))
        runs[executor] = root / executor
    return runs


def _scores(run_dir) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in sorted((run_dir / "shards").glob("*.parquet"))],
                     ignore_index=True)


def test_local_and_ray_give_the_same_rows_and_scores(local_and_ray, tar_shards, tiny_specs):
    pairs, _ = tar_shards
    local, ray = (_scores(local_and_ray[name]).set_index("uid") for name in ("local", "ray"))
    assert len(local) == len(pairs) and set(local.index) == set(ray.index) and local.index.is_unique
    column = score_column("cosine", tiny_specs["hf-clip"])
    np.testing.assert_allclose(local[column], ray.loc[local.index, column], atol=1e-6, rtol=0)
    assert (local["status"] == "ok").all()
    assert local["caption"].tolist() == pairs["caption"].tolist()  # input order, input columns kept
    ray_stats = json.loads((local_and_ray["ray"] / "sharded_stats.json").read_text())
    assert ray_stats["executor"] == "ray" and ray_stats["shards_done"] == 4
    local_stats = json.loads((local_and_ray["local"] / "sharded_stats.json").read_text())
    assert ray_stats["startup_s"] > 0 and local_stats["startup_s"] > 0  # start-up reported apart from the shards
    for name in ("local", "ray"):  # each executor encoded every distinct image and caption itself
        entry = json.loads((local_and_ray[name] / "stats.json").read_text())["checkpoints"][tiny_specs["hf-clip"]]
        assert entry["model_loaded"], name
        assert entry["cache"]["image_misses"] >= pairs["image"].nunique(), name
        assert entry["cache"]["text_misses"] >= pairs["caption"].nunique(), name


def test_a_checkpoint_no_actor_can_load_stops_the_ray_run_with_its_own_error(tar_shards, tmp_path, capsys):
    _, shards = tar_shards
    argv = ["score", "--shards", str(shards[0]), "--shards", str(shards[1]),
            "--checkpoint", f"dual:{tmp_path / 'no-model'}", "--out", str(tmp_path / "run"),
            "--executor", "ray", "--ray-actors", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: dual:{tmp_path / 'no-model'}" in err and "ActorDiedError" not in err


def test_the_ray_driver_imports_no_model_library(tar_shards, tiny_specs, tmp_path):
    """Ray's driver hands out shard paths: torch and the model libraries load in the actors alone."""
    _, shards = tar_shards
    out = tmp_path / "run"
    argv = ["score", "--shards", str(shards[0]), "--checkpoint", tiny_specs["hf-clip"], "--out", str(out),
            "--executor", "ray", "--ray-actors", "1", "--device", "cpu", "--no-progress"]
    assert imports_after(argv, MODEL_LIBRARIES) == []
    assert json.loads((out / "sharded_stats.json").read_text())["shards_done"] == 1


@pytest.mark.parametrize("rule", ["cosine[{spec}]>=0.0", "top:0.3[{spec}]"])
def test_local_and_ray_keep_the_same_rows(local_and_ray, tiny_specs, tmp_path, rule):
    rule = rule.format(spec=tiny_specs["hf-clip"])
    kept = {name: set(pd.read_parquet(_curate(run, [rule], tmp_path / name).out.kept_uids)["uid"])
            for name, run in local_and_ray.items()}
    assert kept["local"] == kept["ray"] and 0 < len(kept["local"]) < 48


def test_a_one_shard_run_and_score_give_the_same_rows(tiny_specs, challenge_csv, tmp_path):
    """``score --pairs`` is a one-shard run of the pipeline: the same rows as the file scored as a shard."""
    specs, embed = [tiny_specs["hf-clip"], tiny_specs["open_clip"]], replace(CPU, embedding_cache=False)
    table = score(tmp_path / "pairs", str(challenge_csv), specs, embed=embed)
    score_shards(tmp_path / "shard", str(challenge_csv), specs, embed=embed)
    by_pairs = pd.read_parquet(RunLayout(tmp_path / "pairs").shard("pairs").scores)
    by_shard = pd.read_parquet(RunLayout(tmp_path / "shard").shard(challenge_csv.stem).scores)
    assert len(by_shard) == len(read_pairs(challenge_csv)) and (by_shard["status"] == "ok").all()
    pd.testing.assert_frame_equal(by_pairs.drop(columns="uid"), by_shard.drop(columns="uid"))
    assert by_shard["uid"].tolist() == [f"{challenge_csv.stem}/{row}" for row in range(len(by_shard))]
    pd.testing.assert_frame_equal(results_view(by_shard, specs), table.results)
    pd.testing.assert_frame_equal(scores_view(by_shard, specs), table.scores)


def test_an_interrupted_run_resumes_without_duplicates_or_gaps(tar_shards, tiny_specs, tmp_path, monkeypatch):
    pairs, shards = tar_shards
    original, calls = ShardScorer.__call__, []

    def dies_after_two(self, shard, progress=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(shard)
        return original(self, shard, progress)

    monkeypatch.setattr(ShardScorer, "__call__", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        score_shards(tmp_path / "run", [str(p) for p in shards], [tiny_specs["hf-clip"]], embed=CPU)
    assert len(list((tmp_path / "run" / "shards").glob("*.done.json"))) == 2
    monkeypatch.setattr(ShardScorer, "__call__", original)
    run = score_shards(tmp_path / "run", [str(p) for p in shards], [tiny_specs["hf-clip"]], embed=CPU)
    assert run.shards["this_run"].tolist() == [False, False, True, True]
    uids = _scores(tmp_path / "run")["uid"]
    assert uids.is_unique and len(uids) == len(pairs)
    assert run.execution["shards_done"] == 4 and run.execution["rows_this_run"] == 24


def test_a_corrupt_sample_and_an_unreadable_shard_are_reported_not_fatal(tar_shards, tiny_specs, tmp_path,
                                                                          capsys):
    _, shards = tar_shards
    good = tmp_path / "in" / "good.tar"
    good.parent.mkdir()
    with tarfile.open(shards[0]) as source, tarfile.open(good, "w") as target:
        for member in source:
            content = source.extractfile(member).read()
            if member.name.startswith("000000001.") and member.name.endswith(("png", "jpg")):
                content = content[:40]  # a truncated image
            member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    broken = tmp_path / "in" / "broken.tar"
    broken.write_bytes(b"this is not a tar file at all" * 20)
    out = tmp_path / "run"
    argv = ["score", "--shards", str(tmp_path / "in" / "{good,broken}.tar"), "--checkpoint",
            tiny_specs["hf-clip"], "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 1
    assert "broken.tar" in capsys.readouterr().err
    table = pd.read_parquet(out / "shards" / "good.parquet")
    broken_rows = table["__key__"] == "000000001"  # the image's 3 captions: each keeps its row and the reason
    assert broken_rows.sum() == 3 and table.loc[broken_rows, "status"].isin(["truncated", "decode_error"]).all()
    assert table.loc[broken_rows, "error"].str.len().gt(0).all()
    assert (table.loc[~broken_rows, "status"] == "ok").all()
    failed = json.loads((out / "shards" / "broken.failed.json").read_text())
    assert failed["state"] == "failed" and "broken.tar" in failed["error"]
    broken.write_bytes(good.read_bytes())  # fixed: the next run scores only that shard
    assert main(argv) == 0
    assert not (out / "shards" / "broken.failed.json").exists()
    assert pd.read_csv(out / "shards.csv")["this_run"].tolist() == [False, True]


def test_a_folder_with_another_run_is_refused(tar_shards, tiny_specs, tmp_path):
    _, shards = tar_shards
    score_shards(tmp_path / "run", str(shards[0]), [tiny_specs["hf-clip"]], embed=CPU)
    with pytest.raises(RunFolderMismatch, match=r"caption_column \('caption' then, 'text' now\)"):
        score_shards(tmp_path / "run", str(shards[0]), [tiny_specs["hf-clip"]], ShardOptions(caption_column="text"),
                     CPU)


def test_webdataset_round_trips(tar_shards, tmp_path):
    pairs, shards = tar_shards
    table = read_shard(shards[1])
    rows = pairs.iloc[12:24].reset_index(drop=True)
    assert table["caption"].tolist() == rows["caption"].tolist()
    assert table["match"].tolist() == rows["match"].tolist()  # the json fields come back as columns
    base = Path(pairs.attrs["base_dir"])
    assert all(data == (base / ref).read_bytes() for data, ref in zip(table["image"], rows["image"]))
    assert table["uid"].is_unique and table["uid"].str.startswith("shard-00001/").all()
    filtered = write_filtered_shard(shards[1], [0, 5], tmp_path / "kept.tar")
    again = read_shard(filtered)
    assert again["caption"].tolist() == [rows["caption"][0], rows["caption"][5]]
    assert again["image"].tolist() == [table["image"][0], table["image"][5]]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_and_csv_shards(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(1))
    pd.DataFrame({"uid": ["x", "y"], "image": [_png(2), _png(3)], "caption": ["one", None]}).to_parquet(
        tmp_path / "s.parquet")
    table = read_shard(tmp_path / "s.parquet")
    assert table["uid"].tolist() == ["x", "y"] and table["image"].tolist() == [_png(2), _png(3)]
    hf = [{"bytes": _png(4), "path": "p.png"}, {"bytes": None, "path": "a.png"}]  # datasets' Image() records
    pd.DataFrame({"image": hf, "caption": ["a", "b"]}).to_parquet(tmp_path / "hf.parquet")
    assert read_shard(tmp_path / "hf.parquet")["image"].tolist() == [_png(4), "a.png"]
    pd.DataFrame({"image": ["a.png"], "caption": ["c"]}).to_csv(tmp_path / "t.csv", index=False)
    table = read_shard(tmp_path / "t.csv")
    assert table["uid"].tolist() == ["t/0"] and table.attrs["base_dir"] == str(tmp_path)
    with pytest.raises(ShardReadError, match="no column"):
        read_shard(tmp_path / "t.csv", caption_column="text")
    with pytest.raises(ShardReadError):
        read_shard(tmp_path / "missing.parquet")


def test_clashing_input_columns_are_kept_under_another_name(tmp_path, tiny_specs):
    pd.DataFrame({"uid": ["x", "y"], "image": [_png(2), _png(3)], "caption": ["a red square", ""],
                  "status": ["success", "success"]}).to_parquet(tmp_path / "s.parquet")
    score_shards(tmp_path / "run", str(tmp_path / "s.parquet"), [tiny_specs["hf-clip"]], embed=CPU)
    table = pd.read_parquet(tmp_path / "run" / "shards" / "s.parquet")
    assert table["input:status"].tolist() == ["success", "success"]
    assert table["status"].tolist()[0] == "ok" and table["status"].tolist()[1] != "ok"  # an empty caption
    assert "image" not in table  # image bytes are not copied to the scores


def test_brace_patterns_and_shard_lists(tmp_path):
    assert expand_braces("s-{008..011}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
    assert expand_braces("{a,b}/{0..1}.tar") == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]
    for name in ("b.tar", "a.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list_shards(str(tmp_path)) == [tmp_path / "a.parquet", tmp_path / "b.tar"]
    assert list_shards(str(tmp_path / "*.tar")) == [tmp_path / "b.tar"]
    assert list_shards(str(tmp_path / "gone.tar")) == [tmp_path / "gone.tar"]  # reported later as unreadable
    with pytest.raises(ValueError, match="no shard matches"):
        list_shards(str(tmp_path / "*.parquet.gz"))
    with pytest.raises(ValueError, match="integer ends"):
        expand_braces("s-{a..c}.tar")


def _scored_shards(run_dir, values_per_shard, statuses=None):
    """A run folder of hand-made scored shards (the columns scoring writes) and their done-markers."""
    layout = RunLayout(run_dir)
    layout.shards.mkdir(parents=True)
    start = 0
    for number, values in enumerate(values_per_shard):
        n = len(values)
        status = statuses[number] if statuses else ["ok"] * n
        table = pd.DataFrame({"uid": [f"u{start + i}" for i in range(n)], "row": range(n),
                              "caption": ["a small red square on grass"] * n, "image_width": 300,
                              "image_height": 300, score_column("cosine", SPEC): values,
                              score_column("status", SPEC): status})
        files = layout.shard(f"s{number}")
        table.to_parquet(files.scores)
        files.done.write_text(json.dumps({"shard": str(files.scores)}))
        start += n
    return run_dir


def _single_table(values_per_shard, statuses=None):
    values = np.concatenate(values_per_shard)
    status = [status for shard in statuses for status in shard] if statuses else ["ok"] * len(values)
    return pd.DataFrame({"caption": "a small red square on grass", "image_width": 300, "image_height": 300,
                         score_column("cosine", SPEC): values, score_column("status", SPEC): status},
                        index=pd.RangeIndex(len(values), name="row_id"))


RULES = [
    [Threshold(SPEC, 0.3)],
    [TopFraction(SPEC, 0.3)],
    [Percentile(SPEC, 70)],
    [Threshold(SPEC, 0.1), TopFraction(SPEC, 0.5)],
    [AnyOf([TopFraction(SPEC, 0.2), Threshold(SPEC, 0.05, strict=True)])],
    [parse_rule("basic"), TopFraction(SPEC, 0.4)],
]


@pytest.mark.parametrize("rules", RULES, ids=lambda rules: " then ".join(rule.describe() for rule in rules))
def test_exact_shard_curation_keeps_what_curating_one_table_keeps(tmp_path, rules):
    rng = np.random.default_rng(0)
    values = [np.round(rng.uniform(-0.1, 0.5, n), 2) for n in (40, 1, 0, 25)]  # rounded: ties at the cuts
    statuses = [["ok"] * 39 + ["decode_error"], ["ok"], [], ["ok"] * 25]
    result = _curate(_scored_shards(tmp_path / "in", values, statuses), rules, tmp_path / "out")
    expected = curate_table(_single_table(values, statuses), rules)
    kept = pd.read_parquet(tmp_path / "out" / "kept_uids.parquet")
    assert kept["uid"].tolist() == [f"u{row}" for row in expected.kept]
    assert result.exact and result.summary["kept"].tolist() == expected.steps["kept"].tolist()
    decisions = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out" / "decisions").glob("*.parquet"))])
    assert len(decisions) == 66 and decisions["kept"].sum() == len(kept)
    assert decisions.loc[~decisions["kept"], "reason"].notna().all()  # every dropped row says why


def test_the_sketch_cut_is_within_its_stated_bound(tmp_path):
    rng = np.random.default_rng(1)
    values = [rng.normal(0.2, 0.05, 5000) for _ in range(3)]
    run = _scored_shards(tmp_path / "in", values)
    exact = _curate(run, [TopFraction(SPEC, 0.3)], tmp_path / "exact")
    sketch = _curate(run, [TopFraction(SPEC, 0.3)], tmp_path / "sketch", exact_limit=100)
    assert exact.exact and not sketch.exact
    assert "sketch cut" in sketch.summary["note"].iloc[1] and "error bound" in sketch.summary["note"].iloc[1]
    width = ScoreHistogram(-1.0, 1.0).width
    everything = np.concatenate(values)
    cut = np.sort(everything)[::-1][exact.kept - 1]
    kept = set(pd.read_parquet(tmp_path / "sketch" / "kept_uids.parquet")["uid"])
    uids = np.array([f"u{i}" for i in range(len(everything))])
    assert set(uids[everything >= cut + width]) <= kept
    assert not set(uids[everything < cut - width]) & kept
    assert abs(sketch.kept - exact.kept) <= 2  # rows of one bin of width 1.9e-6 among 15,000 normal values


def test_ray_actors_decode_with_their_own_cpus_only():
    assert ExecutionOptions(cpus_per_actor=1).actor_decode_processes(None) == 0  # the model's thread only
    assert ExecutionOptions(cpus_per_actor=4, gpus_per_actor=1).actor_decode_processes(None) == 3
    assert ExecutionOptions(cpus_per_actor=4).actor_decode_processes(1) == 1  # as asked


def test_histograms_merge():
    a, b = ScoreHistogram(-1.0, 1.0), ScoreHistogram(-1.0, 1.0)
    a.add(np.array([0.1, 0.2]))
    b.add(np.array([0.2, 1.5]))  # out of range: clipped into the end bin
    merged = a.merge(b)
    assert merged.counts.sum() == 4 and merged.counts[-1] == 1
    assert merged.bin_of_rank_from_top(1) == len(merged.counts) - 1
    with pytest.raises(ValueError):
        a.merge(ScoreHistogram(0.0, 100.0))
