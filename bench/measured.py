"""The docs' measured numbers, generated from committed files instead of typed by hand.

The README and the pages of ``docs/`` hold blocks between markers, ``<!-- measured:NAME -->`` ...
``<!-- /measured -->``, each NAME in one document only:
a table on its own lines (the opening marker ends its line) or a phrase inside a sentence (both
markers on one line, never at the start of a line, where Markdown would take the comment for
an HTML block and show the phrase unformatted). Each NAME (lower case) has a renderer, the
tables' here and the phrases' in :mod:`measured_prose`, that reads only committed files
(:class:`~measured_sources.Sources`), so a fresh clone can check them (``tests/test_measured.py``):

* ``bench/results/*.json``: the benchmarks (``make bench``, ``make bench-train``);
* ``bench/results/offline/``: a snapshot of the offline run's small tables (``SNAPSHOT_FILES``),
  copied from ``outputs/offline/`` by ``make measured`` (``outputs/`` is not committed).

``make measured`` (``python bench/measured.py --from-run outputs/offline``) refreshes the snapshot
and rewrites the blocks; without ``--from-run`` it re-renders from the committed files (after
``make bench``); ``--check`` only says which blocks differ.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from clipeval.atomic import atomic_path, write_text
from clipeval.models.catalogue import is_random_init
from clipeval.paths import PROJECT_ROOT
from measured_prose import PROSE_RENDERERS
from measured_sources import SNAPSHOT_FILES, Sources, exponent, num, signed

BLOCK = re.compile(r"<!-- measured:(?P<name>[a-z][a-z0-9_]*) -->(?P<body>.*?)<!-- /measured -->", flags=re.DOTALL)


def snapshot_run(run_dir: str | Path, snapshot_dir: str | Path) -> list[Path]:
    """Copy the run's :data:`SNAPSHOT_FILES` into ``snapshot_dir`` (each file atomically).

    Raises:
        FileNotFoundError: the run folder lacks some of them (nothing is copied).
    """
    run_dir, snapshot_dir = Path(run_dir), Path(snapshot_dir)
    missing = [name for name in SNAPSHOT_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {', '.join(missing)}: run its notebooks first (make notebooks)")
    copied = []
    for name in SNAPSHOT_FILES:
        with atomic_path(snapshot_dir / name) as temp:
            shutil.copyfile(run_dir / name, temp)
        copied.append(snapshot_dir / name)
    return copied


def snapshot_differences(run_dir: str | Path, snapshot_dir: str | Path) -> list[str]:
    """The :data:`SNAPSHOT_FILES` whose bytes differ between the run and the snapshot (or are missing in one)."""
    run_dir, snapshot_dir = Path(run_dir), Path(snapshot_dir)
    different = []
    for name in SNAPSHOT_FILES:
        ours, theirs = run_dir / name, snapshot_dir / name
        if not (ours.is_file() and theirs.is_file()) or ours.read_bytes() != theirs.read_bytes():
            different.append(name)
    return different


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _checkpoint_label(spec: str) -> str:
    return f"`{spec}` (RANDOM INIT)" if is_random_init(spec) else f"`{spec}`"


def _source_note(*files: str) -> str:
    return f"<sub>Generated from {', '.join(f'`{name}`' for name in files)} by `make measured`.</sub>"


def render_score_summary(sources: Sources) -> str:
    """Notebook 03's matched vs mismatched cosine per checkpoint (``score_summary.csv``)."""
    summary = sources.table("score_summary.csv")
    rows = [[_checkpoint_label(row.checkpoint), num(row.matched_mean), num(row.mismatched_mean), num(row.auc),
             num(row.gap)] for row in summary.itertuples()]
    table = _markdown_table(["checkpoint", "matched mean", "mismatched mean", "AUC", "gap"], rows)
    return f"{table}\n\n{_source_note('bench/results/offline/score_summary.csv')}"


def render_retrieval_metrics(sources: Sources) -> str:
    """Notebook 04's retrieval metrics per checkpoint and direction, each beside its chance level."""
    metrics = sources.table("metrics.csv")
    rows = []
    for (spec, dataset, direction), group in metrics.groupby(["checkpoint", "dataset", "direction"], sort=False):
        by_k = group.set_index("k")
        first = by_k.iloc[0]
        hit_rates = [f"{num(by_k.loc[k, 'hit_rate'])} ({num(by_k.loc[k, 'hit_rate_chance'])})" for k in by_k.index]
        rows.append([_checkpoint_label(spec), dataset, direction.replace("_", " "), f"{int(first.n_queries):,}",
                     *hit_rates, f"{num(first.mrr)} ({num(first.mrr_chance)})",
                     f"{first.median_rank:g} ({first.median_rank_chance:g})"])
    ks = metrics["k"].drop_duplicates().tolist()
    header = ["checkpoint", "dataset", "direction", "queries", *[f"HitRate@{k} (chance)" for k in ks],
              "MRR (chance)", "median rank (chance)"]
    return f"{_markdown_table(header, rows)}\n\n{_source_note('bench/results/offline/metrics.csv')}"


