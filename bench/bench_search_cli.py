"""Where a command-line ``clipeval search`` spends its time: whole commands and their stages, fresh processes.

    python bench/bench_search_cli.py [--runs 5 --out bench/results/search_cli.json]
                                     [--tree before=/tmp/old/src --tree after=src]

Each search is a new Python process, so what it costs is mostly what it imports and loads before it can embed
one query. A small index is built here: the synthetic scenes' 200 test images (``generate_scenes``, their
captions grouped by image) under two checkpoints, the dual encoder at its default sizes (untrained, seeded:
its speed is the trained one's) and a tiny random transformers CLIP. For each checkpoint and each query kind
(a text, an image file, ``--similar`` an indexed item) and each source tree (``--tree LABEL=SRC``: the package
imported from SRC, e.g. an older commit's ``src`` from ``git archive COMMIT src | tar -x -C DIR``; default:
this checkout's), ``--runs`` fresh processes of each kind, in turn:

* **the whole command**: ``python -m clipeval search INDEX QUERY --checkpoint SPEC`` from the shell, timed from
  outside (wall, user + system CPU, peak RSS from ``wait4``);
* **its stages**: the same steps as the command's handler, in a child process (``--child``) run with
  ``python -X importtime``, each stage's wall and CPU time and the part of its wall time spent importing
  (its top-level imports' cumulative times): ``command_line``
  (import the CLI and parse), ``finder_import`` (``clipeval.finder.search`` and what it imports),
  ``index_open`` (manifest, ``items.parquet``, the vectors), ``first_query`` (loading the model, with its
  libraries' imports, then embedding the query and ranking), ``second_query`` (the same query again in the
  same process: embedding and ranking only, what ``serve`` pays from its second query on), ``print``, and
  ``start_and_exit``: the child's own time (``wait4``) less its stages', the interpreter's start and, most of it,
  its exit, which frees every module the libraries imported. The model's load is ``first_query`` less
  ``second_query``.

``python -c pass`` is timed too (the interpreter's own start). Times are min / median / max over the runs;
the load average is recorded at the start and the end (the machine may be shared).
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

HERE = Path(__file__).resolve()
STAGES = ("command_line", "finder_import", "index_open", "first_query", "second_query", "print", "start_and_exit")
QUERIES = ("text", "image", "similar")
TEXT = "a red circle left of a blue square"
K = 10


def _query_args(kind: str, value: str) -> list[str]:
    """The command line's words for a query: the text itself, or ``--image PATH`` / ``--similar ID``."""
    return [value] if kind == "text" else [f"--{kind}", value]


# --- the child: the search command's steps, stage by stage ----------------------------------------------------


def child(argv: list[str]) -> None:
    """``--child INDEX SPEC KIND VALUE``: the ``search`` handler's steps with a marker on stderr before each stage
    (the parent reads them between ``-X importtime``'s lines) and the stage times as JSON on stdout."""
    index_dir, spec, kind, value = argv
    marks = []

    def stage(name: str) -> None:
        print(f"@@stage {name}", file=sys.stderr, flush=True)
        marks.append((name, time.perf_counter(), time.process_time()))

    stage("command_line")
    from clipeval.runs.cli import build_parser

    build_parser().parse_args(["search", index_dir, *_query_args(kind, value), "--checkpoint", spec, "--k", str(K)])
    stage("finder_import")
    from clipeval.embed.options import EmbedOptions
    from clipeval.finder.search import FinderIndex, format_results, run_query

    stage("index_open")
    index = FinderIndex.open(index_dir, EmbedOptions(device="cpu"))
    index.vectors(spec)
    stage("first_query")
    result = run_query(index, **{kind: value}, checkpoints=[spec], k=K)
    stage("second_query")
    run_query(index, **{kind: value}, checkpoints=[spec], k=K)
    stage("print")
    format_results(result)
    stage("end")
    print(json.dumps({name: (marks[i + 1][1] - wall, marks[i + 1][2] - cpu)
                      for i, (name, wall, cpu) in enumerate(marks[:-1])}))


