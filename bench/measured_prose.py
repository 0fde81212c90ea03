"""The measured numbers in the docs' running prose: each a phrase rendered from a committed file.

A sentence that states a measured result holds it as an inline block,
``... drops by <!-- measured:self_label_hit_rate_bias -->0.13<!-- /measured --> ...``, so that
``python bench/measured.py --check`` (and ``tests/test_measured.py``) fails when the sentence and
its file disagree. Each renderer here reads :class:`~measured_sources.Sources` only; where the
direction of a result decides a word of the sentence (drops / rises), the word is rendered too.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from clipeval.models.catalogue import is_random_init
from clipeval.profiles import load_profile
from measured_search_cli import SEARCH_CLI_RENDERERS
from measured_sources import Sources, exponent, num


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _span(values: list[float], text: Callable[[float], str], unit: str = "") -> str:
    """``7.4–7.5 s`` for several values, ``7.4 s`` for one (or for several written the same)."""
    low, high = text(min(values)), text(max(values))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


# --- the offline run's snapshot -------------------------------------------------------------------------


def _label_source(kind: str) -> str:
    """The name the offline profile gives its label source of ``kind`` (``zero-shot``, ``classifier``)."""
    [name] = [name for name, source in load_profile("offline")["label_sources"].items() if source["kind"] == kind]
    return name


def _primary_bias(sources: Sources, kind: str) -> pd.DataFrame:
    """``label_metric_bias.csv``'s rows of one label source under the primary (first) checkpoint."""
    bias = sources.table("label_metric_bias.csv")
    return bias[(bias["source"] == _label_source(kind)) & (bias["checkpoint"] == bias["checkpoint"].iloc[0])]


def _bias_change(rows: pd.DataFrame) -> str:
    """``drops by 0.13`` / ``rises by 0.33`` / ``does not move``: the one bias of ``rows``."""
    [value] = rows["bias"].tolist()
    if round(value, 2) == 0:
        return "does not move"
    return f"{'rises' if value > 0 else 'drops'} by {abs(value):.2f}"


def render_self_label_hit_rate_bias(sources: Sources) -> str:
    """The zero-shot dual encoder's labels: the change of its own text → image HitRate@5 (a phrase)."""
    bias = _primary_bias(sources, "zero-shot")
    rows = bias[(bias["direction"] == "text_to_image") & (bias["metric"] == "hit_rate") & (bias["k"] == 5)]
    return _bias_change(rows)


def render_self_label_mrr_bias(sources: Sources) -> str:
    """The zero-shot dual encoder's labels: the change of its own image → text MRR (a phrase)."""
    bias = _primary_bias(sources, "zero-shot")
    rows = bias[(bias["direction"] == "image_to_text") & (bias["metric"] == "mrr")]
    return _bias_change(rows.drop_duplicates("bias"))  # MRR does not depend on k: one value, on every k's row


def render_classifier_label_quality(sources: Sources) -> str:
    """The trained classifier's labels: precision, recall and its largest metric bias (a phrase)."""
    name = _label_source("classifier")
    quality = sources.table("label_quality.csv").set_index("source").loc[name]
    largest = _primary_bias(sources, "classifier")["bias"].abs().max()
    return (f"precision {quality['precision']:.2f}, recall {quality['recall']:.2f}; its biases stay within "
            f"±{largest:.2f}")


def _cosine_spread(summary: pd.DataFrame, spec: str, group: str) -> str:
    row = summary.set_index("checkpoint").loc[spec]
    return (f"median {num(row[f'{group}_q50'])}, 5th–95th percentile {num(row[f'{group}_q05'])} to "
            f"{num(row[f'{group}_q95'])}")


def render_matched_cosine_ranges(sources: Sources) -> str:
    """Every checkpoint's 5th–95th percentile of matched cosines (a phrase: what the catalogue calls typical)."""
    summary = sources.table("score_summary.csv")
    return "; ".join(f"`{row.checkpoint}`: {num(row.matched_q05)} to {num(row.matched_q95)}"
                     for row in summary.itertuples())


def render_dual_matched_cosine(sources: Sources) -> str:
    """The primary checkpoint's matched cosines (a phrase)."""
    summary = sources.table("score_summary.csv")
    return _cosine_spread(summary, summary["checkpoint"].iloc[0], "matched")