def render_label_quality(sources: Sources) -> str:
    """Notebook 07's label quality per label source, and the primary checkpoint's metric bias."""
    quality = sources.table("label_quality.csv")
    bias = sources.table("label_metric_bias.csv")
    primary = bias["checkpoint"].iloc[0]

    def pseudo_vs_true(source: str, direction: str, metric: str, k: int | None) -> str:
        rows = bias[(bias["source"] == source) & (bias["checkpoint"] == primary) & (bias["direction"] == direction)
                    & (bias["metric"] == metric)]
        row = (rows[rows["k"] == k] if k is not None else rows).iloc[0]
        return f"{row.pseudo:.2f} vs {row.true:.2f} ({signed(row.bias)})"

    rows = [[row.source, f"{row.threshold:g}", f"{row.coverage:.2f}", f"{int(row.queries_with_a_true_image)}",
             f"{row.precision:.2f}", f"{row.recall:.2f}",
             pseudo_vs_true(row.source, "text_to_image", "hit_rate", 5),
             pseudo_vs_true(row.source, "image_to_text", "mrr", None)] for row in quality.itertuples()]
    header = ["label source", "threshold", "coverage", "queries with a true image", "precision", "recall",
              "text → image HitRate@5, pseudo vs true (bias)", "image → text MRR, pseudo vs true (bias)"]
    note = _source_note("bench/results/offline/label_quality.csv", "bench/results/offline/label_metric_bias.csv")
    return f"{_markdown_table(header, rows)}\n\nThe metrics are `{primary}`'s. {note}"


def _train_dual(sources: Sources) -> dict:
    return sources.bench("train_dual")


def render_dual_training(sources: Sources) -> str:
    """The training time of ``make bench-train`` (a phrase)."""
    result = _train_dual(sources)
    train = result["train"]
    return (f"{train['wall_s'] / 60:.1f} min ({train['wall_s']:,.0f} s wall, "
            f"{train['cpu_s']:,.0f} s CPU); generating the scenes: {result['generate']['wall_s']:.1f} s")


def render_dual_test_retrieval(sources: Sources) -> str:
    """The trained dual encoder's test text → image retrieval, all / seen / unseen combinations."""
    retrieval = _train_dual(sources)["evaluate"]["retrieval_text_to_image"]
    labels = {"all": "all", "seen": "seen combinations", "unseen": "unseen combinations"}
    rows = []
    for subset, label in labels.items():
        values = retrieval[subset]
        bold = (lambda text: f"**{text}**") if subset == "all" else (lambda text: text)
        name = label if subset == "all" else f"{label} ({values['n_queries']:,})"
        rows.append([name, num(values["hit_rate@1"]), bold(num(values["hit_rate@5"])),
                     num(values["hit_rate@10"]), num(values["recall@5"]), bold(num(values["mrr"])),
                     f"{values['median_rank']:g}"])
    header = ["queries", "HitRate@1", "HitRate@5", "HitRate@10", "Recall@5", "MRR", "median rank"]
    return f"{_markdown_table(header, rows)}\n\n{_source_note('bench/results/train_dual.json')}"


def render_dual_validation(sources: Sources) -> str:
    """The validation retrieval after the last epoch (a phrase)."""
    history = _train_dual(sources)["train"]["history"]
    last = history["epochs"][-1]
    return (f"HitRate@5 {last['val_hit_rate@5']:.3f}, MRR {last['val_mrr']:.3f} "
            f"(epoch {last['epoch']}, {history['n_val_queries']:,} validation queries)")


def render_dual_match(sources: Sources) -> str:
    """Matched vs mismatched cosine over the test caption × image matrix (a phrase)."""
    scores = _train_dual(sources)["evaluate"]["match_scores"]
    return f"means {num(scores['matched_mean'])} vs {num(scores['mismatched_mean'])}, AUC {num(scores['auc'])}"


def render_dual_hard_negatives(sources: Sources) -> str:
    """Hard-negative accuracy by kind, for all scenes and for seen / unseen colour–shape combinations."""
    table = pd.DataFrame(_train_dual(sources)["evaluate"]["hard_negatives"])
    subsets = table["subset"].drop_duplicates().tolist()
    rows = []
    for kind, group in table.groupby("negative_kind", sort=False):
        by_subset = group.set_index("subset")
        rows.append([kind, *[f"{num(by_subset.loc[s, 'accuracy'])} ({int(by_subset.loc[s, 'n']):,})"
                             for s in subsets]])
    header = ["negative kind", *[f"{subset} scenes (pairs)" for subset in subsets]]
    return f"{_markdown_table(header, rows)}\n\n{_source_note('bench/results/train_dual.json')}"