# --- the parent ----------------------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def _run(command: list[str], env: dict) -> dict:
    """Wall, CPU and peak memory of one process, from ``wait4`` (its output goes to files: a pipe it fills would
    block it, and ``subprocess`` would reap it before ``wait4`` could)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "stdout": stdout, "stderr": stderr}


def import_seconds_by_stage(stderr: str) -> dict[str, float]:
    """Seconds of top-level imports (``-X importtime``'s cumulative times, nested ones inside them) per stage."""
    seconds, stage = {}, None
    for line in stderr.splitlines():
        if line.startswith("@@stage "):
            stage = line.split(" ", 1)[1]
            seconds.setdefault(stage, 0.0)
        elif line.startswith("import time:") and stage is not None:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and name.startswith(" ") and not name.startswith("  "):
                seconds[stage] += int(cumulative) / 1e6
    return seconds


def build_collection(work: Path) -> dict:
    """The scenes' test split indexed under the two checkpoints; the specs and the queries."""
    import pandas as pd
    import torch

    from clipeval.data.scenes import generate_scenes
    from clipeval.embed.options import EmbedOptions
    from clipeval.finder.index import build_index
    from clipeval.models.dual import build_dual_encoder, save_dual
    from clipeval.models.dual_config import DualEncoderConfig
    from clipeval.models.registry import checkpoint_family

    scenes = generate_scenes(work / "scenes", n_train=0, n_val=0, n_test=200)
    pairs = scenes / "pairs_test.csv"
    torch.manual_seed(0)
    model, tokenizer = build_dual_encoder(DualEncoderConfig(), pd.read_csv(pairs)["caption"].tolist())
    specs = {"dual": f"dual:{save_dual(model, tokenizer, work / 'dual')}",
             "hf": checkpoint_family("hf").build_tiny(work / "hf-clip", 0)}
    build = build_index(pairs, list(specs.values()), work / "index",
                        embed=EmbedOptions(device="cpu", progress=False, embedding_cache=False))
    items = pd.read_parquet(work / "index" / "items.parquet")
    image = scenes / items["image"].iloc[7]
    return {"index": str(work / "index"), "specs": specs, "images": build.images, "rows": build.rows,
            "queries": {"text": TEXT, "image": str(image), "similar": str(items["id"].iloc[3])}}


def measure(trees: dict[str, Path], collection: dict, runs: int) -> dict:
    """Every (checkpoint, query, tree) case, ``runs`` whole commands and ``runs`` staged children each, in turn."""
    cases = {(name, kind, tree): {"whole": [], "stages": []}
             for name in collection["specs"] for kind in QUERIES for tree in trees}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = [_run([sys.executable, "-c", "pass"], env)["wall_s"] for _ in range(runs)]
    for _ in range(runs):
        for (name, kind, tree), runs_of in cases.items():
            tree_env = {**env, "PYTHONPATH": str(trees[tree])}
            spec, value = collection["specs"][name], collection["queries"][kind]
            args = [collection["index"], *_query_args(kind, value), "--checkpoint", spec, "--k", str(K)]
            runs_of["whole"].append(_run([sys.executable, "-m", "clipeval", "search", *args], tree_env))
            staged = _run([sys.executable, "-X", "importtime", str(HERE), "--child", collection["index"], spec,
                           kind, value], tree_env)
            imports = import_seconds_by_stage(staged["stderr"])
            stages = json.loads(staged["stdout"].splitlines()[-1])
            stages["start_and_exit"] = [staged[key] - sum(times[part] for times in stages.values())
                                        for part, key in enumerate(("wall_s", "cpu_s"))]
            runs_of["stages"].append({name: (wall, cpu, imports.get(name, 0.0))
                                      for name, (wall, cpu) in stages.items()})
    results = []
    for (name, kind, tree), runs_of in cases.items():
        whole = runs_of["whole"]
        results.append({
            "checkpoint": name, "query": kind, "tree": tree,
            "whole_command": {key: _stats([run[key] for run in whole]) for key in ("wall_s", "cpu_s", "peak_mib")},
            "stages": {stage: {key: _stats([run[stage][part] for run in runs_of["stages"]])
                               for part, key in enumerate(("wall_s", "cpu_s", "import_s"))}
                       for stage in STAGES}})
    return {"python_start_s": _stats(start), "cases": results}


def table(report: dict) -> str:
    lines = [f"{'checkpoint':10} {'query':8} {'tree':8} {'whole wall':>10} {'cpu':>6}  stages' CPU s: "
             + " ".join(f"{stage:>13}" for stage in STAGES)]
    for case in report["cases"]:
        stages = " ".join(f"{case['stages'][stage]['cpu_s']['median']:13.3f}" for stage in STAGES)
        whole = case["whole_command"]
        lines.append(f"{case['checkpoint']:10} {case['query']:8} {case['tree']:8} {whole['wall_s']['median']:10.2f} "
                     f"{whole['cpu_s']['median']:6.2f} {stages}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from bench_pipeline import machine_info, save_report
    from clipeval.paths import PROJECT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case and kind")
    parser.add_argument("--tree", action="append", default=None, metavar="LABEL=SRC",
                        help="a source tree to import clipeval from, e.g. a commit's (repeat to compare, the older "
                             "first; default: current=src)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "search_cli.json")
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.tree) if args.tree else {"current": str(PROJECT_ROOT / "src")}
    trees = {label: Path(src).resolve() for label, src in trees.items()}
    started = time.perf_counter()
    machine = machine_info()
    import torch
    import transformers

    machine.update(python=sys.version.split()[0], transformers=transformers.__version__,
                   omp_num_threads=os.environ.get("OMP_NUM_THREADS"), torch_threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="bench-search-cli-") as work:
        collection = build_collection(Path(work))
        report = {"config": {"runs": args.runs, "k": K, "images": collection["images"], "rows": collection["rows"],
                             "text": TEXT, "trees": list(trees),
                             "checkpoints": {"dual": "the dual encoder at its default sizes, untrained (seeded)",
                                             "hf": "a tiny random transformers CLIP (hidden 32, 2 layers)"}},
                  "machine": machine, **measure(trees, collection, args.runs)}
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