def render_dual_mismatched_cosine(sources: Sources) -> str:
    """The primary checkpoint's hard-negative (mismatched) cosines (a phrase)."""
    summary = sources.table("score_summary.csv")
    return _cosine_spread(summary, summary["checkpoint"].iloc[0], "mismatched")


def render_random_init_hit_rate_at_1(sources: Sources) -> str:
    """The random-init checkpoint's HitRate@1 in both directions beside chance (a phrase)."""
    metrics = sources.table("metrics.csv")
    [spec] = [spec for spec in metrics["checkpoint"].unique() if is_random_init(spec)]
    rows = metrics[(metrics["checkpoint"] == spec) & (metrics["k"] == 1)].set_index("direction")
    image, text = rows.loc["image_to_text"], rows.loc["text_to_image"]
    return (f"image → text HitRate@1 is {num(image['hit_rate'])} against a chance level of "
            f"{num(image['hit_rate_chance'])}, and its text → image HitRate@1 {num(text['hit_rate'])} against "
            f"{num(text['hit_rate_chance'])}")


# --- bench/results/*.json ----------------------------------------------------------------------------------


def render_large_jpeg(sources: Sources) -> str:
    """``bench_pipeline.py``'s large JPEGs: exact vs fast decode, speed and how far the pixels move (a phrase)."""
    result = sources.bench("pipeline")["large_jpeg"]
    paths = result["paths"]
    exact, fast, smaller = paths["exact"], paths["fast_2x"], paths["fast_1x"]
    size = "×".join(str(side) for side in fast["decoded_size"])
    return (f"{result['images']} {result['size'].replace('x', '×')} JPEGs through ViT-B/32's transform (resize side "
            f"{result['model_resize_side']}): exact decode + preprocess {exact['images_per_s']:.1f} images/s; the fast "
            f"path {fast['images_per_s']:.1f} images/s ({fast['speedup_over_exact']:.1f}×; decoded at {size}), with a "
            f"mean absolute difference of {fast['tensor_mean_abs_difference']:.4f} and a maximum of "
            f"{fast['tensor_max_abs_difference']:.3f} in the normalised input tensor (units of the per-channel std), "
            f"and a cosine between the two paths' ViT-B/32 embeddings of at least "
            f"1 − {exponent(1 - fast['embedding_cosine_min'])} (random-init weights). Keeping only 1× the resize side "
            f"({'×'.join(str(side) for side in smaller['decoded_size'])}) was faster "
            f"({smaller['speedup_over_exact']:.1f}×) but moved the tensor up to "
            f"{smaller['tensor_max_abs_difference']:.2f}")


def _decode_candidates(sources: Sources, model: str) -> dict[str, dict]:
    return sources.bench("speed")["decode"]["models"][model]["candidates"]


EXACT_DECODE = "exact (Pillow)"
FAST_DECODE = "fast: Pillow draft (the pipeline's)"
TENSOR_DECODER = "--decoder torchvision (tensor transform)"


def render_small_input_decode_difference(sources: Sources) -> str:
    """How far the reduced-scale decoders move the dual encoder's 48-pixel input, against large photos (a phrase)."""
    moved = [row["tensor_max_abs_difference"] for row in _decode_candidates(sources, "dual").values()
             if not row["within_tolerance"]]
    large = sources.bench("pipeline")["large_jpeg"]
    return (f"up to {max(moved):.3f}, where {large['size'].replace('x', '×')} photos through "
            f"{large['model_resize_side']} stayed under {large['paths']['fast_2x']['tensor_max_abs_difference']:.3f}")


def render_small_input_fast_decode_speedup(sources: Sources) -> str:
    """The fast path's speed over the exact path at the dual encoder's 48 pixels, one core (a phrase)."""
    candidates = _decode_candidates(sources, "dual")
    ratio = candidates[FAST_DECODE]["images_per_s_one_core"] / candidates[EXACT_DECODE]["images_per_s_one_core"]
    return f"{ratio:.1f}×"


def _tensor_decoder_over_pillow(sources: Sources, model: str) -> float:
    candidates = _decode_candidates(sources, model)
    return candidates[TENSOR_DECODER]["images_per_s_one_core"] / candidates[EXACT_DECODE]["images_per_s_one_core"]


