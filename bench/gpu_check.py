"""The prepared GPU check (``make gpu-check``): the reduced rehearsal on CUDA in three precisions, and the pipeline.

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--device cuda]

1. The reduced rehearsal of the test suite (:func:`clipeval.rehearsal.reduced.reduced_rehearsal`: the
   paper profile's notebooks on a small hub mirror) on CUDA in fp32, with the open_clip SigLIP and RN50
   tags, a transformers CLIP and the pretrained baseline; then notebook 02 (pair scores) again in fp16
   and in bf16 on the same pairs.
2. Checks, each a line of the report and a reason to exit 1: every notebook ran; each precision's
   cosines agree with fp32 on every pair and checkpoint within :data:`TOLERANCES` (max |difference|);
   every checkpoint's ``stats.json`` records a peak CUDA memory.
3. The pipeline on CUDA: ViT-B/32 at its real size, scoring pairs/s over the model-only limit (the
   same images preprocessed beforehand and the same captions through the same encoder), with Pillow
   in 0 and 4 decode processes and with the torchvision decoder (nvJPEG, batched, and the transform
   on the GPU) (``bench_pipeline.model_limit``); and how far the torchvision decoder's input tensors
   are from Pillow's on the same 64 photos (reported, not a reason to fail: nvJPEG's IDCT is not
   libjpeg-turbo's).
4. Fine-tuning on CUDA: a few steps of each mode (full, LiT, adapters) of the same ViT-B/32 under bf16
   autocast, steps/s and peak CUDA memory (``bench_finetune.time_modes``).

Exits 2 when no CUDA device is visible. Meant to take under 8 minutes on one GPU; writes the JSON the
docs' GPU table is generated from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench_finetune import time_modes
from bench_pipeline import build_hf_vit_b32, machine_info, model_limit, pairs_table, photos, save_report
from clipeval.data.sources import read_pairs
from clipeval.paths import PROJECT_ROOT
from clipeval.rehearsal.reduced import reduced_rehearsal
from clipeval.runs.notebooks import run_notebooks

CHECKPOINTS = ["hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-16-SigLIP@webli", "open_clip:RN50@openai",
               "baseline:bert-resnet50"]
# Max |cosine - fp32 cosine| over every pair and checkpoint. fp16 keeps 11 significant bits, bf16 8: over a
# 12-layer tower the relative error of a unit vector's entries stays near 1e-3 (fp16) and 1e-2 (bf16).
TOLERANCES = {"fp16": 5e-3, "bf16": 2e-2}
# the pipeline on CUDA: Pillow in 0 and 4 decode processes, and nvJPEG through the torchvision decoder
DECODE_CONFIGS = ({"decode_processes": 0}, {"decode_processes": 4}, {"decoder": "torchvision"})
DECODE_TOLERANCE = 0.05  # docs/speed.md: the most a decode path may move a normalised input value


def cosines(run_dir: Path) -> pd.Series:
    """Every pair's cosine under every checkpoint, indexed by (checkpoint, row)."""
    scores = pd.read_csv(run_dir / "scores.csv")
    return scores.set_index(["checkpoint", "row_id"])["cosine"]


def precision_agreement(reference: pd.Series, other: pd.Series, tolerance: float) -> dict:
    """Max |difference| per checkpoint between two precisions' cosines, and whether all are within ``tolerance``."""
    difference = (other - reference).abs()
    per_checkpoint = difference.groupby(level="checkpoint").max().to_dict()
    return {"max_abs_difference": per_checkpoint, "tolerance": tolerance,
            "within": bool(difference.notna().all() and difference.max() <= tolerance)}


def peak_gpu_memory(run_dir: Path) -> dict:
    """Each checkpoint's peak CUDA memory (MiB) in the scoring step's ``stats.json``."""
    stats = json.loads((run_dir / "stats.json").read_text())
    return {spec: entry.get("peak_gpu_mib") for spec, entry in stats["checkpoints"].items()}