PIPELINE_TARGETS = {"vit_b32": "≥ 0.9", "dual_encoder": "(reported)", "naive_loop": "≥ 3×",
                    "torchmetrics": "≥ 1×", "clip_benchmark": "≥ 1×", "cache": "≥ 20×",
                    "memory": "≤ 200 MiB", "large_jpeg": "≥ 3×"}


def render_bench_pipeline(sources: Sources) -> str:
    """``make bench``'s pipeline ratios (``bench/results/pipeline.json``) beside issue targets."""
    result = sources.bench("pipeline")
    rows = []
    for config in result["model_limit"]["vit_b32"]["configs"].values():
        processes, threads = config["decode_processes"], config["encoder_threads"]
        rows.append([f"scoring ÷ model-only limit, ViT-B/32 size, {processes} decode "
                     f"process{'' if processes == 1 else 'es'} "
                     f"({threads} encoder thread{'' if threads == 1 else 's'})",
                     f"{config['ratio_pipeline_over_model_only']:.2f} ({config['pipeline_pairs_per_s']:.1f} vs "
                     f"{config['model_only_pairs_per_s']:.1f} pairs/s)", PIPELINE_TARGETS["vit_b32"]])
    dual = list(result["model_limit"]["dual_encoder"]["configs"].values())
    setups = " / ".join(f"{c['decode_processes']}{' + fast decode' if c['fast_decode'] else ''}" for c in dual)
    ratios = " / ".join(f"{c['ratio_pipeline_over_model_only']:.2f}" for c in dual)
    speeds = " / ".join(f"{c['pipeline_pairs_per_s']:.0f}" for c in dual)
    rows.append([f"scoring ÷ model-only limit, dual encoder, decode processes {setups}", f"{ratios} ({speeds} pairs/s)",
                 PIPELINE_TARGETS["dual_encoder"]])
    naive = result["naive_loop"]
    rows.append([f"scoring ÷ naive per-row loop, ViT-B/32, {naive['captions_per_image']} captions per image",
                 f"{naive['speedup_pipeline_over_naive']:.1f}× ({naive['pipeline_pairs_per_s']:.1f} vs "
                 f"{naive['naive_pairs_per_s']:.1f} pairs/s)", PIPELINE_TARGETS["naive_loop"]])
    metrics = result["torchmetrics"]
    agree = "agree" if metrics["scores_agree_1e-3"] else "DISAGREE"
    rows.append([f"scoring ÷ torchmetrics `CLIPScore`, same transformers ViT-B/32 and {metrics['pairs']} pairs",
                 f"{metrics['speedup_pipeline_over_torchmetrics']:.1f}× ({metrics['pipeline_pairs_per_s']:.1f} vs "
                 f"{metrics['torchmetrics_pairs_per_s']:.1f} pairs/s); per-sample scores {agree} to "
                 f"{exponent(metrics['max_abs_difference_100cos'])} (100·cos)", PIPELINE_TARGETS["torchmetrics"]])
    bench = result["clip_benchmark"]
    agree = "agree to 1e-6" if bench["metrics_agree_1e-6"] else "DISAGREE beyond 1e-6"
    rows.append([f"retrieval ÷ CLIP_benchmark `zeroshot_retrieval`, same open_clip ViT-B/32, {bench['images']} "
                 f"images × {bench['texts'] // bench['images']} captions",
                 f"{bench['speedup_pipeline_over_clip_benchmark']:.2f}× "
                 f"({bench['pipeline_wall_s_including_decode']:.1f} s, decoding included, vs "
                 f"{bench['clip_benchmark_wall_s_excluding_decode']:.1f} s without); HitRate@1/5/10 both directions "
                 f"{agree}", PIPELINE_TARGETS["clip_benchmark"]])
    cache = result["cache"]
    misses = sum(c["image_misses"] + c["text_misses"] for c in cache["warm_cache_counts"])
    rows.append([f"warm ÷ cold, in one process (start-up excluded): the offline notebooks' scoring + retrieval "
                 f"work ({cache['pairs']} pairs, "
                 f"{' + '.join(cache['checkpoints'])})",
                 f"{cache['speedup_warm_over_cold']:.0f}× ({cache['cold_wall_s']:.1f} s → "
                 f"{cache['warm_wall_s']:.2f} s; "
                 f"{'identical' if cache['outputs_identical'] else 'DIFFERENT'} outputs; {misses} cache misses warm)",
                 PIPELINE_TARGETS["cache"]])
    memory = result["memory"]
    small, large = sorted(memory["peak_rss_bytes"], key=int)
    mib = {size: memory["peak_rss_bytes"][size] / 2**20 for size in (small, large)}
    rows.append([f"peak RSS of a {int(large) // 1000}k-pair minus a {int(small) // 1000}k-pair scoring run "
                 f"(fresh processes, cache off, the {memory['spec']} checkpoint, so the table is what grows)",
                 f"+{memory['peak_rss_increase_mib']:.1f} MiB ({mib[small]:.0f} → {mib[large]:.0f} MiB)",
                 PIPELINE_TARGETS["memory"]])
    jpeg = result["large_jpeg"]["paths"]
    rows.append([f"large-JPEG decode + preprocess, fast ÷ exact ({result['large_jpeg']['size']})",
                 f"{jpeg['fast_2x']['speedup_over_exact']:.1f}× ({jpeg['fast_1x']['speedup_over_exact']:.1f}× at 1× "
                 "the resize side)", PIPELINE_TARGETS["large_jpeg"]])
    table = _markdown_table(["measure", "measured", "target"], rows)
    return f"{table}\n\n{_source_note('bench/results/pipeline.json')}"