def render_tensor_decoder_speed(sources: Sources) -> str:
    """``--decoder torchvision`` against Pillow's exact path on one core (a phrase)."""
    return (f"{_tensor_decoder_over_pillow(sources, 'dual'):.2f}× Pillow for the dual encoder and "
            f"{_tensor_decoder_over_pillow(sources, 'vit_b32 open_clip'):.2f}× through open_clip's `Compose`")


def render_tensor_decoder_difference(sources: Sources) -> str:
    """How far ``--decoder torchvision``'s tensors are from Pillow's for the ``Compose`` transforms (a phrase)."""
    moved = [_decode_candidates(sources, model)[TENSOR_DECODER]["tensor_max_abs_difference"]
             for model in ("dual", "vit_b32 open_clip")]
    return f"max difference {moved[0]:.3f} and {moved[1]:.3f}"


def render_clip_benchmark_ratios(sources: Sources) -> str:
    """Our retrieval's speed over CLIP_benchmark's at both sizes measured (a phrase)."""
    small, large = sources.bench("pipeline")["clip_benchmark"], sources.bench("speed")["peer"]
    return (f"{small['speedup_pipeline_over_clip_benchmark']:.2f}× at {small['images']:,} images "
            f"(`pipeline.json`) and {large['speedup_pipeline_over_clip_benchmark']:.2f}× at {large['images']:,} "
            f"(`speed.json`)")


def render_dual_best_layout(sources: Sources) -> str:
    """The dual encoder's best layout over min(model-only, decode × cores) (a phrase)."""
    configs = sources.bench("speed")["dual_pipeline"]["configs"].values()
    return f"{max(config['over_min_model_decode_x_cores'] for config in configs):.2f}"


def render_dual_second_core_gain(sources: Sources) -> str:
    """What the dual encoder's model alone gains from the second core (a phrase)."""
    dual = sources.bench("speed")["dual_pipeline"]
    return f"{dual['model_only_pairs_per_s_all_cores'] / dual['model_only_pairs_per_s_one_core']:.2f}×"


def render_dual_training_machine(sources: Sources) -> str:
    """The machine ``make bench-train`` trained on: threads, cores, OpenMP's policy, load (a phrase)."""
    result = sources.bench("train_dual")
    policy = "OpenMP's default policy" if result["omp_wait_policy"] is None else \
        f"OMP_WAIT_POLICY={result['omp_wait_policy']}"
    return (f"{result['threads']} threads on this {result['cpu_count']}-core machine, {policy}, "
            f"load average {result['loadavg_start'][0]:.1f} → {result['train']['loadavg_end'][0]:.1f}")


def render_dual_relation_accuracy(sources: Sources) -> str:
    """The trained dual encoder's hard-negative accuracy on swapped relations, all test scenes (a phrase)."""
    [row] = [row for row in sources.bench("train_dual")["evaluate"]["hard_negatives"]
             if row["negative_kind"] == "relation" and row["subset"] == "all"]
    return num(row["accuracy"])


def _float16_parts(sources: Sources) -> list[dict]:
    result = sources.bench("finder_float16")
    return [result["scenes"]["text_to_image"], result["scenes"]["image_to_image"],
            result["synthetic"]["text_like_queries"]]


def render_float16_score_change(sources: Sources) -> str:
    """The largest change float16 storage makes to a cosine (a phrase)."""
    return exponent(max(part["max_score_change"] for part in _float16_parts(sources)))


def render_float16_top10_agreement(sources: Sources) -> str:
    """How often float16 keeps a query's top-10 set, and how much of it the others keep (a phrase)."""
    parts = _float16_parts(sources)
    kept = [(part["mean_top10_overlap"] - part["top10_same_set"]) / (1 - part["top10_same_set"]) * 10
            for part in parts if part["top10_same_set"] < 1]
    return (f"{_percent(min(part['top10_same_set'] for part in parts))} of the queries or more, the others share "
            f"{_span(kept, lambda value: f'{value:.1f}')} of their 10 items on average")


