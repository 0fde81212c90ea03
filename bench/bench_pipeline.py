"""Benchmark the embedding pipeline: every figure a ratio measured side by side, in one run.

    python bench/bench_pipeline.py [--out bench/results/pipeline.json] [--pairs 96]

Sections (each on the same data and model as its reference, built in a temporary folder):

* ``model_limit``: scoring pairs/s (``score --pairs``'s one-shard run, cache off, model load excluded; best of
  two runs) over the model-only limit (best of two): the same distinct images, preprocessed
  beforehand, and the same captions through the same encoder, batch size and torch threads.
  At ViT-B/32's real size (random init, transformers format) and on the dual encoder's
  architecture (random init), with 0 decode processes (the CPU default: decode in this
  process, the model gets every core) and 1 process (the model gets the cores left); the dual
  encoder also with the fast decode.
* ``naive_loop``: a per-row loop (read, decode, preprocess, encode one pair at a time) vs
  the one-shard run on COCO-shaped pairs (5 captions per image), ViT-B/32.
* ``torchmetrics``: torchmetrics' ``CLIPScore`` on the same transformers model and pairs, the
  per-sample scores (before its clamp at 0 and mean) checked against ours.
* ``clip_benchmark``: CLIP_benchmark's ``zeroshot_retrieval.evaluate`` on the same open_clip
  ViT-B/32 (random init) and set, its recalls checked against our HitRate@k.
* ``cache``: cold vs warm run of the offline notebooks' scoring and retrieval work
  (``steps.score`` + ``steps.retrieve`` on the scenes test split, the random BERT-base +
  ResNet-50 baseline and the dual encoder's architecture).
* ``memory``: peak RSS of a scoring run of 5k vs 50k pairs, each in a fresh process
  (tiny open_clip checkpoint, so the table, not the model, is what grows).
* ``large_jpeg``: decode + preprocess images/s for 4000x3000 JPEGs, exact vs the fast path at
  1x and 2x the model's resize side, with the deviation of the normalised tensors and the
  cosine between the two paths' ViT-B/32 embeddings.

Needs ``bench/requirements.txt`` (``make bench`` installs it) and ``make data`` (the scenes).
Writes the JSON atomically with paths relative to the project, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch
from PIL import Image
from skimage import data as sample_images

from clipeval.atomic import write_json
from clipeval.data.images import decode_image, read_image
from clipeval.embed.engine import batches, encode_pixels
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.models.registry import load_encoder
from clipeval.paths import DATA_DIR, PROJECT_ROOT, project_relative
from clipeval.pipeline.options import ShardOptions
from clipeval.pipeline.run import score_pairs_table

SOURCES = ("astronaut", "chelsea", "coffee")
WORDS = ("a", "red", "small", "photo", "of", "cat", "astronaut", "cup", "near", "the", "window", "table", "two",
         "people", "standing", "next", "to", "blue", "car", "street", "at", "night", "with", "dog")


# --- data and checkpoints ------------------------------------------------------------------------------------------

def photos(folder: Path, n: int, size=(640, 480), seed: int = 0, quality: int = 90) -> list[str]:
    """``n`` distinct JPEG photos (random crops, flips and tints of skimage's sample photos)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases = [Image.fromarray(getattr(sample_images, name)()).convert("RGB") for name in SOURCES]
    refs = []
    for i in range(n):
        base = bases[i % len(bases)]
        scale = rng.uniform(1.0, 1.6)
        big = base.resize((int(size[0] * scale), int(size[1] * scale)), Image.BICUBIC)
        left, top = rng.integers(0, big.width - size[0] + 1), rng.integers(0, big.height - size[1] + 1)
        pixels = np.asarray(big.crop((left, top, left + size[0], top + size[1])), dtype=np.float32)
        pixels = pixels * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 4, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"photo{i:05d}.jpg"
        image.save(path, "JPEG", quality=quality)
        refs.append(str(path))
    return refs


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(6, 14))) + f" number {i}" for i in range(n)]