def render_bench_retrieval(sources: Sources) -> str:
    """``make bench``'s block-wise retrieval against the full matrix (a phrase)."""
    result = sources.bench("retrieval")
    blockwise, reference = result["blockwise"], result["reference"]
    gib = 2**30
    agreed = result["ranks_identical_fraction"] == 1 and result["topk_lists_identical_fraction"] == 1
    return (f"({result['machine']['cpu_count']} cores, load average {result['machine']['loadavg_start'][0]:.1f}): "
            f"block-wise {blockwise['wall_s']:.1f} s wall / {blockwise['cpu_s']:.1f} s CPU with "
            f"+{blockwise['peak_rss_increase_bytes'] / gib:.2f} GiB peak RSS; the full matrix "
            f"{reference['wall_s']:.1f} s / {reference['cpu_s']:.1f} s with "
            f"+{reference['peak_rss_increase_bytes'] / gib:.1f} GiB; ratio "
            f"{result['time_ratio_blockwise_over_reference']:.2f} (wall) / "
            f"{result['cpu_time_ratio_blockwise_over_reference']:.2f} (CPU). Top-k lists and ranks "
            f"{'agreed' if agreed else 'did NOT all agree'} with the full matrix on "
            + (f"all {result['config']['queries']:,} queries" if agreed else
               f"{result['ranks_identical_fraction']:.1%} of the {result['config']['queries']:,} queries"))


def render_bench_sharded(sources: Sources) -> str:
    """``make bench``'s sharded scoring from the shell: local vs Ray per model, start-up and per-shard costs apart."""
    result = sources.bench("sharded")
    config, names = result["config"], {"dual": "dual encoder", "vit_b32": "ViT-B/32"}
    executors = {"ray_running_cluster": "ray, cluster running"}
    rows, ratios = [], []
    for model, entry in result["models"].items():
        for executor, run in entry["best"].items():
            rows.append([names.get(model, model), executors.get(executor, executor), f"{run['e2e_s']:.1f}",
                         f"{run['rows_per_s_e2e']:.1f}", f"{run['process_s']:.1f}", f"{run['cluster_start_s']:.1f}",
                         f"{run['startup_s']:.1f}", f"{run['rows_per_s_scoring']:.1f}",
                         signed(run["overhead_per_shard_s"])])
        ratios.append(f"{names.get(model, model)} **{entry['ray_over_local_e2e']:.2f}** end to end "
                      f"({entry['ray_over_local_scoring']:.2f} while scoring), joining a running cluster "
                      f"**{entry['ray_running_cluster_over_local_e2e']:.2f}** "
                      f"({entry['ray_running_cluster_over_local_scoring']:.2f})")
    ray_start = [entry["best"]["ray_running_cluster"]["ray_start_s"] for entry in result["models"].values()]
    table = _markdown_table(["model", "executor", "end to end (s)", "rows/s", "process (s)", "Ray start (s)",
                             "scorers ready (s)", "rows/s while scoring", "overhead per shard (s)"], rows)
    machine = result["machine"]
    return (f"{table}\n\n{config['shards']} shards of {config['pairs_per_shard']} pairs ({config['images']}), "
            f"Ray with {config['ray_actors']} actors of {config['cpus_per_actor']} CPU. Ray ÷ local rows/s: "
            f"{'; '.join(ratios)}. The running cluster's own start (`ray start --head`, before the run, not in "
            f"its time): {min(ray_start):.1f}–{max(ray_start):.1f} s. {machine['cpu_count']} cores, load average "
            f"{machine['loadavg_start'][0]:.1f} at the start.\n\n{_source_note('bench/results/sharded.json')}")