def render_float16_recall(sources: Sources) -> str:
    """The scenes' test Recall@10 from float32 and from float16 vectors (a phrase)."""
    recall = sources.bench("finder_float16")["scenes"]["recall_at_10_test"]
    return f"goes from {recall['float32']:.4f} to {recall['float16']:.4f}"


def render_finder_exact_limit(sources: Sources) -> str:
    """Up to how many vectors exact search's p50 stayed under the latency limit, and from where it did not."""
    result = sources.bench("finder")
    over = [entry["n"] for entry in result["exact_latency_curve"]
            if entry["float32"]["p50_ms"] >= result["latency_limit_ms"]]
    limit = f"{result['exact_under_limit_up_to']:,}"
    return f"holds up to {limit} vectors and fails from {min(over):,} on" if over else \
        f"holds over the whole curve, up to {limit} vectors"


def _approximate_indexes(result: dict) -> list[dict]:
    return [index for size in result["sizes"] for index in (size["approximate"], *size.get("smaller_budgets", []))]


def render_finder_approximate_speed(sources: Sources) -> str:
    """The approximate indexes' latency, recall and build time over every size measured (a phrase)."""
    indexes = _approximate_indexes(sources.bench("finder"))
    latency = _span([index["latency"]["p50_ms"] for index in indexes], lambda value: f"{value:.2f}", " ms")
    recall = _span([index["recall_at_10"] for index in indexes], lambda value: f"{value:.3f}")
    build = _span([index["build_s"] for index in indexes], _seconds, " s")
    return f"{latency} (p50) at recall@10 {recall}, after a build of {build}"


def render_finder_float16_search_cost(sources: Sources) -> str:
    """Exact search over the float16 file against float32 in memory, at the rule's limit (a phrase)."""
    result = sources.bench("finder")
    [size] = [size for size in result["sizes"] if size["n"] == result["exact_up_to"]]
    exact = size["exact"]
    return (f"{exact['float16']['p50_ms'] / exact['float32']['p50_ms']:.1f} times as long at "
            f"{result['exact_up_to']:,}")


def render_finder_ivf_million(sources: Sources) -> str:
    """The IVF-Flat index at the largest size: build time and one query's latency (a phrase)."""
    largest = sources.bench("finder")["sizes"][-1]
    index = largest["approximate"]
    return (f"builds in {_seconds(index['build_s'])} s and answers one query in {index['latency']['p50_ms']:.2f} ms "
            f"(p50, `{index['params']['factory']}` over {largest['n']:,} vectors)")


def _ray_runs(sources: Sources, executor: str) -> list[dict]:
    return [entry["best"][executor] for entry in sources.bench("sharded")["models"].values()]


def render_ray_start(sources: Sources) -> str:
    """Starting a local Ray cluster in a run (``ray.init``), over the benchmark's models (a phrase)."""
    return _span([run["cluster_start_s"] for run in _ray_runs(sources, "ray")], _seconds, " s")


def render_ray_join(sources: Sources) -> str:
    """Joining a running Ray cluster, over the benchmark's models (a phrase)."""
    return _span([run["cluster_start_s"] for run in _ray_runs(sources, "ray_running_cluster")], _seconds, " s")


def render_zero_shot_model_limit(sources: Sources) -> str:
    """``classify``'s image stage over the model-only limit, and its one-off class embeddings (a phrase)."""
    result = sources.bench("zero_shot")
    summary, threads = result["summary"], result["config"]["threads"]
    loads = _span(summary["loadavg_1min_at_round_start"], lambda value: f"{value:.1f}")
    decode = pd.Series([entry["job"]["stages"]["image_decode"]["wall_s"] / entry["job"]["image_stage_s"]
                        for entry in result["rounds"]]).median()
    return (f"{summary['ratio_median']:.2f} of the model-only limit (the median of {len(result['rounds'])} "
            f"alternating rounds, lowest {summary['ratio_min']:.2f}: {summary['job_images_per_s_median']:.1f} vs "
            f"{summary['model_only_images_per_s_median']:.1f} images/s on {threads} torch "
            f"thread{'' if threads == 1 else 's'}, load average {loads} on {result['machine']['cpu_count']} "
            f"shared cores; {summary['ratio_cpu_median']:.2f} in CPU seconds), decoding {_percent(decode)} of "
            f"it; the class embeddings of "
            f"{result['classes']} classes × {result['templates']} templates took "
            f"{_seconds(summary['class_embeddings_s_median'])} s once and the whole job "
            f"{_seconds(summary['job_wall_s_median'])} s")