def pairs_table(refs: list[str], per_image: int, seed: int = 0) -> pd.DataFrame:
    texts = captions(len(refs) * per_image, seed)
    return pd.DataFrame({"image": [ref for ref in refs for _ in range(per_image)], "caption": texts})


def build_hf_vit_b32(folder: Path) -> str:
    """ViT-B/32 at its real size (transformers' CLIPConfig defaults), random init, saved with tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from clipeval.models.tiny import build_clip_tokenizer

    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    return f"hf:{folder}"


def build_open_clip_vit_b32(folder: Path) -> str:
    import open_clip

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), folder / "weights.pt")
    return f"open_clip:ViT-B-32@{folder / 'weights.pt'}"


def build_dual(folder: Path) -> str:
    from clipeval.models.dual import DualEncoderConfig, build_dual_encoder, save_dual

    torch.manual_seed(0)
    model, tokenizer = build_dual_encoder(DualEncoderConfig(), captions(500))
    save_dual(model, tokenizer, folder)
    return f"dual:{folder}"


# --- measurements --------------------------------------------------------------------------------------------------

def quiet(**overrides) -> EmbedOptions:
    return EmbedOptions(**{"progress": False, "device": "cpu", "embedding_cache": False, **overrides})


def timed_score(pairs: pd.DataFrame, spec: str, options: EmbedOptions):
    """``score --pairs``'s wall seconds (a one-shard run into a fresh folder, its files written) without the model
    load (which the stats time separately)."""
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        run = score_pairs_table(run_dir, pairs, [spec], ShardOptions(), options)
        wall = time.perf_counter() - start
    return run, wall - run.stats["checkpoints"][spec]["stages"]["model_load"]["wall_s"]


def model_only_seconds(encoder, pairs: pd.DataFrame, batch_size: int, repeats: int = 2) -> float:
    """The same distinct images (preprocessed beforehand) and captions through the encoder (best of ``repeats``)."""
    refs = list(dict.fromkeys(pairs["image"]))
    pixels = torch.stack([encoder.preprocess(read_image(ref).image) for ref in refs])
    texts = list(dict.fromkeys(pairs["caption"]))
    encode_pixels(encoder, pixels[:batch_size], batch_size)  # warm-up
    encoder.encode_texts(texts[:batch_size])
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode_pixels(encoder, pixels, batch_size)
        for part in batches(len(texts), batch_size):
            encoder.encode_texts(texts[part])
        walls.append(time.perf_counter() - start)
    return min(walls)


def model_limit(spec: str, pairs: pd.DataFrame, batch_size: int,
                configs=({"decode_processes": 0}, {"decode_processes": 1}), device: str = "cpu") -> dict:
    """Per decode setting (``EmbedOptions`` fields: decode processes, fast decode, decoder): the pipeline's pairs/s
    over the model-only limit at the same threads."""
    result = {"spec_kind": spec.split(":")[0], "device": device, "pairs": len(pairs), "batch_size": batch_size,
              "configs": {}}
    threads = torch.get_num_threads()
    for config in configs:
        processes, fast = config.get("decode_processes", 0), config.get("fast_decode", False)
        decoder = config.get("decoder", "pillow")
        torch.set_num_threads(max(1, threads - processes))
        limit = model_only_seconds(load_encoder(spec, device=device, progress=False), pairs, batch_size)
        torch.set_num_threads(threads)
        options = quiet(batch_size=batch_size, decode_processes=processes, fast_decode=fast, decoder=decoder,
                        device=device)
        timed_score(pairs.iloc[:batch_size], spec, options)  # warm-up
        pipeline = min(timed_score(pairs, spec, options)[1] for _ in range(2))  # best of 2, as the limit
        name = (f"torchvision decoder on {device}" if decoder == "torchvision"
                else f"{processes} decode process(es){', fast decode' if fast else ''}")
        result["configs"][name] = {
            "decode_processes": processes, "fast_decode": fast, "decoder": decoder,
            "encoder_threads": max(1, threads - processes),
            "model_only_pairs_per_s": len(pairs) / limit, "pipeline_pairs_per_s": len(pairs) / pipeline,
            "ratio_pipeline_over_model_only": limit / pipeline}
    return result


def naive_loop(spec: str, pairs: pd.DataFrame, n_naive: int, batch_size: int) -> dict:
    encoder = load_encoder(spec, device="cpu", progress=False)
    subset = pairs.iloc[:n_naive]
    start = time.perf_counter()
    for ref, caption in zip(subset["image"], subset["caption"]):
        image = encoder.encode_images(encoder.preprocess(read_image(ref).image)[None])
        float(image[0] @ encoder.encode_texts([caption])[0])
    naive = (time.perf_counter() - start) / len(subset)
    _, pipeline = timed_score(pairs, spec, quiet(batch_size=batch_size))
    return {"pairs": len(pairs), "captions_per_image": int(pairs.groupby("image").size().iloc[0]),
            "naive_pairs_timed": len(subset), "naive_pairs_per_s": 1 / naive,
            "pipeline_pairs_per_s": len(pairs) / pipeline, "speedup_pipeline_over_naive": naive * len(pairs) / pipeline}


class Transformers5Features(torch.nn.Module):
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers 5 returns an
    output object whose ``pooler_output`` is that tensor. Nothing else changes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def torchmetrics_clipscore(spec: str, pairs: pd.DataFrame, batch_size: int) -> dict:
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update, _get_clip_model_and_processor
    from transformers import CLIPModel, CLIPProcessor

    folder = spec.removeprefix("hf:")
    model, processor = _get_clip_model_and_processor(lambda: (
        Transformers5Features(CLIPModel.from_pretrained(folder).eval()), CLIPProcessor.from_pretrained(folder)))
    start = time.perf_counter()
    theirs = []
    for part in batches(len(pairs), batch_size):
        images = [torch.from_numpy(np.array(read_image(ref).image)).permute(2, 0, 1)
                  for ref in pairs["image"].iloc[part]]
        with torch.inference_mode():
            score, _ = _clip_score_update(images, pairs["caption"].iloc[part].tolist(), model, processor)
        theirs.append(score.detach())
    their_wall = time.perf_counter() - start
    run, ours_wall = timed_score(pairs, spec, quiet(batch_size=batch_size))
    ours = 100 * run.results["similarity"].to_numpy()
    difference = np.abs(ours - torch.cat(theirs).numpy())
    return {"pairs": len(pairs), "torchmetrics_pairs_per_s": len(pairs) / their_wall,
            "pipeline_pairs_per_s": len(pairs) / ours_wall,
            "speedup_pipeline_over_torchmetrics": their_wall / ours_wall,
            "max_abs_difference_100cos": float(difference.max()), "scores_agree_1e-3": bool(difference.max() < 1e-3)}


def clip_benchmark_retrieval(spec: str, refs: list[str], per_image: int, batch_size: int) -> dict:
    import open_clip
    from clip_benchmark.metrics import zeroshot_retrieval

    from clipeval.data.retrieval_sets import retrieval_set_from_pairs
    from clipeval.embed.engine import embed_set
    from clipeval.eval.retrieval import evaluate_retrieval
    from clipeval.metrics.ranking import retrieve_both_directions
    from clipeval.metrics.retrieval import per_query_metrics

    pairs = pairs_table(refs, per_image, seed=1)
    model_name, weights = spec.removeprefix("open_clip:").split("@")
    model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    texts = [pairs["caption"].iloc[i * per_image:(i + 1) * per_image].tolist() for i in range(len(refs))]
    loader = [(torch.stack([transform(read_image(ref).image) for ref in refs[part]]), texts[part])
              for part in batches(len(refs), batch_size)]
    start = time.perf_counter()
    theirs = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    their_wall = time.perf_counter() - start
    dataset = retrieval_set_from_pairs(pairs, "bench")
    encoder = load_encoder(spec, device="cpu", progress=False)
    start = time.perf_counter()  # the same work: embed (decode included), rank, metrics; no model load
    embedded = embed_set(encoder, dataset, EmbedOptions(batch_size=batch_size, embedding_cache=False, progress=False))
    for result in retrieve_both_directions(embedded.texts, embedded.images, dataset.relevant, k=10).values():
        per_query_metrics(result.ranks, (1, 5, 10))
    ours_wall = time.perf_counter() - start
    report = evaluate_retrieval(dataset, [spec], RetrievalOptions(n_resamples=10),
                                quiet(batch_size=batch_size))
    metrics = report.metrics.set_index(["direction", "k"])["hit_rate"]
    agreement = {}
    for k in (1, 5, 10):
        agreement[f"text_to_image@{k}"] = (metrics[("text_to_image", k)], theirs[f"image_retrieval_recall@{k}"])
        agreement[f"image_to_text@{k}"] = (metrics[("image_to_text", k)], theirs[f"text_retrieval_recall@{k}"])
    return {"images": len(refs), "texts": len(pairs), "clip_benchmark_wall_s_excluding_decode": their_wall,
            "pipeline_wall_s_including_decode": ours_wall,
            "hit_rate_ours_vs_theirs_note": "CLIP_benchmark's recall@k is HitRate@k (a relevant item in the top k)",
            "speedup_pipeline_over_clip_benchmark": their_wall / ours_wall,
            "hit_rate_ours_vs_theirs": {key: [float(a), float(b)] for key, (a, b) in agreement.items()},
            "metrics_agree_1e-6": all(abs(a - b) < 1e-6 for a, b in agreement.values())}


def cache_cold_vs_warm(folder: Path, dual_spec: str, n_pairs: int) -> dict:
    from clipeval.data.options import RetrievalSource
    from clipeval.jobs import steps

    scenes = DATA_DIR / "generated" / "scenes"
    subset = pd.read_csv(scenes / "pairs_test.csv").head(n_pairs)
    subset["image"] = [str(scenes / ref) for ref in subset["image"]]
    subset.to_csv(folder / "pairs.csv", index=False)
    checkpoints = [dual_spec, "baseline:bert-resnet50-random"]
    embed = EmbedOptions(device="cpu", progress=False)
    source = RetrievalSource("scenes", pairs=str(folder / "pairs.csv"))
    env_before = os.environ.get("CLIPEVAL_EMBEDDING_CACHE")
    os.environ["CLIPEVAL_EMBEDDING_CACHE"] = str(folder / "cache")
    walls = {}
    try:
        for attempt in ("cold", "warm"):
            start = time.perf_counter()
            steps.score(folder / attempt / "score", str(folder / "pairs.csv"), checkpoints, embed=embed)
            steps.retrieve(folder / attempt / "retrieve", checkpoints, source,
                           options=RetrievalOptions(n_resamples=200), embed=embed)
            walls[attempt] = time.perf_counter() - start
    finally:
        if env_before is None:
            os.environ.pop("CLIPEVAL_EMBEDDING_CACHE")
        else:
            os.environ["CLIPEVAL_EMBEDDING_CACHE"] = env_before
    same = all(pd.read_csv(folder / "cold" / name).equals(pd.read_csv(folder / "warm" / name))
               for name in ("score/results.csv", "retrieve/metrics.csv"))
    stats = json.loads((folder / "warm" / "score" / "stats.json").read_text())
    return {"pairs": n_pairs, "checkpoints": ["dual (random init)", checkpoints[1]],
            "cold_wall_s": walls["cold"], "warm_wall_s": walls["warm"],
            "speedup_warm_over_cold": walls["cold"] / walls["warm"], "outputs_identical": same,
            "warm_cache_counts": [entry["cache"] for entry in stats["checkpoints"].values()]}


_MEMORY_RUN = r"""
import re, sys, pandas as pd
from pathlib import Path
from clipeval.embed.options import EmbedOptions
from clipeval.pipeline.options import ShardOptions
from clipeval.pipeline.run import score_pairs_table
pairs = pd.read_csv(sys.argv[1]).head(int(sys.argv[2]))
score_pairs_table(sys.argv[4], pairs, [sys.argv[3]], ShardOptions(chunk_size=1024),
                  EmbedOptions(progress=False, device="cpu", embedding_cache=False))