def render_bench_sharded_faults(sources: Sources) -> str:
    """``bench_sharded.py --faults``: the Ray executor's wall time with no fault, one actor killed, one node lost."""
    result = sources.bench("sharded_faults")
    faults, config = result["faults"], result["config"]
    names = {"none": "no fault", "actor": "one actor SIGKILLed mid-shard", "node": "its worker node removed mid-shard"}
    rows = [[names[fault], f"{faults['median_wall_s'][fault]:.1f}",
             "-" if fault == "none" else signed(faults["overhead_s"][fault], 1),
             "-" if fault == "none" else f"{faults['overhead_fraction'][fault]:+.1%}",
             " ".join(f"{run['wall_s']:.1f}" for run in faults["runs"][fault]),
             str(sum(run["chunks_resumed"] for run in faults["runs"][fault]))] for fault in faults["runs"]]
    table = _markdown_table(["run", "median wall (s)", "overhead (s)", "overhead", "runs (s)", "chunks reused"],
                            rows)
    machine = result["machine"]
    return (f"{table}\n\n{config['shards']} shards of {config['pairs_per_shard']} pairs ({config['images']}), the "
            f"dual encoder, {config['ray_actors']} actors of {config['cpus_per_actor']} CPU on "
            f"{config['cluster']}; {config['repeats']} alternating round(s), the executor's own wall time. "
            f"{machine['cpu_count']} cores, load average {machine['loadavg_start'][0]:.1f} at the start.\n\n"
            f"{_source_note('bench/results/sharded_faults.json')}")


def render_bench_speed(sources: Sources) -> str:
    """``bench/bench_speed.py``: start-up, re-run, decode candidates, the dual encoder's pipeline, the peer ratio."""
    result = sources.bench("speed")
    cli, dual, peer = result["cli"], result["dual_pipeline"], result["peer"]
    rows = [["`python -m clipeval --help` from the shell (median)", f"{cli['help_s_median']:.2f} s", "< 0.5 s"],
            [f"re-run of a finished `score --pairs` ({cli['pairs']} pairs, {cli['model']}, random init); cold",
             f"{cli['rerun_s']:.2f} s; cold {cli['cold_s']:.1f} s", "< 2 s"],
            ["the same pairs into a fresh folder, embedding cache warm", f"{cli['warm_cache_fresh_folder_s']:.1f} s",
             "(reported)"]]
    for name, row in dual["configs"].items():
        rows.append([f"dual encoder `score --pairs`, {name}, fast decode: ÷ min(model-only, decode × cores) / ÷ the "
                     "shared-core limit", f"{row['over_min_model_decode_x_cores']:.2f} / "
                     f"{row['over_shared_core_limit']:.2f} ({row['pairs_per_s']:.0f} pairs/s)", "≥ 0.9 (first)"])
    vit = result["vit_b32_layouts"]
    rows.append(["`--encode-processes` (one per core) ÷ the fastest other layout: dual encoder (fast decode) / "
                 "ViT-B/32 (exact decode)", f"{dual['encode_processes_over_best_other']:.2f}× / "
                 f"{vit['encode_processes_over_best_other']:.2f}× ("
                 + ", ".join(f"{name} {rate:.1f}" for name, rate in vit["pairs_per_s"].items())
                 + " ViT-B/32 pairs/s)", "(reported)"])
    rows.append([f"retrieval ÷ CLIP_benchmark `zeroshot_retrieval`, open_clip ViT-B/32, {peer['images']:,} images × "
                 "5 captions, cold, fp32", f"{peer['speedup_pipeline_over_clip_benchmark']:.2f}× "
                 f"({peer['pipeline_wall_s_including_decode']:.0f} s, decoding included, vs "
                 f"{peer['clip_benchmark_wall_s_excluding_decode']:.0f} s without); metrics "
                 f"{'agree to 1e-6' if peer['metrics_agree_1e-6'] else 'DIFFER'}", "≥ 1.2×"])
    table = _markdown_table(["measure", "measured", "target"], rows)
    decode_rows = []
    for model, entry in result["decode"]["models"].items():
        for name, row in entry["candidates"].items():
            decode_rows.append([f"{model} ({entry['input_side']} px)", name, f"{row['images_per_s_one_core']:.0f}",
                                f"{row['tensor_max_abs_difference']:.3f}", "yes" if row["within_tolerance"] else "no"])
    decode_table = _markdown_table(["transform", "decode path", "images/s on one core", "max abs difference",
                                    f"within {result['decode']['tolerance_max_abs']}"], decode_rows)
    limits = (f"The dual encoder's limits (medians of {len(dual['rounds'])} rounds, each timing the model alone and "
              f"then every layout on {dual['pairs']} pairs): model only {dual['model_only_pairs_per_s_all_cores']:.0f} "
              f"pairs/s on all cores ({dual['model_only_pairs_per_s_one_core']:.0f} on one), fast decode "
              f"{dual['decode_images_per_s_one_core']:.0f} images/s on one core; min(model, decode × cores) "
              f"{dual['min_model_decode_x_cores']:.0f}, shared-core limit {dual['shared_core_limit']:.0f} pairs/s.")
    machine = result["machine"]
    return (f"{table}\n\n{decode_table}\n\n{limits} {machine['cpu_count']} cores, load average "
            f"{machine['loadavg_start'][0]:.1f} at the start.\n\n{_source_note('bench/results/speed.json')}")


