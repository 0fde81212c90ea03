"""Stale results that look fresh, and curation of untrusted rows: each test is a way a run could lie.

* a shard changed after its done-marker (same name, even with its modification time restored) is scored again;
* a checkpoint replaced in place with its modification time kept gets new vectors;
* an ``--overwrite`` run that crashes leaves its folder marked incomplete, not the earlier run's tables;
* concurrent manifest updates, one of them killed, keep every finished entry in valid JSON;
* ``clear_cache`` (``make clear-cache``) deletes the cache's files only;
* a curated set never holds a row whose image failed, whatever the rules; a uid repeated across shards is reported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.steps import curate, score, score_shards
from clipeval.layout import RunLayout, score_column
from clipeval.paths import PROJECT_ROOT
from clipeval.pipeline.scorer import ShardScorer

CPU = EmbedOptions(device="cpu", progress=False, embedding_cache=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(folder: Path, n: int, side: int = 256) -> list[str]:
    """``n`` random PNG images of ``side`` x ``side`` pixels; their absolute paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for number in range(n):
        path = folder / f"image{number}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _csv_shard(path: Path, images: list[str], captions: list[str], uids: list[str] | None = None) -> Path:
    table = pd.DataFrame({"image": images, "caption": captions})
    if uids is not None:
        table["uid"] = uids
    table.to_csv(path, index=False)
    return path


# --- done-markers record their input ----------------------------------------------------------------------------


@pytest.mark.parametrize("mtime", ["new", "restored"])
def test_a_shard_changed_after_its_done_marker_is_scored_again(tiny_specs, tmp_path, mtime):
    spec = tiny_specs["hf-clip"]
    images = _images(tmp_path / "images", 4)
    shard = _csv_shard(tmp_path / "part.csv", images, ["a photo of a cat"] * 4)
    run = score_shards(tmp_path / "run", [str(shard)], [spec], embed=CPU)
    assert run.shards["this_run"].tolist() == [True]
    before = os.stat(shard)

    _csv_shard(shard, images, ["a photo of a dog"] * 4)  # same name, same size, other captions
    assert os.stat(shard).st_size == before.st_size
    if mtime == "restored":  # as cp -p, rsync -t or a careless tool would
        os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(shard).st_mtime_ns == before.st_mtime_ns

    again = score_shards(tmp_path / "run", [str(shard)], [spec], embed=CPU)
    assert again.shards["this_run"].tolist() == [True], "a changed shard was taken as done"
    scored = pd.read_parquet(RunLayout(tmp_path / "run").shard("part").scores)
    assert scored["caption"].tolist() == ["a photo of a dog"] * 4

    # the same bytes copied back over it (a new change time and mtime kept): hashed, not scored again
    shutil.copy2(shard, tmp_path / "backup.csv")
    shutil.copy2(tmp_path / "backup.csv", shard)
    marker = RunLayout(tmp_path / "run").shard("part").done
    recorded = json.loads(marker.read_text())["input"]
    third = score_shards(tmp_path / "run", [str(shard)], [spec], embed=CPU)
    assert third.shards["this_run"].tolist() == [False]
    refreshed = json.loads(marker.read_text())["input"]
    assert refreshed["sha256"] == recorded["sha256"] and refreshed["ctime_ns"] == os.stat(shard).st_ctime_ns


# --- weights identity -------------------------------------------------------------------------------------------