# VmHWM: this process's peak RSS since exec (ru_maxrss would include the forking parent's peak)
print(int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024)
"""


def peak_memory(folder: Path, spec: str, sizes=(5_000, 50_000)) -> dict:
    scenes = DATA_DIR / "generated" / "scenes"
    images = pd.read_csv(scenes / "pairs_train.csv")["image"].drop_duplicates().tolist()
    n = max(sizes)
    table = pd.DataFrame({"image": [str(scenes / images[i % len(images)]) for i in range(n)],
                          "caption": captions(n, seed=2)})
    table.to_csv(folder / "pairs.csv", index=False)
    result = {"spec": "tiny open_clip (random)", "peak_rss_bytes": {}, "wall_s": {}}
    for size in sizes:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _MEMORY_RUN, str(folder / "pairs.csv"), str(size), spec,
                              str(folder / f"run{size}")], check=True, capture_output=True, text=True)
        result["wall_s"][size] = time.perf_counter() - start
        result["peak_rss_bytes"][size] = int(out.stdout.strip().splitlines()[-1])
    peaks = result["peak_rss_bytes"]
    result["peak_rss_increase_mib"] = (peaks[max(sizes)] - peaks[min(sizes)]) / 2**20
    return result


def large_jpeg(folder: Path, spec: str, n: int) -> dict:
    refs = photos(folder / "large", n, size=(4000, 3000), seed=3)
    datas = [Path(ref).read_bytes() for ref in refs]
    encoder = load_encoder(spec, device="cpu", progress=False)
    side = encoder.input_side()
    tensors, result = {}, {"images": n, "size": "4000x3000", "model_resize_side": side, "paths": {}}
    for name, min_side in (("exact", None), ("fast_1x", side), ("fast_2x", 2 * side)):
        start = time.perf_counter()
        tensors[name] = torch.stack([encoder.preprocess(decode_image(data, min_side=min_side).image)
                                     for data in datas])
        result["paths"][name] = {"images_per_s": n / (time.perf_counter() - start),
                                 "decoded_size": list(decode_image(datas[0], min_side=min_side).image.size)}
    exact = encode_pixels(encoder, tensors["exact"])
    for name in ("fast_1x", "fast_2x"):
        difference = (tensors[name] - tensors["exact"]).abs()
        cosine = (encode_pixels(encoder, tensors[name]) * exact).sum(dim=1)
        result["paths"][name].update(
            speedup_over_exact=result["paths"][name]["images_per_s"] / result["paths"]["exact"]["images_per_s"],
            tensor_mean_abs_difference=float(difference.mean()), tensor_max_abs_difference=float(difference.max()),
            embedding_cosine_min=float(cosine.min()), embedding_cosine_mean=float(cosine.mean()))
    return result


# --- report --------------------------------------------------------------------------------------------------------

def table(report: dict) -> str:
    rows = []
    for name, section in report["model_limit"].items():
        for config, entry in section["configs"].items():
            rows.append((f"pipeline / model-only limit, {name}, {config}",
                         entry["ratio_pipeline_over_model_only"], ">= 0.9" if name == "vit_b32" else "-",
                         f"{entry['pipeline_pairs_per_s']:.1f} vs {entry['model_only_pairs_per_s']:.1f} pairs/s"))
    naive = report["naive_loop"]
    rows.append(("pipeline / naive per-row loop", naive["speedup_pipeline_over_naive"], ">= 3",
                 f"{naive['pipeline_pairs_per_s']:.1f} vs {naive['naive_pairs_per_s']:.1f} pairs/s"))
    metrics = report["torchmetrics"]
    rows.append(("pipeline / torchmetrics CLIPScore", metrics["speedup_pipeline_over_torchmetrics"], ">= 1",
                 f"max |diff| {metrics['max_abs_difference_100cos']:.1e} (100 x cos)"))
    bench = report["clip_benchmark"]
    rows.append(("pipeline / CLIP_benchmark retrieval", bench["speedup_pipeline_over_clip_benchmark"], ">= 1",
                 f"metrics agree (1e-6): {bench['metrics_agree_1e-6']}"))
    cache = report["cache"]
    rows.append(("warm / cold re-run (score + retrieve)", cache["speedup_warm_over_cold"], ">= 20",
                 f"{cache['cold_wall_s']:.1f} s -> {cache['warm_wall_s']:.1f} s"))
    memory = report["memory"]
    rows.append(("peak RSS 50k - 5k pairs (MiB)", memory["peak_rss_increase_mib"], "<= 200", ""))
    for name in ("fast_1x", "fast_2x"):
        entry = report["large_jpeg"]["paths"][name]
        rows.append((f"large JPEG decode+preprocess, {name} / exact", entry["speedup_over_exact"], ">= 3",
                     f"max |diff| {entry['tensor_max_abs_difference']:.3f}, "
                     f"min cos {entry['embedding_cosine_min']:.5f}"))
    width = max(len(row[0]) for row in rows)
    lines = [f"{'measure':<{width}}  {'value':>8}  {'target':>7}  detail"]
    lines += [f"{name:<{width}}  {value:>8.2f}  {target:>7}  {detail}" for name, value, target, detail in rows]
    return "\n".join(lines)


def machine_info() -> dict:
    """What a benchmark JSON records of the machine; ``loadavg_start`` now (the machine may be shared)."""
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "platform": platform.platform(), "loadavg_start": os.getloadavg()}


def save_report(report: dict, out: Path, started: float, table) -> dict:
    """Add the wall time and end load, write ``out`` atomically (paths project-relative), print ``table(report)``."""
    report["wall_s"] = time.perf_counter() - started
    report["machine"]["loadavg_end"] = os.getloadavg()
    report = project_relative(report)
    write_json(out, report)
    print(table(report))
    print(f"-> {project_relative(out)}  ({report['wall_s']:.0f} s)")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=96, help="pairs for the model-limit ratio at ViT-B/32 size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "pipeline.json")
    args = parser.parse_args(argv)
    report = {"config": vars(args), "machine": machine_info()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        hf_b32, open_clip_b32 = build_hf_vit_b32(temp / "hf-b32"), build_open_clip_vit_b32(temp / "oc-b32")
        dual = build_dual(temp / "dual")
        refs = photos(temp / "photos", max(args.pairs, 512))
        single = pairs_table(refs[:args.pairs], 1)
        coco_like = pairs_table(refs[:40], 5)
        report["model_limit"] = {"vit_b32": model_limit(hf_b32, single, args.batch_size),
                                 "dual_encoder": model_limit(dual, pairs_table(refs[:512], 1), args.batch_size,
                                                             ({"decode_processes": 0}, {"decode_processes": 1},
                                                              {"decode_processes": 1, "fast_decode": True}))}
        report["naive_loop"] = naive_loop(hf_b32, coco_like, 40, args.batch_size)
        report["torchmetrics"] = torchmetrics_clipscore(hf_b32, coco_like, args.batch_size)
        report["clip_benchmark"] = clip_benchmark_retrieval(open_clip_b32, refs[:40], 5, args.batch_size)
        (temp / "cache-run").mkdir()
        report["cache"] = cache_cold_vs_warm(temp / "cache-run", dual, 300)
        from clipeval.models.tiny import build_open_clip
        tiny_folder, _ = build_open_clip(temp / "tiny")
        (temp / "memory").mkdir()
        report["memory"] = peak_memory(temp / "memory", f"open_clip:{tiny_folder}")
        report["large_jpeg"] = large_jpeg(temp, hf_b32, 12)
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
