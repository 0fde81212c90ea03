"""Benchmark the shard layout: each image stored once with its captions vs one sample per pair.

    python bench/bench_shard_size.py [--images 100 400] [--captions 5] [--shards 1] [--out FILE]

For each ``--images`` count, builds that many distinct 640x480 JPEGs with ``--captions`` captions
each and writes them as shards two ways: grouped, as ``make-shards`` writes them (``clipeval.data.shards.write_shards``:
a tar sample or parquet row per image, its captions listed), and one sample per pair (a tar
sample or parquet row per caption, the image repeated: how a pairs table was sharded before,
and how img2dataset writes pairs). Per layout and format: the bytes on disk and the tar's image
members, checking that ``read_shard`` gives every pair back once from both. Two sizes, since
pyarrow's dictionary encoding stores a repeated image once in a parquet column chunk until its
dictionary outgrows pyarrow's page limit: a small parquet of pairs hides the repeats, a larger one
does not. Writes the JSON atomically and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import machine_info, pairs_table, photos, save_report
from clipeval.atomic import atomic_path
from clipeval.data.shards import IMAGE_EXTENSIONS, read_shard, write_shards
from clipeval.paths import PROJECT_ROOT

FORMATS = ("tar", "parquet")


def write_per_pair(pairs: pd.DataFrame, out_dir: Path, n_shards: int, shard_format: str) -> list[Path]:
    """The baseline: one tar sample (jpg, txt, json) or parquet row (image bytes) per pair, the image repeated."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * len(pairs) / n_shards) for i in range(n_shards + 1)]
    paths = []
    for number in range(n_shards):
        part = pairs.iloc[bounds[number]:bounds[number + 1]].reset_index(drop=True)
        path = out_dir / f"shard-{number:05d}.{shard_format}"
        with atomic_path(path) as tmp:
            if shard_format == "parquet":
                part.assign(image=[Path(ref).read_bytes() for ref in part["image"]]).to_parquet(tmp, index=False)
                paths.append(path)
                continue
            with tarfile.open(tmp, "w") as archive:
                for row, (ref, caption) in enumerate(zip(part["image"], part["caption"])):
                    files = {"jpg": Path(ref).read_bytes(), "txt": caption.encode(),
                             "json": json.dumps({"source_image": ref}).encode()}
                    for extension, content in files.items():
                        info = tarfile.TarInfo(f"{row:09d}.{extension}")
                        info.size = len(content)
                        archive.addfile(info, io.BytesIO(content))
        paths.append(path)
    return paths


def image_members(paths: list[Path]) -> int:
    """How many image files the tars hold."""
    count = 0
    for path in paths:
        with tarfile.open(path) as archive:
            count += sum(member.name.rpartition(".")[2] in IMAGE_EXTENSIONS for member in archive)
    return count


def measure(paths: list[Path], pairs: pd.DataFrame, shard_format: str) -> dict:
    """Bytes on disk, image members (tar) and rows read back (every pair once, or it raises)."""
    read = pd.concat([read_shard(path) for path in paths], ignore_index=True)
    if len(read) != len(pairs) or sorted(read["caption"]) != sorted(pairs["caption"]):
        raise AssertionError(f"{paths[0].parent}: {len(read)} rows read back for {len(pairs)} pairs")
    return {"bytes": sum(path.stat().st_size for path in paths), "rows_read": len(read),
            "image_members": image_members(paths) if shard_format == "tar" else None}


def table(report: dict) -> str:
    mb = 1e6
    lines = [f"{'images':>6} {'JPEG MB':>8} {'format':>8} {'per pair MB':>12} {'grouped MB':>11} {'ratio':>6}"]
    for size in report["sizes"]:
        for name in FORMATS:
            per_pair, grouped = size[name]["per_pair"], size[name]["grouped"]
            lines.append(f"{size['images']:>6} {size['image_bytes'] / mb:>8.1f} {name:>8} "
                         f"{per_pair['bytes'] / mb:>12.1f} {grouped['bytes'] / mb:>11.1f} "
                         f"{per_pair['bytes'] / grouped['bytes']:>6.2f}")
    return "\n".join(lines)


def measure_size(temp: Path, images: int, captions: int, n_shards: int) -> dict:
    """Both layouts of ``images`` distinct photos with ``captions`` captions each, in each format."""
    refs = photos(temp / "photos", images)
    pairs = pairs_table(refs, captions)
    size = {"images": images, "pairs": len(pairs), "image_bytes": sum(Path(ref).stat().st_size for ref in refs)}
    for name in FORMATS:
        per_pair = write_per_pair(pairs, temp / f"per-pair-{name}", n_shards, name)
        grouped = write_shards(pairs, temp / f"grouped-{name}", n_shards, name)
        size[name] = {"per_pair": measure(per_pair, pairs, name), "grouped": measure(grouped, pairs, name)}
    return size


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 400], help="distinct images (one run each)")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "shard_size.json")
    args = parser.parse_args(argv)
    report = {"config": {key: value for key, value in vars(args).items() if key != "out"}, "machine": machine_info()}
    started = time.perf_counter()
    report["sizes"] = []
    for images in args.images:
        with tempfile.TemporaryDirectory() as temp:
            report["sizes"].append(measure_size(Path(temp), images, args.captions, args.shards))
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
