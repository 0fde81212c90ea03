"""Time the rehearsal as a user runs it: ``make rehearsal-hub``, then ``make rehearse``, cold, from the shell.

    python bench/bench_rehearsal.py [--out bench/results/rehearsal.json]

Each step is a fresh process started from the shell, as ``make`` starts it: building the hub mirror
into a temporary folder, then the rehearsal profile's notebooks on it (``params/rehearsal.yaml``,
with only the run folder and the mirror moved to the temporary folder) with an empty embedding
cache, then its report. Needs ``make data``. Records each step's wall time, each notebook's (from
papermill's cell timings), the mirror's size, and how many published numbers were compared and
flagged; ``make bench-rehearsal`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from bench_pipeline import machine_info, save_report
from clipeval.paths import PARAMS_DIR, PROJECT_ROOT


def timed(command: list[str], env: dict) -> float:
    """Run ``command`` from the project root; its wall seconds (a failure stops the benchmark)."""
    started = time.perf_counter()
    subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True)
    return time.perf_counter() - started


def notebook_seconds(path: Path) -> float:
    """The sum of an executed notebook's cell durations (papermill's metadata)."""
    cells = json.loads(path.read_text())["cells"]
    return sum(cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0 for cell in cells)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def table(report: dict) -> str:
    lines = [f"make rehearsal-hub: {report['mirror_build_s']:.0f} s, {report['mirror_bytes'] / 2**30:.2f} GiB",
             f"make rehearse: {report['rehearse_s']:.0f} s (notebooks {report['notebooks_s']:.0f} s, "
             f"report {report['report_s']:.0f} s)"]
    lines += [f"  {name}: {seconds:.0f} s" for name, seconds in report["notebooks"].items()]
    lines.append(f"published numbers flagged: {report['flagged']} of {report['compared']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "rehearsal.json")
    args = parser.parse_args(argv)
    report = {"config": {"profile": "rehearsal"}, "machine": machine_info()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        env = {**os.environ, "CLIPEVAL_EMBEDDING_CACHE": str(temp / "embedding-cache")}
        python = [sys.executable, "-m", "clipeval"]
        report["mirror_build_s"] = timed([*python, "rehearsal-hub", "--out", str(temp / "mirror"), "--no-progress"],
                                         env)
        report["mirror_bytes"] = folder_bytes(temp / "mirror")
        profile = temp / "rehearsal.yaml"
        profile.write_text(yaml.safe_dump({"extends": str(PARAMS_DIR / "rehearsal.yaml"), "run_dir": str(temp / "run"),
                                           "hub_mirror": str(temp / "mirror")}))
        report["notebooks_wall_s"] = timed([*python, "run-notebooks", "--profile", str(profile)], env)
        report["report_s"] = timed([*python, "report", "--profile", str(profile)], env)
        report["rehearse_s"] = report["notebooks_wall_s"] + report["report_s"]
        report["notebooks"] = {path.stem: notebook_seconds(path) for path in sorted((temp / "run" / "notebooks")
                                                                                     .glob("*.ipynb"))}
        report["notebooks_s"] = sum(report["notebooks"].values())
        comparison = pd.read_csv(temp / "run" / "published_comparison.csv")
        compared = comparison[comparison["published"].notna()]
        report["compared"], report["flagged"] = len(compared), int(compared["flagged"].sum())
    save_report(report, args.out, started, table)
    return report


if __name__ == "__main__":
    main()
