"""docs/finder.md's measured command-line search: ``bench/results/search_cli.json`` as a table and two phrases.

The file compares source trees (``bench_search_cli.py --tree``, the older first): each cell says the first
tree's median, then the last one's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from measured_sources import Sources

CHECKPOINTS = {"dual": "dual encoder", "hf": "tiny hf CLIP"}
QUERIES = {"text": "text", "image": "`--image`", "similar": "`--similar`"}
NOTE = "<sub>Generated from `bench/results/search_cli.json` by `make measured`.</sub>"


def _cases(result: dict) -> dict[tuple[str, str, str], dict]:
    return {(case["checkpoint"], case["query"], case["tree"]): case for case in result["cases"]}


def _model_load(case: dict, part: str = "cpu_s") -> list[float]:
    """Per run: the first query less the same query again (loading the model, its libraries' imports included)."""
    stages = case["stages"]
    return [first - again for first, again in zip(stages["first_query"][part]["runs"],
                                                  stages["second_query"][part]["runs"])]


def _import_share(case: dict) -> float:
    """The median share of the model's load (wall time) spent importing, per run."""
    first = case["stages"]["first_query"]
    return statistics.median(imports / load for imports, load in zip(first["import_s"]["runs"],
                                                                      _model_load(case, "wall_s")))


def _stage(case: dict, name: str, part: str = "cpu_s") -> float:
    return case["stages"][name][part]["median"]


def _both(before: float, after: float, digits: int = 2) -> str:
    return f"{before:.{digits}f} → {after:.{digits}f}"


def render_bench_search_cli(sources: Sources) -> str:
    """Whole ``clipeval search`` commands and their stages, before and after, per checkpoint and query (a table)."""
    result = sources.bench("search_cli")
    cases, trees = _cases(result), result["config"]["trees"]
    first, last = trees[0], trees[-1]
    rows = []
    for checkpoint, label in CHECKPOINTS.items():
        for query, shown in QUERIES.items():
            old, new = cases[checkpoint, query, first], cases[checkpoint, query, last]
            load = (f"{_both(statistics.median(_model_load(old)), statistics.median(_model_load(new)))}"
                    + (f" ({100 * _import_share(old):.0f}% → {100 * _import_share(new):.0f}%)"
                       if query != "similar" else ""))
            rows.append([label, shown,
                         _both(old["whole_command"]["wall_s"]["median"], new["whole_command"]["wall_s"]["median"], 1),
                         _both(old["whole_command"]["cpu_s"]["median"], new["whole_command"]["cpu_s"]["median"], 1),
                         _both(_stage(old, "command_line"), _stage(new, "command_line")),
                         _both(_stage(old, "finder_import"), _stage(new, "finder_import")),
                         _both(_stage(old, "index_open"), _stage(new, "index_open")), load,
                         _both(_stage(old, "second_query"), _stage(new, "second_query"), 3),
                         _both(_stage(old, "start_and_exit"), _stage(new, "start_and_exit"))])
    header = ["checkpoint", "query", "whole command, wall s", "whole command, CPU s", "command line",
              "finder import", "index open", "model load (imports' share)", "the query again",
              "interpreter start and exit"]
    table = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    config, machine = result["config"], result["machine"]
    return ("\n".join(table) + f"\n\nMedians of {config['runs']} fresh processes per cell (the two trees in turn): "
            f"`{first}` → `{last}`; stages in CPU seconds, timed inside a child that runs the command's steps "
            f"under `python -X importtime`; the model's load is the first query less the same query again, and "
            f"its imports' share is of its wall time (top-level imports' cumulative times). "
            f"An index of {config['images']} scene images ({config['rows']:,} caption rows), "
            f"k = {config['k']}; the interpreter's own start takes {result['python_start_s']['median']:.2f} s. "
            f"{machine['cpu_count']} cores, OMP_NUM_THREADS={machine['omp_num_threads']}, load average "
            f"{machine['loadavg_start'][0]:.1f} at the start and {machine['loadavg_end'][0]:.1f} at the end; "
            f"torch {machine['torch']}, transformers {machine['transformers']}.\n\n{NOTE}")


def render_search_cli_dual_text(sources: Sources) -> str:
    """Where the dual encoder's text query spends its time, after the change (a phrase)."""
    result = sources.bench("search_cli")
    new = _cases(result)["dual", "text", result["config"]["trees"][-1]]
    whole = new["whole_command"]
    rest = sum(_stage(new, name) for name in ("index_open", "second_query", "print"))
    return (f"{whole['cpu_s']['median']:.1f} s of CPU ({whole['wall_s']['median']:.1f} s wall) for a text query "
            f"with the dual encoder, of which importing the command line and the finder (torch, pandas) takes "
            f"{_stage(new, 'command_line') + _stage(new, 'finder_import'):.1f} s, loading the model "
            f"{statistics.median(_model_load(new)):.1f} s ({100 * _import_share(new):.0f}% of it importing "
            f"transformers and torchvision), opening the index, embedding the query, ranking and printing "
            f"{rest:.2f} s, and the interpreter's exit, which frees every module imported, "
            f"{_stage(new, 'start_and_exit'):.1f} s")


def render_search_cli_repeat(sources: Sources) -> str:
    """The same query again in a process that has loaded everything, over every case (a phrase)."""
    result = sources.bench("search_cli")
    last = result["config"]["trees"][-1]
    again = [_stage(case, "second_query") for case in result["cases"] if case["tree"] == last]
    return f"{max(again) * 1000:.0f} ms or less"


SEARCH_CLI_RENDERERS: dict[str, Callable[[Sources], str]] = {
    "bench_search_cli": render_bench_search_cli,
    "search_cli_dual_text": render_search_cli_dual_text,
    "search_cli_repeat": render_search_cli_repeat,
}
