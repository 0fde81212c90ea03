"""Benchmark ``clipeval score --shards`` over the audit's hostile shards: its time, its memory, every input's outcome.

    python bench/bench_hostile.py [--repeats 3] [--out bench/results/hostile.json]

In a temporary folder: the hostile shards of ``tests/hostile_shards.py`` (those ``tests/test_hostile_inputs.py``
scores from the command line) beside one good shard, the good shard alone in a second folder, and the tiny random
transformers CLIP checkpoint of the tests. Each run is a fresh ``python -m clipeval score --shards`` process with the
flags the audit ran it with (``--max-member-mb 1 --max-shard-mb 64``, every other limit at its default), one torch
thread, the embedding cache in the temporary folder; the hostile folder and the good shard alone alternate
``--repeats`` times. Per run:

* ``wall_s``: the process from the shell, start to exit;
* ``peak_rss_mb``: its high-water RSS (``ru_maxrss`` from ``wait4``: what ``/usr/bin/time`` reports), which counts
  the library pages touched while the interpreter exits. It is taken by a small process of this script's own
  (``--measure``, about 14 MB) that starts the run: a process forked from a large one (this one, with torch loaded)
  inherits the large one's high-water mark;
* ``peak_anon_mb``: the largest anonymous RSS (``RssAnon`` of ``/proc/<pid>/status``) sampled every 10 ms: the
  memory a run takes from other processes (the pages touched at exit are file-backed, clean and shared).

The floors are measured the same way, each a fresh process: ``import torch`` (this machine's build) and the same
with ``os._exit`` after it (what its exit alone adds), and the libraries a run imports before it
reads a shard (torch, pandas, pyarrow, transformers' CLIP model, tokenizer and image processor). Each input's
outcome (its failed marker's reason, or its rows' statuses) is set beside what it should give, and whether the
inputs and the checkpoint were left untouched is recorded. Writes the JSON atomically and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clipeval.paths import PROJECT_ROOT  # light: a --measure process imports no torch, numpy or pandas

AUDIT_FLAGS = ("--max-member-mb", "1", "--max-shard-mb", "64")
SAMPLE_S = 0.01
FLOORS = {
    "import_torch": "import torch",
    "import_torch_exit_skipped": "import os, torch; os._exit(0)",
    "model_libraries": "import torch, pandas, pyarrow.parquet; "
                       "from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel",
}


def _anon_mb(pid: int) -> int:
    """``RssAnon`` of a running process, in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "RssAnon":
                return int(value.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return 0


def run_measured(command: list[str], log: Path) -> dict:
    """Run ``command`` (from this small process): wall time, exit code, peak RSS (exit included), peak anonymous."""
    peak_anon = 0
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_anon = max(peak_anon, _anon_mb(process.pid))
            time.sleep(SAMPLE_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": time.perf_counter() - started, "exit_code": process.returncode,
            "peak_rss_mb": usage.ru_maxrss / 1024, "peak_anon_mb": peak_anon}


def measure(command: list[str], env: dict[str, str], log: Path) -> dict:
    """:func:`run_measured` in a fresh small process of this script (``--measure``), so that the peak is the run's."""
    done = subprocess.run([sys.executable, __file__, "--measure", str(log), *command], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def outcomes(out: Path, expected: dict[str, str], folder: Path) -> dict[str, dict]:
    """What each input gave (``failed`` or its rows' statuses, with the reasons) beside what it should give."""
    import pandas as pd

    from clipeval.layout import RunLayout

    layout, found = RunLayout(out), {}
    for name, should in expected.items():
        files = layout.shard(name)
        if files.failed.exists():
            got, reasons = "failed", [json.loads(files.failed.read_text())["error"]]
        else:
            rows = pd.read_parquet(files.scores, columns=["status", "error"])
            got, reasons = ",".join(rows["status"]), rows["error"].fillna("").tolist()
        found[name] = {"expected": should, "got": got, "as_expected": got == should,
                       "reasons": [reason.replace(f"{folder}/", "").replace(str(folder), folder.name)
                                   for reason in reasons]}
    return found


def _snapshot(*folders: Path) -> dict[str, int]:
    return {str(path): path.lstat().st_mtime_ns for folder in folders for path in folder.rglob("*")}


def _summary(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs)
            for key in ("wall_s", "peak_rss_mb", "peak_anon_mb")}


def table(report: dict) -> str:
    lines = [f"{'run':>32} {'wall s':>7} {'peak RSS MB':>11} {'peak anon MB':>12}"]
    rows = {**{f"floor: {name}": run for name, run in report["floors"].items()},
            "good shard alone": report["honest"]["median"], "hostile folder": report["hostile"]["median"]}
    for name, run in rows.items():
        lines.append(f"{name:>32} {run['wall_s']:>7.1f} {run['peak_rss_mb']:>11.0f} {run['peak_anon_mb']:>12.0f}")
    wrong = [name for name, found in report["hostile"]["inputs"].items() if not found["as_expected"]]
    lines.append(f"inputs as expected: {'all' if not wrong else 'not ' + ', '.join(wrong)}; "
                 f"inputs untouched: {report['hostile']['inputs_untouched']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    sys.path[:0] = [str(PROJECT_ROOT / "bench"), str(PROJECT_ROOT / "tests")]
    from bench_pipeline import machine_info, save_report  # torch: imported here, never by a --measure process
    from clipeval.models.tiny import build_tiny_checkpoints
    from hostile_shards import hostile_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each folder, alternating; medians reported")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args(argv)
    report = {"config": {**vars(args), "flags": list(AUDIT_FLAGS), "checkpoint": "tiny random transformers CLIP "
                         "(the tests' hf-clip)", "device": "cpu", "omp_num_threads": 1,
                         "measured": "fresh `python -m clipeval score --shards` processes from the shell"},
              "machine": machine_info()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        expected = hostile_folder(temp / "shards")
        (temp / "honest").mkdir()
        (temp / "honest" / "good.tar").write_bytes((temp / "shards" / "good.tar").read_bytes())
        spec = build_tiny_checkpoints(temp / "tiny")["hf-clip"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "CLIPEVAL_EMBEDDING_CACHE": str(temp / "embedding-cache")}
        report["config"]["shards_on_disk_bytes"] = {path.name: path.lstat().st_size
                                                    for path in sorted((temp / "shards").iterdir())}
        report["floors"] = {name: measure([sys.executable, "-c", code], env, temp / f"{name}.log")
                            for name, code in FLOORS.items()}
        before = _snapshot(temp / "shards", temp / "honest", temp / "tiny")
        runs = {"honest": [], "hostile": []}
        for attempt in range(args.repeats):
            for name, folder in (("honest", temp / "honest"), ("hostile", temp / "shards")):
                out = temp / f"out-{name}-{attempt}"
                command = [sys.executable, "-m", "clipeval", "score", "--shards", str(folder), "--checkpoint", spec,
                           "--out", str(out), "--device", "cpu", "--no-progress", *AUDIT_FLAGS]
                runs[name].append(measure(command, env, temp / f"{name}-{attempt}.log"))
        report["honest"] = {"runs": runs["honest"], "median": _summary(runs["honest"])}
        report["hostile"] = {"runs": runs["hostile"], "median": _summary(runs["hostile"]),
                             "inputs": outcomes(temp / f"out-hostile-{args.repeats - 1}", expected, temp / "shards"),
                             "inputs_untouched": _snapshot(temp / "shards", temp / "honest", temp / "tiny") == before}
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:  # LOG COMMAND...: one measured run, its JSON on stdout
        print(json.dumps(run_measured(sys.argv[3:], Path(sys.argv[2]))))
    else:
        main()
