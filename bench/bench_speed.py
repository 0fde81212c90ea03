"""Benchmark the speed a user feels: the command line's start-up, a warm re-run, decoding near its limit, a peer.

    python bench/bench_speed.py [--help-runs 5] [--rounds 3] [--peer-images 1000] [--out bench/results/speed.json]

Every figure is a ratio or a time measured side by side in this one run, on photo-like 640x480
JPEGs (scikit-image's sample photos, cropped and tinted) and models at their real size, random init:

* ``cli``: ``python -m clipeval --help`` from the shell (the median of ``--help-runs`` fresh
  processes); ``score --pairs`` of 200 pairs (40 images x 5 captions, random ViT-B/32) cold into a
  fresh folder with an empty embedding cache, the same command again (a re-run: nothing to score),
  and the same pairs into another fresh folder with the cache warm.
* ``decode``: decode + preprocess images/s on one core (the median of ``--rounds`` rounds in which the candidates
  take turns) for the exact path and the candidates
  (Pillow's ``draft``: the pipeline's fast path, and at 4x the resize side; Pillow's ``reduce``;
  simplejpeg with DCT scaling; ``torchvision.io.decode_jpeg``; the ``--decoder torchvision`` path, its
  transform on tensors), for the dual encoder's 48-pixel transform and ViT-B/32's 224 (transformers' image
  processor and open_clip's ``Compose``); each
  candidate's largest difference from the exact tensors, against the fast path's documented
  tolerance (``TOLERANCE``, in units of the normalised input).
* ``dual_pipeline``: the dual encoder's ``score --pairs`` pipeline (its fast decode; 0 and 1 decode
  processes, and one encode process per core) over its limits: the model alone on both cores, the
  decode limit x cores, and the shared-core limit (model and decode on the same cores: ``cores /
  (1/model on one core + 1/decode on one core)``), in ``--rounds`` rounds that each time the model
  alone and then every layout (the medians of the rounds' ratios are reported).
* ``vit_b32_layouts``: ViT-B/32 (exact decode) scored in this process and in one encode process per
  core, alternating for ``--rounds`` rounds.
* ``peer``: retrieval over ``--peer-images`` images x 5 captions against CLIP_benchmark's
  ``zeroshot_retrieval`` on the same open_clip ViT-B/32 (fp32), both cold (embedding cache off),
  CLIP_benchmark given its images already decoded and preprocessed.

Writes the JSON atomically with paths relative to the project, and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import (
    build_dual,
    build_hf_vit_b32,
    build_open_clip_vit_b32,
    clip_benchmark_retrieval,
    machine_info,
    model_only_seconds,
    pairs_table,
    photos,
    quiet,
    save_report,
    timed_score,
)
from clipeval.data.images import decode_image
from clipeval.data.options import MAX_PIXELS
from clipeval.embed.device_decode import decode_on_device
from clipeval.embed.engine import FAST_DECODE_FACTOR, cpu_cores
from clipeval.models.registry import load_encoder
from clipeval.paths import PROJECT_ROOT

TOLERANCE = 0.05  # docs/speed.md: the fast path moved the normalised tensor by at most 0.044 on large photos


def _shell(args: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipeval", *args], check=True, capture_output=True, cwd=PROJECT_ROOT,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    return time.perf_counter() - started


def cli(folder: Path, refs: list[str], help_runs: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    helps = [_shell(["--help"]) for _ in range(help_runs)]
    pairs_path = folder / "pairs.csv"
    pairs_table(refs[:40], 5).to_csv(pairs_path, index=False)
    spec = build_hf_vit_b32(folder / "vit-b32")
    cache = {"CLIPEVAL_EMBEDDING_CACHE": str(folder / "cache")}

    def score(out: str) -> float:
        return _shell(["score", "--pairs", str(pairs_path), "--checkpoint", spec, "--out", str(folder / out),
                       "--device", "cpu", "--no-progress"], cache)

    cold, rerun, warm_cache = score("run"), score("run"), score("run-warm-cache")
    return {"help_s_median": statistics.median(helps), "help_s_all": helps, "pairs": 200, "model": "ViT-B/32",
            "cold_s": cold, "rerun_s": rerun, "warm_cache_fresh_folder_s": warm_cache,
            "cold_over_rerun": cold / rerun, "cold_over_warm_cache": cold / warm_cache}


def _candidates(encoder):
    """name -> (bytes -> the model's input tensor), each decoding as a candidate would, then the model's transform."""
    import simplejpeg
    from torchvision.io import decode_jpeg
    from torchvision.transforms.functional import to_pil_image

    keep, preprocess = FAST_DECODE_FACTOR * encoder.input_side(), encoder.preprocess

    def reduced(data: bytes) -> Image.Image:
        image = decode_image(data).image
        factor = max(1, min(image.size) // keep)
        return image.reduce(factor) if factor > 1 else image

    pillow_images = {
        "exact (Pillow)": lambda data: decode_image(data).image,
        "fast: Pillow draft (the pipeline's)": lambda data: decode_image(data, min_side=keep).image,
        "Pillow draft, 4x the side": lambda data: decode_image(data, min_side=2 * keep).image,
        "Pillow reduce": reduced,
        "simplejpeg, DCT scaling": lambda data: Image.fromarray(
            simplejpeg.decode_jpeg(data, min_height=keep, min_width=keep)),
        "torchvision decode_jpeg": lambda data: to_pil_image(decode_jpeg(torch.frombuffer(bytearray(data),
                                                                                           dtype=torch.uint8))),
    }
    return {**{name: (lambda data, image=image: preprocess(image(data))) for name, image in pillow_images.items()},
            "--decoder torchvision (tensor transform)":
                lambda data: decode_on_device([data], encoder, MAX_PIXELS)[0][0]}


def decode(refs: list[str], specs: dict[str, str], rounds: int) -> dict:
    """Per model, every candidate over the images once per round, the candidates taking turns (the machine's state
    of the moment shared by all of them); images/s from the median round."""
    datas = [Path(ref).read_bytes() for ref in refs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = {}
    try:
        for name, spec in specs.items():
            encoder = load_encoder(spec, device="cpu", progress=False)
            exact = torch.stack([encoder.preprocess(decode_image(data).image) for data in datas])
            candidates, walls, tensors = _candidates(encoder), {}, {}
            for pixels in candidates.values():
                pixels(datas[0])  # warm-up
            for _ in range(rounds):
                for candidate, pixels in candidates.items():
                    started = time.perf_counter()
                    tensors[candidate] = torch.stack([pixels(data) for data in datas])
                    walls.setdefault(candidate, []).append(time.perf_counter() - started)
            rows = {}
            for candidate in candidates:
                difference = (tensors[candidate] - exact).abs()
                rows[candidate] = {"images_per_s_one_core": len(datas) / statistics.median(walls[candidate]),
                                   "images_per_s_rounds": [len(datas) / wall for wall in walls[candidate]],
                                   "tensor_mean_abs_difference": float(difference.mean()),
                                   "tensor_max_abs_difference": float(difference.max()),
                                   "within_tolerance": bool(difference.max() <= TOLERANCE)}
            within = {key: row for key, row in rows.items() if row["within_tolerance"]}
            fastest = max(within, key=lambda key: within[key]["images_per_s_one_core"])
            result[name] = {"input_side": encoder.input_side(), "candidates": rows, "fastest_within_tolerance": fastest}
    finally:
        torch.set_num_threads(threads)
    return {"images": len(datas), "size": "640x480", "tolerance_max_abs": TOLERANCE, "models": result}


def _layouts(cores: int) -> dict[str, dict]:
    """The CPU layouts compared: EmbedOptions fields by name."""
    return {"0 decode processes": {"decode_processes": 0}, "1 decode process": {"decode_processes": 1},
            f"{cores} encode processes": {"encode_processes": cores}}


def dual_pipeline(spec: str, refs: list[str], batch_size: int, decode_per_core: float, rounds: int) -> dict:
    """The dual encoder's pipeline in each layout (fast decode) over its limits, measured round by round: each round
    times the model alone (one core, all cores) and then each layout, so a limit and the runs set against it share
    the machine's state of the moment; the ratios are the rounds' medians."""
    pairs = pairs_table(refs, 1)
    threads, cores = torch.get_num_threads(), cpu_cores()
    encoder = load_encoder(spec, device="cpu", progress=False)
    layouts = {name: quiet(batch_size=batch_size, fast_decode=True, **fields)
               for name, fields in _layouts(cores).items()}
    for options in layouts.values():
        timed_score(pairs.iloc[:batch_size], spec, options)  # warm-up
    measured = []
    for _ in range(rounds):
        limits = {}
        for used in (1, threads):
            torch.set_num_threads(used)
            limits[used] = len(pairs) / model_only_seconds(encoder, pairs, batch_size, repeats=1)
        torch.set_num_threads(threads)
        measured.append({"model_only_one_core": limits[1], "model_only_all_cores": limits[threads],
                         **{name: len(pairs) / timed_score(pairs, spec, options)[1]
                            for name, options in layouts.items()}})
    issue = [min(run["model_only_all_cores"], decode_per_core * cores) for run in measured]
    shared = [cores / (1 / run["model_only_one_core"] + 1 / decode_per_core) for run in measured]
    configs = {name: {"pairs_per_s": statistics.median(run[name] for run in measured),
                      "over_min_model_decode_x_cores": statistics.median(run[name] / limit
                                                                          for run, limit in zip(measured, issue)),
                      "over_shared_core_limit": statistics.median(run[name] / limit
                                                                   for run, limit in zip(measured, shared))}
               for name in layouts}
    return {"pairs": len(pairs), "rounds": measured, "decode_images_per_s_one_core": decode_per_core,
            "model_only_pairs_per_s_one_core": statistics.median(run["model_only_one_core"] for run in measured),
            "model_only_pairs_per_s_all_cores": statistics.median(run["model_only_all_cores"] for run in measured),
            "min_model_decode_x_cores": statistics.median(issue), "shared_core_limit": statistics.median(shared),
            "configs": configs, "encode_processes_over_best_other": _over_best_other(measured, list(layouts))}


def _over_best_other(measured: list[dict], names: list[str]) -> float:
    """The median over rounds of the encode-process layout over the fastest of the other layouts ``names``."""
    encoding = next(name for name in names if name.endswith("encode processes"))
    return statistics.median(run[encoding] / max(run[name] for name in names if name != encoding)
                             for run in measured)


def vit_b32_layouts(spec: str, refs: list[str], batch_size: int, rounds: int) -> dict:
    """ViT-B/32 (exact decode, the default) in this process against the encode processes, alternating."""
    pairs = pairs_table(refs, 1)
    cores = cpu_cores()
    layouts = {name: quiet(batch_size=batch_size, **fields) for name, fields in _layouts(cores).items()
               if name != "1 decode process"}
    for options in layouts.values():
        timed_score(pairs.iloc[:batch_size], spec, options)  # warm-up
    measured = [{name: len(pairs) / timed_score(pairs, spec, options)[1] for name, options in layouts.items()}
                for _ in range(rounds)]
    return {"pairs": len(pairs), "rounds": measured,
            "pairs_per_s": {name: statistics.median(run[name] for run in measured) for name in layouts},
            "encode_processes_over_best_other": _over_best_other(measured, list(layouts))}


def table(report: dict) -> str:
    c = report["cli"]
    lines = [f"--help {c['help_s_median']:.2f} s (median of {len(c['help_s_all'])}); 200 pairs ViT-B/32: cold "
             f"{c['cold_s']:.1f} s, re-run {c['rerun_s']:.2f} s ({c['cold_over_rerun']:.1f}x), warm cache into a "
             f"fresh folder {c['warm_cache_fresh_folder_s']:.1f} s"]
    for model, entry in report["decode"]["models"].items():
        for name, row in entry["candidates"].items():
            lines.append(f"decode {model:>8} {name:<36} {row['images_per_s_one_core']:>7.0f} img/s/core  "
                         f"max |diff| {row['tensor_max_abs_difference']:.3f}"
                         f"{'' if row['within_tolerance'] else '  (outside tolerance)'}")
    d = report["dual_pipeline"]
    for name, row in d["configs"].items():
        lines.append(f"dual pipeline, {name}, fast decode: {row['pairs_per_s']:.0f} pairs/s = "
                     f"{row['over_min_model_decode_x_cores']:.2f} x min(model, decode x cores) "
                     f"({d['min_model_decode_x_cores']:.0f}), {row['over_shared_core_limit']:.2f} x the shared-core "
                     f"limit ({d['shared_core_limit']:.0f})")
    v = report["vit_b32_layouts"]
    lines.append(f"encode processes over the best other layout: dual {d['encode_processes_over_best_other']:.2f}x, "
                 f"ViT-B/32 {v['encode_processes_over_best_other']:.2f}x "
                 f"({', '.join(f'{name} {rate:.1f}' for name, rate in v['pairs_per_s'].items())} pairs/s)")
    p = report["peer"]
    lines.append(f"retrieval {p['images']} x 5 vs CLIP_benchmark: {p['speedup_pipeline_over_clip_benchmark']:.2f}x "
                 f"(metrics agree: {p['metrics_agree_1e-6']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--help-runs", type=int, default=5)
    parser.add_argument("--decode-images", type=int, default=200)
    parser.add_argument("--pipeline-pairs", type=int, default=512)
    parser.add_argument("--vit-pairs", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "speed.json")
    args = parser.parse_args(argv)
    report = {"config": vars(args), "machine": machine_info()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        refs = photos(temp / "photos", max(args.peer_images, args.pipeline_pairs, args.decode_images))
        report["cli"] = cli(temp / "cli", refs, args.help_runs)
        dual, peer_spec = build_dual(temp / "dual"), build_open_clip_vit_b32(temp / "oc-b32")
        specs = {"dual": dual, "vit_b32 hf": f"hf:{temp / 'cli' / 'vit-b32'}", "vit_b32 open_clip": peer_spec}
        report["decode"] = decode(refs[:args.decode_images], specs, args.rounds)
        fast = report["decode"]["models"]["dual"]["candidates"]["fast: Pillow draft (the pipeline's)"]
        report["dual_pipeline"] = dual_pipeline(dual, refs[:args.pipeline_pairs], args.batch_size,
                                                fast["images_per_s_one_core"], args.rounds)
        report["vit_b32_layouts"] = vit_b32_layouts(specs["vit_b32 hf"], refs[:args.vit_pairs], args.batch_size,
                                                    args.rounds)
        report["peer"] = clip_benchmark_retrieval(peer_spec, refs[:args.peer_images], 5, args.batch_size)
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
