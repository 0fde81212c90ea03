"""Benchmark fine-tuning steps: steps/s and peak memory per mode (full, LiT, adapters), two model sizes.

    .venv/bin/python bench/bench_finetune.py [--steps 4] [--device cpu] [--out bench/results/finetune.json]

For each model and mode, :func:`clipeval.train.finetune.finetune` runs ``--steps`` optimizer steps
on synthetic photos with captions (no validation set), and the JSON records steps/s over the steps
after the first (which also allocates and warms up), the first step's seconds, and the peak RSS
(psutil, sampled while the run lasts: loading, data preparation and saving included; it is
the process's RSS, so memory an earlier run left allocated counts too: compare modes on CUDA, where
the peak is reset per run) and peak CUDA memory of the whole run. Models:

* ``dual``: the offline dual encoder (``outputs/offline/models/dual`` when trained, else the same
  architecture at its default size, random) at 48 px;
* ``vit-b32``: transformers CLIP ViT-B/32 at its real size (151M parameters, 224 px), random init.

The machine may be shared (several jobs on two cores here): the JSON records the load average at the
start and end, and timings on a busy machine are upper bounds. ``bench/gpu_check.py`` times the same
steps on CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bench_pipeline import build_hf_vit_b32, machine_info, pairs_table, photos, save_report
from clipeval.data.sources import read_pairs
from clipeval.embed.stats import StageTimer
from clipeval.models.dual import DualEncoderConfig, build_dual_encoder, save_dual
from clipeval.paths import OUTPUTS_DIR, PROJECT_ROOT
from clipeval.train.finetune import finetune
from clipeval.train.options import MODES, FinetuneConfig

TRAINED_DUAL = OUTPUTS_DIR / "offline" / "models" / "dual"


def dual_spec(folder: Path, captions: list[str]) -> str:
    """The trained offline dual encoder, or the same architecture random when it is not trained yet."""
    if (TRAINED_DUAL / "model.safetensors").is_file():
        return f"dual:{TRAINED_DUAL}"
    torch.manual_seed(0)
    model, tokenizer = build_dual_encoder(DualEncoderConfig(image_size=48), captions)
    return f"dual:{save_dual(model, tokenizer, folder)}"


def time_modes(spec: str, pairs, out: Path, steps: int, batch_size: int, device: str) -> dict:
    """Fine-tune ``spec`` for ``steps`` steps in every mode; steps/s and peak memory of each."""
    results = {}
    for mode in MODES:
        timer = StageTimer(torch.device(device))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        config = FinetuneConfig(mode=mode, steps=steps, batch_size=batch_size, lr=1e-5, device=device,
                                progress=False)
        with timer.stage("finetune", items=steps):
            history = finetune(spec, pairs, out / mode, config).history
        stage = timer.summary()["stages"]["finetune"]
        results[mode] = {"steps": steps, "micro_batch": history["micro_batch_size"],
                         "steps_per_s": history["steps_per_s"], "first_step_s": history["first_step_seconds"],
                         "pairs_per_s": history["steps_per_s"] * history["micro_batch_size"],
                         "trainable_parameters": history["trainable_parameters"],
                         "total_parameters": history["total_parameters"], "run_wall_s": stage["wall_s"],
                         "peak_rss_mib": stage["peak_rss_mib"], "peak_gpu_mib": stage["peak_gpu_mib"]}
        print(f"{spec} {mode}: {results[mode]['steps_per_s']:.3f} steps/s", flush=True)
    return results


def table(report: dict) -> str:
    lines = ["| model | mode | trainable / total params | steps/s | pairs/s | first step (s) | peak RSS (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, modes in report["models"].items():
        for mode, row in modes.items():
            lines.append(f"| {model} | {mode} | {row['trainable_parameters'] / 1e6:.2f}M / "
                         f"{row['total_parameters'] / 1e6:.1f}M | {row['steps_per_s']:.2f} | {row['pairs_per_s']:.1f} "
                         f"| {row['first_step_s']:.1f} | {row['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per model and mode")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--images", type=int, default=64, help="synthetic training photos")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. that the machine is shared)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "finetune.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"config": {key: value for key, value in vars(args).items() if key != "out"},
              "machine": machine_info(), "note": args.note, "models": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        refs = photos(temp / "photos", args.images)
        table_path = temp / "pairs.csv"
        pairs_table(refs, 1).to_csv(table_path, index=False)
        pairs = read_pairs(table_path)
        specs = {"dual": dual_spec(temp / "dual", pairs["caption"].tolist()),
                 "vit-b32": build_hf_vit_b32(temp / "hf-b32")}
        report["specs"] = {"dual": specs["dual"].replace(f"{PROJECT_ROOT}/", ""),
                           "vit-b32": "hf:<ViT-B/32 random init>"}
        for name, spec in specs.items():
            report["models"][name] = time_modes(spec, pairs, temp / "runs" / name, args.steps, args.batch_size,
                                                args.device)
    save_report(report, args.out, started, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