def render_bench_shard_size(sources: Sources) -> str:
    """``bench/bench_shard_size.py``: shards of images with several captions, grouped vs one sample per pair."""
    result = sources.bench("shard_size")
    rows = []
    for size in result["sizes"]:
        for name in ("tar", "parquet"):
            per_pair, grouped = size[name]["per_pair"], size[name]["grouped"]
            members = (f"{per_pair['image_members']:,} / {grouped['image_members']:,}"
                       if per_pair["image_members"] is not None else "—")
            rows.append([f"{size['images']:,} × {result['config']['captions']}", f"{size['image_bytes'] / 1e6:.1f}",
                         name, f"{per_pair['bytes'] / 1e6:.1f}", f"{grouped['bytes'] / 1e6:.1f}",
                         f"{per_pair['bytes'] / grouped['bytes']:.2f}", members])
    header = ["images × captions", "JPEG files (MB)", "format", "one sample per pair (MB)", "grouped (MB)", "ratio",
              "image members (per pair / grouped)"]
    return f"{_markdown_table(header, rows)}\n\n{_source_note('bench/results/shard_size.json')}"


def _duration(seconds: float) -> str:
    """``36 s`` below two minutes, else ``13 min 32 s``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{int(seconds // 60)} min {round(seconds % 60):d} s"


def render_bench_rehearsal(sources: Sources) -> str:
    """``make bench-rehearsal``: the cold ``make rehearsal-hub`` and ``make rehearse``, and each notebook's share."""
    result = sources.bench("rehearsal")
    mirror = f"{_duration(result['mirror_build_s'])} ({result['mirror_bytes'] / 2**30:.1f} GiB)"
    rows = [["`make rehearsal-hub`", mirror],
            ["`make rehearse` (empty embedding cache)", _duration(result["rehearse_s"])]]
    rows += [[f"notebook {name}", _duration(seconds)] for name, seconds in result["notebooks"].items()]
    rows.append(["the report", _duration(result["report_s"])])
    machine = result["machine"]
    return (f"{_markdown_table(['step', 'took'], rows)}\n\nPublished numbers flagged as deviating: "
            f"{result['flagged']} of {result['compared']}. {machine['cpu_count']} cores, load average "
            f"{machine['loadavg_start'][0]:.1f} at the start.\n\n{_source_note('bench/results/rehearsal.json')}")