def render_hostile_run(sources: Sources) -> str:
    """``bench_hostile.py``: the hostile run beside the good shard alone, and the libraries' floor (a phrase)."""
    result = sources.bench("hostile")
    hostile, honest, floors = result["hostile"], result["honest"]["median"], result["floors"]
    wrong = [name for name, found in hostile["inputs"].items() if not found["as_expected"]]
    torch, skipped, libraries = floors["import_torch"], floors["import_torch_exit_skipped"], floors["model_libraries"]
    run, machine = hostile["median"], result["machine"]
    return (f"{run['wall_s']:.1f} s and a peak RSS of {run['peak_rss_mb']:,.0f} MB ({run['peak_anon_mb']:,.0f} MB "
            f"of it anonymous) over the {len(hostile['inputs']) - 1} hostile shards and the good one, against "
            f"{honest['wall_s']:.1f} s and {honest['peak_rss_mb']:,.0f} MB ({honest['peak_anon_mb']:,.0f} MB) for "
            f"the good shard alone (medians of {result['config']['repeats']} alternating runs, load average "
            f"{machine['loadavg_start'][0]:.1f} on {machine['cpu_count']} cores); "
            + ("every input gave what it should" if not wrong else f"not as expected: {', '.join(wrong)}")
            + (" and none was changed" if hostile["inputs_untouched"] else ", and the inputs were changed")
            + f". Under both lies the libraries' floor: `import torch` alone (torch {machine['torch']}) peaks at "
            f"{torch['peak_rss_mb']:,.0f} MB ({torch['peak_anon_mb']:,.0f} MB anonymous), "
            f"{torch['peak_rss_mb'] - skipped['peak_rss_mb']:,.0f} MB of it library pages touched only as the "
            f"interpreter exits, and importing what a run needs before it reads a shard (torch, pandas, pyarrow, "
            f"transformers' CLIP) {libraries['peak_rss_mb']:,.0f} MB ({libraries['peak_anon_mb']:,.0f} MB anonymous), "
            f"{'above' if libraries['peak_rss_mb'] > 1024 else 'under'} 1 GB before a shard is read")


PROSE_RENDERERS: dict[str, Callable[[Sources], str]] = {
    "self_label_hit_rate_bias": render_self_label_hit_rate_bias,
    "self_label_mrr_bias": render_self_label_mrr_bias,
    "classifier_label_quality": render_classifier_label_quality,
    "matched_cosine_ranges": render_matched_cosine_ranges,
    "dual_matched_cosine": render_dual_matched_cosine,
    "dual_mismatched_cosine": render_dual_mismatched_cosine,
    "random_init_hit_rate_at_1": render_random_init_hit_rate_at_1,
    "large_jpeg": render_large_jpeg,
    "small_input_decode_difference": render_small_input_decode_difference,
    "small_input_fast_decode_speedup": render_small_input_fast_decode_speedup,
    "tensor_decoder_speed": render_tensor_decoder_speed,
    "tensor_decoder_difference": render_tensor_decoder_difference,
    "clip_benchmark_ratios": render_clip_benchmark_ratios,
    "dual_best_layout": render_dual_best_layout,
    "dual_second_core_gain": render_dual_second_core_gain,
    "dual_training_machine": render_dual_training_machine,
    "dual_relation_accuracy": render_dual_relation_accuracy,
    "float16_score_change": render_float16_score_change,
    "float16_top10_agreement": render_float16_top10_agreement,
    "float16_recall": render_float16_recall,
    "finder_exact_limit": render_finder_exact_limit,
    "finder_approximate_speed": render_finder_approximate_speed,
    "finder_float16_search_cost": render_finder_float16_search_cost,
    "finder_ivf_million": render_finder_ivf_million,
    "ray_start": render_ray_start,
    "ray_join": render_ray_join,
    "hostile_run": render_hostile_run,
    "zero_shot_model_limit": render_zero_shot_model_limit,
    **SEARCH_CLI_RENDERERS,
}