def test_a_checkpoint_replaced_with_its_mtime_kept_gets_new_vectors(tmp_path, challenge_csv, score_table):
    from clipeval.models.tiny import build_open_clip

    folder, _ = build_open_clip(tmp_path / "ckpt")
    weights = folder / "open_clip_model.safetensors"
    spec = f"open_clip:{folder}"
    pairs = read_pairs(challenge_csv).iloc[:4]
    options = {"embedding_cache_dir": tmp_path / "cache"}
    first = score_table(pairs, [spec], **options)
    assert not score_table(pairs, [spec], **options).stats["checkpoints"][spec]["model_loaded"]  # warm: no load

    retrained = build_open_clip(tmp_path / "other", seed=1)[0] / "open_clip_model.safetensors"
    before = os.stat(weights)
    assert os.stat(retrained).st_size == before.st_size  # same architecture: only the content tells them apart
    shutil.copyfile(retrained, weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # cp -p / rsync -t keep the old mtime

    again = score_table(pairs, [spec], **options)
    entry = again.stats["checkpoints"][spec]
    assert entry["model_loaded"], "a replaced checkpoint reused the old model key"
    assert not np.allclose(again.results["similarity"], first.results["similarity"])

    os.utime(weights)  # touched only: the content hash knows it, the model is not loaded
    touched = score_table(pairs, [spec], **options)
    assert not touched.stats["checkpoints"][spec]["model_loaded"]
    np.testing.assert_allclose(touched.results["similarity"], again.results["similarity"], rtol=0, atol=1e-6)


# --- interrupted overwrite ----------------------------------------------------------------------------------------


def test_an_overwrite_run_that_crashes_leaves_the_folder_marked_incomplete(tiny_specs, challenge_csv, tmp_path,
                                                                          monkeypatch):
    run_dir = tmp_path / "run"
    score(run_dir, str(challenge_csv), [tiny_specs["hf-clip"]], embed=CPU)
    assert (run_dir / "results.csv").is_file()

    def crash(self, table, uids, first_row):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(ShardScorer, "score_rows", crash)
    with pytest.raises(RuntimeError, match="killed midway"):
        score(run_dir, str(challenge_csv), [tiny_specs["open_clip"]], embed=CPU, overwrite=True)
    assert not (run_dir / "results.csv").exists(), "the earlier run's results.csv outlived its replacement"
    assert not (run_dir / "scores.csv").exists() and (run_dir / "incomplete.json").is_file()

    from clipeval.layout import RunIncomplete
    from clipeval.metrics.compare import load_run_scores

    layout = RunLayout(run_dir)
    assert not layout.is_complete and "unfinished" in layout.incomplete_reason
    with pytest.raises(RunIncomplete, match="unfinished"):
        load_run_scores(layout)
    from clipeval.report.build import build_report

    assert "incomplete run" in build_report(run_dir).index.read_text()  # the report says so at the top

    monkeypatch.undo()
    score(run_dir, str(challenge_csv), [tiny_specs["open_clip"]], embed=CPU, overwrite=True)
    assert layout.is_complete and layout.results.is_file()


# --- manifest updates under a lock ------------------------------------------------------------------------------

_UPDATER = textwrap.dedent("""
    import sys
    from clipeval.jobs.manifest import update_manifest

    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for number in range(count):
        update_manifest(path, f"{name}-{number}", {"number": number}, [], [])
        print(f"{name}-{number}", flush=True)
""")


def test_concurrent_manifest_updates_keep_every_finished_entry_when_one_is_killed(tmp_path):
    path = tmp_path / "manifest.json"
    env = {**os.environ, "CLIPEVAL_ROOT": str(tmp_path)}
    command = [sys.executable, "-c", _UPDATER, str(path)]
    processes = {name: subprocess.Popen([*command, name, "40"], stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=tmp_path) for name in ("a", "b", "c", "d")}
    finished = []
    victim = processes["a"]
    for _ in range(6):
        finished.append(victim.stdout.readline().strip())
    victim.send_signal(signal.SIGKILL)
    finished += [line for line in victim.communicate(timeout=120)[0].split() if line]
    for name, process in processes.items():
        if name != "a":
            out, _ = process.communicate(timeout=300)
            assert process.returncode == 0
            finished += out.split()
    assert victim.returncode == -signal.SIGKILL
    manifest = json.loads(path.read_text())  # valid JSON
    lost = [step for step in finished if step not in manifest["steps"]]
    assert not lost, f"{len(lost)} of {len(finished)} finished updates lost: {lost[:5]}"
    assert len([step for step in finished if not step.startswith("a-")]) == 120


# --- clear-cache ----------------------------------------------------------------------------------------------------


def _clear_cache_recipe() -> str:
    """The Makefile's ``clear-cache`` recipe as a shell command, ``$(PYTHON)`` this interpreter."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    match = re.search(r"^clear-cache:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, "the Makefile has no clear-cache recipe"
    recipe = "".join(line[1:] for line in match.group(1).splitlines(keepends=True))
    return recipe.replace("$(PYTHON)", sys.executable).replace("$$", "$")


def test_clear_cache_deletes_the_cache_files_only(tmp_path):
    from clipeval.embed.cache import CACHE_ENV, EmbeddingCache

    folder = tmp_path / "my-folder"
    cache = EmbeddingCache(folder)
    cache.put("m", "text", {"k": np.ones(4, np.float32)})
    cache.close()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("a,b\n")
    env = {**os.environ, CACHE_ENV: str(folder)}
    done = subprocess.run(["bash", "-c", _clear_cache_recipe()], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (folder / "thesis.tex").read_text() == "years of work", "clear-cache deleted a file that is not the cache's"
    assert (folder / "data" / "table.csv").is_file()
    assert not (folder / "embeddings.sqlite").exists()
    assert "kept" in done.stdout and "thesis.tex" in done.stdout

    from clipeval.embed.cache import clear_cache

    own = EmbeddingCache(tmp_path / "own")
    own.put("m", "text", {"k": np.ones(4, np.float32)})
    own.close()
    cleared = clear_cache(tmp_path / "own")
    assert "embeddings.sqlite" in {path.name for path in cleared.removed} and not cleared.kept
    assert not (tmp_path / "own").exists()  # the cache's own folder, empty, goes too


# --- curation never keeps a failed row; repeated uids are reported -------------------------------------------------


def test_basic_alone_never_keeps_a_row_whose_image_failed(tiny_specs, tmp_path):
    images = _images(tmp_path / "images", 4)
    truncated = Path(images[3])
    truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) // 2])  # header intact, pixels cut
    captions = ["a small photo of a cat on a mat"] * 4
    pd.DataFrame({"image": images, "caption": captions}).to_csv(tmp_path / "pairs.csv", index=False)
    spec = tiny_specs["hf-clip"]
    scored = score(tmp_path / "run", str(tmp_path / "pairs.csv"), [spec], embed=CPU)
    assert scored.results["status"].tolist() == ["ok", "ok", "ok", "truncated"]
    assert scored.results["image_width"].iloc[3] == 256  # the header was read: basic's size check passes it

    result = curate(tmp_path / "run", ["basic"], tmp_path / "curated", progress=False)
    kept = pd.read_csv(tmp_path / "curated" / "kept.csv")["row_id"].tolist()
    assert 3 not in kept, "basic kept a row whose image could not be read"
    assert kept == [0, 1, 2] and result.kept == 3
    dropped = pd.read_csv(tmp_path / "curated" / "dropped.csv")
    assert dropped.set_index("row_id").loc[3, "reason"] == "status:truncated"
    decisions = pd.read_parquet(tmp_path / "curated" / "decisions" / "pairs.parquet")
    assert decisions["kept"].tolist() == [True, True, True, False]


def test_a_uid_repeated_across_two_shards_is_reported_not_overwritten(tiny_specs, tmp_path):
    spec = tiny_specs["hf-clip"]
    images = _images(tmp_path / "images", 4)
    first = _csv_shard(tmp_path / "first.csv", images[:2], ["a photo of a cat"] * 2, ["u1", "same"])
    second = _csv_shard(tmp_path / "second.csv", images[2:], ["a photo of a dog"] * 2, ["same", "u4"])
    score_shards(tmp_path / "run", [str(first), str(second)], [spec], embed=CPU)

    result = curate(tmp_path / "run", [f"cosine[{spec}]>=-1"], tmp_path / "curated", progress=False)
    kept = pd.read_parquet(tmp_path / "curated" / "kept_uids.parquet")
    assert kept["uid"].is_unique, "a repeated uid is kept twice"
    assert kept["uid"].tolist() == ["u1", "same", "u4"] and result.kept == 3
    decisions = pd.read_parquet(tmp_path / "curated" / "decisions" / "second.parquet")
    assert decisions.set_index("uid").loc["same", "reason"] == "duplicate_uid"
    assert "duplicate_uid" in result.summary["note"].iloc[0]
    assert result.summary["dropped"].iloc[0] == 1


def test_a_failed_row_under_any_checkpoint_is_never_kept(tiny_specs, tmp_path):
    """In memory too: a row failed under a checkpoint no rule names is dropped with its status."""
    from clipeval.curate.engine import curate_table
    from clipeval.curate.rules import parse_rule

    a, b = tiny_specs["hf-clip"], tiny_specs["open_clip"]
    table = pd.DataFrame({"caption": ["a small photo of a cat"] * 3, "image_width": 300, "image_height": 300,
                          score_column("cosine", a): [0.3, 0.3, 0.3], score_column("status", a): ["ok"] * 3,
                          score_column("cosine", b): [0.3, np.nan, 0.3],
                          score_column("status", b): ["ok", "truncated", "ok"]},
                         index=pd.RangeIndex(3, name="row_id"))
    result = curate_table(table, [parse_rule(f"cosine[{a}]>=0.1")])
    assert result.kept.tolist() == [0, 2]
    assert result.dropped.set_index("row_id").loc[1, "reason"] == "status:truncated"
    assert curate_table(table, [parse_rule("basic")]).kept.tolist() == [0, 2]