def rehearse(root: Path, device: str) -> dict:
    """The reduced rehearsal in fp32, notebook 02 in fp16 and bf16; the checks' results."""
    runs, report = {}, {"checks": {}}
    for precision in ("fp32", *TOLERANCES):
        folder = root / precision
        notebooks = {} if precision == "fp32" else {"notebooks": ["02_score_pairs"]}
        profile = reduced_rehearsal(folder, CHECKPOINTS, device=device, precision=precision, **notebooks)
        started = time.perf_counter()
        executed = run_notebooks(profile, cwd=PROJECT_ROOT)
        runs[precision] = folder / "run"
        report[precision] = {"notebooks": [path.stem for path in executed], "wall_s": time.perf_counter() - started,
                             "peak_gpu_mib": peak_gpu_memory(runs[precision])}
    reference = cosines(runs["fp32"])
    for precision, tolerance in TOLERANCES.items():
        report["checks"][f"{precision} cosines agree with fp32"] = precision_agreement(
            reference, cosines(runs[precision]), tolerance)
    report["checks"]["peak CUDA memory recorded"] = {"within": all(
        value for run in runs for value in report[run]["peak_gpu_mib"].values())}
    return report


def decode_agreement(spec: str, refs: list[str], device: str) -> dict:
    """Max |difference| between Pillow's input tensors and the torchvision decoder's on ``device`` (nvJPEG)."""
    from clipeval.data.options import MAX_PIXELS
    from clipeval.embed.device_decode import decode_on_device, pillow_pixels
    from clipeval.models.registry import load_encoder

    encoder = load_encoder(spec, device=device, progress=False)
    datas = [Path(ref).read_bytes() for ref in refs]
    exact = torch.stack([pillow_pixels(data, encoder.preprocess, MAX_PIXELS)[0] for data in datas])
    pixels, outcomes = decode_on_device(datas, encoder, MAX_PIXELS)
    difference = (pixels.float().cpu() - exact).abs().amax(dim=(1, 2, 3))
    return {"images": len(datas), "all_ok": all(status == "ok" for status, _ in outcomes),
            "max_abs_difference": float(difference.max()), "mean_of_max": float(difference.mean()),
            "tolerance": DECODE_TOLERANCE, "within": bool(difference.max() <= DECODE_TOLERANCE)}


def table(report: dict) -> str:
    lines = [f"{name}: {'ok' if check['within'] else 'FAILED'} {json.dumps(check)}"
             for name, check in report["rehearsal"]["checks"].items()]
    for name, config in report["pipeline"]["configs"].items():
        lines.append(f"pipeline, {name}: {config['pipeline_pairs_per_s']:.1f} pairs/s, model-only "
                     f"{config['model_only_pairs_per_s']:.1f}, ratio {config['ratio_pipeline_over_model_only']:.2f}")
    agreement = report["decode_agreement"]
    lines.append(f"torchvision decoder on CUDA vs Pillow: max |difference| {agreement['max_abs_difference']:.4f} "
                 f"over {agreement['images']} images ({'within' if agreement['within'] else 'OUTSIDE'} "
                 f"{agreement['tolerance']})")
    for mode, row in report.get("finetune", {}).items():
        lines.append(f"finetune {mode}: {row['steps_per_s']:.2f} steps/s, peak CUDA {row['peak_gpu_mib']:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pairs", type=int, default=512, help="pairs for the pipeline's model-limit ratio")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device is visible (torch {torch.__version__}): the GPU check needs one", file=sys.stderr)
        return 2
    report = {"config": {**vars(args), "checkpoints": CHECKPOINTS}, "machine": {
        **machine_info(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        report["rehearsal"] = rehearse(temp / "rehearsal", args.device)
        spec, refs = build_hf_vit_b32(temp / "hf-b32"), photos(temp / "photos", args.pairs)
        report["pipeline"] = model_limit(spec, pairs_table(refs, 1), args.batch_size, DECODE_CONFIGS,
                                         device=args.device)
        report["decode_agreement"] = decode_agreement(spec, refs[:64], args.device)
        pairs_table(refs[:128], 1).to_csv(temp / "finetune_pairs.csv", index=False)
        report["finetune"] = time_modes(spec, read_pairs(temp / "finetune_pairs.csv"), temp / "finetune",
                                        steps=5, batch_size=args.batch_size, device=args.device)
    save_report(report, args.out, started, table)
    return 0 if all(check["within"] for check in report["rehearsal"]["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