def render_bench_finder(sources: Sources) -> str:
    """``make bench-finder``: exact vs approximate search per size, and where exact search stops being fast."""
    result = sources.bench("finder")
    rows = []
    for size in result["sizes"]:
        n, exact, approximate = f"{size['n']:,}", size["exact"], size["approximate"]
        rule = "exact" if size["rule"] == "exact" else "approximate"
        rows.append([n, "exact, float32" + (" ← rule" if rule == "exact" else ""), "1",
                     f"{exact['float32']['p50_ms']:.2f} / {exact['float32']['p99_ms']:.2f}",
                     f"{exact['bytes_per_vector_ram_float32']:,} ({exact['bytes_per_vector_disk_float16']:,} on disk)",
                     "–"])
        rows.append([n, "exact, float16", "1", f"{exact['float16']['p50_ms']:.2f} / {exact['float16']['p99_ms']:.2f}",
                     f"{exact['bytes_per_vector_disk_float16']:,}", "–"])
        params = approximate["params"]
        rows.append([n, f"`{params['factory']}`, nprobe {params['nprobe']}" + (" ← rule" if rule != "exact" else ""),
                     f"{approximate['recall_at_10']:.3f} ({approximate['recall_at_10_centre_queries']:.3f} / "
                     f"{approximate['recall_at_10_item_queries']:.3f})",
                     f"{approximate['latency']['p50_ms']:.2f} / {approximate['latency']['p99_ms']:.2f}",
                     f"{approximate['bytes_per_vector']:,.0f}", f"{approximate['build_s']:.0f} s"])
    largest = result["sizes"][-1]
    for variant in largest.get("smaller_budgets", []):
        params = variant["params"]
        rows.append([f"{largest['n']:,}", f"`{params['factory']}`, nprobe {params['nprobe']} (budget "
                     f"{variant['memory_budget_mib']:,} MiB)",
                     f"{variant['recall_at_10']:.3f} ({variant['recall_at_10_centre_queries']:.3f} / "
                     f"{variant['recall_at_10_item_queries']:.3f})",
                     f"{variant['latency']['p50_ms']:.2f} / {variant['latency']['p99_ms']:.2f}",
                     f"{variant['bytes_per_vector']:,.0f}", f"{variant['build_s']:.0f} s"])
    header = ["vectors", "search", "recall@10 (centre / item queries)", "p50 / p99 ms", "bytes per vector", "build"]
    def size(n: int) -> str:
        return f"{n // 10**6:g}M" if n % 10**6 == 0 else f"{n // 1000:,}k"

    curve = ", ".join(f"{size(entry['n'])} {entry['float32']['p50_ms']:.1f}"
                      for entry in result["exact_latency_curve"])
    machine, target = result["machine"], result["target"]
    return (f"{_markdown_table(header, rows)}\n\nExact search's p50 (ms) over prefixes of the largest set: {curve}; "
            f"it stays under {result['latency_limit_ms']:.0f} ms up to {result['exact_under_limit_up_to']:,} vectors "
            f"(`EXACT_UP_TO` = {result['exact_up_to']:,}). Target at {target['n']:,} vectors (recall@10 ≥ "
            f"{target['recall_at_10']}, p50 < {target['p50_ms']:.0f} ms): **{'met' if target['met'] else 'NOT met'}**. "
            f"{machine['cpu_count']} cores, faiss {machine['faiss']} on {machine['faiss_threads']} threads, torch on "
            f"{machine['torch_threads']}; load average {machine['loadavg_start'][0]:.1f} at the start."
            f"\n\n{_source_note('bench/results/finder.json')}")


def render_bench_finder_float16(sources: Sources) -> str:
    """``bench/bench_finder_float16.py``: float32 vs float16-stored vectors, the same queries ranked both ways."""
    result = sources.bench("finder_float16")
    scenes, synthetic = result["scenes"], result["synthetic"]
    rows = []
    for name, part in ((f"scenes, text → image ({scenes['images']:,} images, dim {scenes['dim']})",
                        scenes["text_to_image"]),
                       ("scenes, image → image (itself left out)", scenes["image_to_image"]),
                       (f"synthetic clustered, dim {synthetic['dim']}", synthetic["text_like_queries"])):
        gap = part["largest_gap_at_a_change"]
        rows.append([name, f"{part['queries']:,} × {part['items']:,}", f"{part['top1_agree']:.4f}",
                     f"{part['top10_same_set']:.4f}", f"{part['top10_same_order']:.4f}",
                     f"{part['mean_top10_overlap']:.4f}", f"{part['max_score_change']:.1e}",
                     "–" if gap is None else f"{gap:.1e}"])
    header = ["queries → items", "queries × items", "top 1 same", "top-10 set same", "top-10 order same",
              "mean top-10 overlap", "largest score change", "widest float32 gap float16 reorders"]
    recall = scenes["recall_at_10_test"]
    return (f"{_markdown_table(header, rows)}\n\nText → image Recall@10 on the scenes' test queries: "
            f"{recall['float32']:.4f} from float32 vectors, {recall['float16']:.4f} from float16 ones "
            f"(checkpoint `{scenes['checkpoint'].split('/')[-1]}`, the trained dual encoder)."
            f"\n\n{_source_note('bench/results/finder_float16.json')}")


RENDERERS: dict[str, Callable[[Sources], str]] = {
    "score_summary": render_score_summary,
    "retrieval_metrics": render_retrieval_metrics,
    "label_quality": render_label_quality,
    "dual_training": render_dual_training,
    "dual_test_retrieval": render_dual_test_retrieval,
    "dual_validation": render_dual_validation,
    "dual_match": render_dual_match,
    "dual_hard_negatives": render_dual_hard_negatives,
    "bench_pipeline": render_bench_pipeline,
    "bench_retrieval": render_bench_retrieval,
    "bench_sharded": render_bench_sharded,
    "bench_sharded_faults": render_bench_sharded_faults,
    "bench_speed": render_bench_speed,
    "bench_shard_size": render_bench_shard_size,
    "bench_rehearsal": render_bench_rehearsal,
    "bench_finder": render_bench_finder,
    "bench_finder_float16": render_bench_finder_float16,
    **PROSE_RENDERERS,
}


