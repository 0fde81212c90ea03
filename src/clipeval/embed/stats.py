"""Time and memory of every stage, per checkpoint: ``stats.json`` and ``stats.log`` (docs/scoring.md, "Stats").

Repeated calls of a stage (one per chunk) add up; peaks take the maximum. CPU seconds count every thread of
this process.
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import torch

VERSIONED_PACKAGES = ("clipeval", "torch", "torchvision", "transformers", "open_clip_torch", "numpy",
                      "pandas", "pillow")


def package_versions(names=VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` for a package that is not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


_PROCESS = psutil.Process()


def current_rss_mib() -> float:
    """This process's resident set size in MiB (a few microseconds: stages are timed once per batch)."""
    return _PROCESS.memory_info().rss / 2**20


class _PeakRSS(threading.Thread):
    """Samples RSS in the background until stopped; keeps the maximum."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = current_rss_mib()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss_mib())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_mib())


class StageTimer:
    """Accumulates per-stage timings for one checkpoint (or for the shared stages)."""

    def __init__(self, device: torch.device | None = None, interval: float = 0.05):
        self.device = device
        self.interval = interval
        self.stages: dict[str, dict] = {}

    @contextlib.contextmanager
    def stage(self, name: str, items: int = 0):
        """Time one run of stage ``name`` handling ``items`` items."""
        cuda = self.device is not None and self.device.type == "cuda"
        if cuda:
            import torch  # only a CUDA device has GPU memory to time; the CPU path needs no torch import

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        sampler = _PeakRSS(self.interval)
        sampler.start()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            peak_rss = sampler.stop()
            peak_gpu = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None
            self._add(name, wall, cpu, items, peak_rss, peak_gpu)

    def _add(self, name, wall, cpu, items, peak_rss, peak_gpu):
        entry = self.stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "items": 0, "calls": 0,
                                              "peak_rss_mib": 0.0, "peak_gpu_mib": None})
        entry["wall_s"] += wall
        entry["cpu_s"] += cpu
        entry["items"] += items
        entry["calls"] += 1
        entry["peak_rss_mib"] = max(entry["peak_rss_mib"], peak_rss)
        if peak_gpu is not None:
            entry["peak_gpu_mib"] = max(entry["peak_gpu_mib"] or 0.0, peak_gpu)

    def summary(self) -> dict:
        """Stage table with items/s added, plus totals over all stages."""
        stages = {name: {**entry, "items_per_s": entry["items"] / entry["wall_s"] if entry["wall_s"] else None}
                  for name, entry in self.stages.items()}
        gpu = [e["peak_gpu_mib"] for e in stages.values() if e["peak_gpu_mib"] is not None]
        return {"stages": stages,
                "wall_s": sum(e["wall_s"] for e in stages.values()),
                "cpu_s": sum(e["cpu_s"] for e in stages.values()),
                "peak_rss_mib": max((e["peak_rss_mib"] for e in stages.values()), default=None),
                "peak_gpu_mib": max(gpu) if gpu else None}


def format_stats_log(stats: dict) -> str:
    """Render ``stats.json`` content (of a scoring or a retrieval run) as an aligned text report."""
    counts = [f"{key}: {stats[key]}" for key in ("pairs", "queries", "images") if key in stats]
    lines = [f"clipeval run stats  ({', '.join(counts)}, device: {stats['device']}, "
             f"batch size: {stats['batch_size']})", ""]
    blocks = [("shared (all checkpoints)", stats["shared"])] if "shared" in stats else []
    blocks += [(f"checkpoint {spec}", entry) for spec, entry in stats["checkpoints"].items()]
    for title, entry in blocks:
        lines.append(title)
        for key in ("description", "precision", "model_loaded", "decode_processes", "encode_processes", "pairs_scored",
                    "pairs_per_s", "images_embedded", "images_unreadable", "captions_truncated"):
            if entry.get(key) not in (None, ""):
                value = entry[key]
                lines.append(f"  {key:<20} {value:.2f}" if isinstance(value, float) else f"  {key:<20} {value}")
        if entry.get("cache"):
            lines.append(f"  {'cache':<20} " + ", ".join(f"{name} {count}" for name, count in entry["cache"].items()))
        lines.append(f"  {'stage':<18}{'wall s':>10}{'cpu s':>10}{'items':>9}{'items/s':>11}"
                     f"{'peak RSS MiB':>14}{'peak GPU MiB':>14}")
        for name, s in entry["stages"].items():
            rate = f"{s['items_per_s']:.1f}" if s["items_per_s"] else "-"
            gpu = f"{s['peak_gpu_mib']:.0f}" if s["peak_gpu_mib"] is not None else "-"
            lines.append(f"  {name:<18}{s['wall_s']:>10.3f}{s['cpu_s']:>10.3f}{s['items']:>9}{rate:>11}"
                         f"{s['peak_rss_mib']:>14.0f}{gpu:>14}")
        lines.append("")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in stats["versions"].items()))
    return "\n".join(lines) + "\n"


def _merge_stages(entries: list[dict]) -> dict:
    """Stage tables of several processes as one: times, items and calls summed, peaks the largest."""
    stages: dict[str, dict] = {}
    for entry in entries:
        for name, stage in entry.get("stages", {}).items():
            into = stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "items": 0, "calls": 0, "peak_rss_mib": 0.0,
                                            "peak_gpu_mib": None})
            for key in ("wall_s", "cpu_s", "items", "calls"):
                into[key] += stage.get(key, 0)
            into["peak_rss_mib"] = max(into["peak_rss_mib"], stage.get("peak_rss_mib") or 0.0)
            if stage.get("peak_gpu_mib") is not None:
                into["peak_gpu_mib"] = max(into["peak_gpu_mib"] or 0.0, stage["peak_gpu_mib"])
    for stage in stages.values():
        stage["items_per_s"] = stage["items"] / stage["wall_s"] if stage["wall_s"] else None
    gpu = [s["peak_gpu_mib"] for s in stages.values() if s["peak_gpu_mib"] is not None]
    return {"stages": stages, "wall_s": sum(s["wall_s"] for s in stages.values()),
            "cpu_s": sum(s["cpu_s"] for s in stages.values()),
            "peak_rss_mib": max((s["peak_rss_mib"] for s in stages.values()), default=None),
            "peak_gpu_mib": max(gpu) if gpu else None}


def merge_stats(snapshots: list[dict]) -> dict:
    """The scoring stats of several processes (Ray actors, each scoring some shards) as one ``stats.json``.

    One snapshot is returned as it is; several have their counts, times and cache counts summed,
    their peaks maximised and their rates recomputed, and are kept under ``processes``.
    """
    if len(snapshots) == 1:
        return snapshots[0]
    merged = {key: snapshots[0][key] for key in ("device", "batch_size", "fast_decode", "decoder", "embedding_cache",
                                                "versions")}
    merged["pairs"] = sum(snapshot["pairs"] for snapshot in snapshots)
    merged["status_counts"] = {}
    for snapshot in snapshots:
        for status, count in snapshot["status_counts"].items():
            merged["status_counts"][status] = merged["status_counts"].get(status, 0) + count
    merged["chunks_total"] = sum(snapshot["chunks_total"] for snapshot in snapshots)
    merged["chunks_resumed"] = sum(snapshot["chunks_resumed"] for snapshot in snapshots)
    merged["shared"] = _merge_stages([snapshot["shared"] for snapshot in snapshots])
    merged["checkpoints"] = {}
    for spec in snapshots[0]["checkpoints"]:
        entries = [snapshot["checkpoints"][spec] for snapshot in snapshots]
        summary = _merge_stages(entries)
        scored = sum(entry["pairs_scored"] for entry in entries)
        work = summary["wall_s"] - summary["stages"].get("model_load", {}).get("wall_s", 0.0)
        caches = [entry["cache"] for entry in entries if entry.get("cache")]
        merged["checkpoints"][spec] = {
            **{key: entries[0][key] for key in ("precision", "description", "context_length", "decode_processes",
                                                "encode_processes")},
            "model_loaded": any(entry["model_loaded"] for entry in entries), "pairs_scored": scored,
            "pairs_per_s": scored * len(entries) / work if work else None,
            "captions_truncated": sum(entry["captions_truncated"] for entry in entries),
            "cache": {key: sum(cache[key] for cache in caches) for key in caches[0]} if caches else None, **summary}
    merged["processes"] = len(snapshots)
    return merged
