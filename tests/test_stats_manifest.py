import json

import pytest

from clipeval.atomic import write_text
from clipeval.embed.stats import StageTimer, format_stats_log
from clipeval.jobs.manifest import update_manifest


def test_stage_timer_accumulates_calls():
    timer = StageTimer(interval=0.001)
    for _ in range(3):
        with timer.stage("work", items=5):
            sum(range(10_000))
    summary = timer.summary()
    stage = summary["stages"]["work"]
    assert stage["calls"] == 3 and stage["items"] == 15
    assert stage["wall_s"] > 0 and stage["items_per_s"] == pytest.approx(15 / stage["wall_s"])
    assert stage["peak_rss_mib"] > 10 and stage["peak_gpu_mib"] is None
    assert summary["wall_s"] == pytest.approx(stage["wall_s"])


def test_stage_is_recorded_even_when_it_raises():
    timer = StageTimer()
    with pytest.raises(RuntimeError), timer.stage("boom", items=1):
        raise RuntimeError("x")
    assert timer.summary()["stages"]["boom"]["calls"] == 1


def test_manifest_keeps_one_entry_per_step(tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text("image,caption\n")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"123")
    path = tmp_path / "manifest.json"
    update_manifest(path, "score", {"a": 1}, [f"open_clip:ViT-B-32@{weights}", "hf:org/name"], [data], seed=3)
    update_manifest(path, "retrieve", {"b": 2}, [], [data])
    manifest = json.loads(path.read_text())
    assert set(manifest["steps"]) == {"score", "retrieve"}
    score = manifest["steps"]["score"]
    assert score["seed"] == 3 and score["params"] == {"a": 1}
    assert score["checkpoints"][0]["weights_sha256"] and score["checkpoints"][1]["weights_sha256"] is None
    assert len(score["data"][0]["sha256"]) == 64
    assert {"git_commit", "versions"} <= set(manifest)


def test_stats_log_renders_every_stage():
    timer = StageTimer()
    with timer.stage("image_read", items=2):
        pass
    stats = {"pairs": 2, "device": "cpu", "batch_size": 1, "versions": {"torch": "x"},
             "shared": timer.summary(), "checkpoints": {"hf:x": {"precision": "fp32", **timer.summary()}}}
    log = format_stats_log(stats)
    assert "image_read" in log and "checkpoint hf:x" in log and "fp32" in log


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_text(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # readable by others, not 0600


def test_project_relative_removes_this_checkout_from_shared_results(tmp_path):
    from pathlib import Path

    from clipeval.paths import PROJECT_ROOT, project_relative

    inside = PROJECT_ROOT / "bench" / "results" / "x.json"
    result = project_relative({"out": inside, "runs": [str(inside), ("a", 3)], "other": str(tmp_path),
                               "text": "not a path"})
    assert result == {"out": "bench/results/x.json", "runs": ["bench/results/x.json", ("a", 3)],
                      "other": str(tmp_path), "text": "not a path"}
    assert project_relative(Path("relative/already")) == Path("relative/already")