def render_blocks(sources: Sources | None = None) -> dict[str, str]:
    """Every measured block, rendered from ``sources`` (default: the committed files)."""
    sources = sources or Sources()
    return {name: render(sources) for name, render in RENDERERS.items()}


def read_blocks(text: str) -> dict[str, str]:
    """The measured blocks of a README as they stand, by name (body with the block's indentation removed).

    Raises:
        ValueError: a name occurs twice.
    """
    blocks: dict[str, str] = {}
    for match in BLOCK.finditer(text):
        name = match["name"]
        if name in blocks:
            raise ValueError(f"measured block {name!r} occurs twice")
        blocks[name] = _unindent(match["body"], _indent_before(text, match.start()))
    return blocks


def _indent_before(text: str, position: int) -> str:
    line = text[text.rfind("\n", 0, position) + 1:position]
    return line if not line.strip() else ""


def _unindent(body: str, indent: str) -> str:
    if not body.startswith("\n"):
        return body
    lines = [line.removeprefix(indent) for line in body.split("\n")]
    return "\n".join(lines).strip("\n ")


def _layout(body: str, inline: bool, indent: str) -> str:
    if inline:
        return body
    lines = [f"{indent}{line}" if line else "" for line in body.split("\n")]
    return "\n\n" + "\n".join(lines) + "\n\n" + indent


def documents(root: Path = PROJECT_ROOT) -> list[Path]:
    """The files that may hold measured blocks: the README and every page of ``docs/``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each measured block's body replaced by ``blocks[name]``.

    A block stays a table (lines, indented like its opening marker) or a phrase (inline) as it was.

    Raises:
        ValueError: the text has a block with no renderer.
    """
    unknown = sorted(set(read_blocks(text)) - set(blocks))
    if unknown:
        raise ValueError(f"measured blocks with no renderer: {unknown}")

    def substitute(match: re.Match) -> str:
        inline = not match["body"].startswith("\n")
        body = _layout(blocks[match["name"]], inline, _indent_before(text, match.start()))
        return f"<!-- measured:{match['name']} -->{body}<!-- /measured -->"

    return BLOCK.sub(substitute, text)


def blocks_in(paths: list[Path]) -> dict[str, tuple[Path, str]]:
    """Every measured block of the documents: name -> (document, body).

    Raises:
        ValueError: a name occurs twice (in one document or in two).
    """
    found: dict[str, tuple[Path, str]] = {}
    for path in paths:
        for name, body in read_blocks(path.read_text()).items():
            if name in found:
                raise ValueError(f"measured block {name!r} occurs in {found[name][0]} and {path}")
            found[name] = (path, body)
    return found


def stale_blocks(paths: list[Path], blocks: dict[str, str]) -> list[str]:
    """Names of the blocks whose text in the documents differs from ``blocks`` (missing ones included)."""
    found = {name: body for name, (_, body) in blocks_in(paths).items()}
    return sorted(name for name in set(found) | set(blocks) if found.get(name) != blocks.get(name))


def update_documents(paths: list[Path] | None = None, sources: Sources | None = None,
                     from_run: str | Path | None = None) -> list[str]:
    """Refresh the snapshot from ``from_run`` (if given) and rewrite the documents' measured blocks.

    Returns:
        The names of the blocks that changed.

    Raises:
        ValueError: a renderer's block is in no document, or a block has no renderer.
    """
    paths, sources = paths or documents(), sources or Sources()
    if from_run is not None:
        snapshot_run(from_run, sources.snapshot_dir)
    blocks = render_blocks(sources)
    absent = sorted(set(blocks) - set(blocks_in(paths)))
    if absent:
        raise ValueError(f"measured blocks in no document: {absent}")
    changed = stale_blocks(paths, blocks)
    for path in paths:
        text = path.read_text()
        if set(read_blocks(text)) & set(changed):
            write_text(path, replace_blocks(text, blocks))
    return changed


def main(argv: list[str] | None = None) -> int:
    """``make measured``: refresh the snapshot (``--from-run``) and rewrite the blocks, or ``--check`` them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", default=None,
                        help="first copy this run folder's measured files into bench/results/offline/")
    parser.add_argument("--check", action="store_true", help="only say which blocks differ (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks(documents(), render_blocks())
        print(f"stale measured blocks: {', '.join(stale)}; run make measured" if stale
              else f"the {len(blocks_in(documents()))} measured blocks are up to date")
        return 1 if stale else 0
    changed = update_documents(from_run=args.from_run)
    print(f"rewrote measured blocks: {', '.join(changed)}" if changed else "measured blocks unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
