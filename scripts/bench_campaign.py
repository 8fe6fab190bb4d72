"""End-to-end campaign benchmark: per-stage wall time, fits/s, peak memory per worker,
fit-stage speed-up from 1 to N workers, and peak-memory ratio between two catalogue sizes.

    python scripts/bench_campaign.py                       # the paper-scale C60 campaign + scaling + memory
    python scripts/bench_campaign.py --size 24000 --scaling-size 20000 --memory-sizes 20000 100000
    python scripts/bench_campaign.py --json                # last line: one JSON object of the figures

Each run gets a fresh store in a temporary folder; the embedded LocalCluster gets one
single-threaded worker process per requested worker.
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

from motex_dask.stability import truth_overlap

ROOT = Path(__file__).resolve().parents[1]


def write_campaign(base: Path, workdir: Path, size: int, workers: int, tag: str, chunk_size: int | None = None,
                   **keys) -> Path:
    """A copy of the base campaign with its own size, output folder and a local profile; `keys`
    replace top-level keys (data, store, ...)."""
    campaign = yaml.safe_load(base.read_text())
    for key in ("structure", "data"):
        campaign[key] = str((base.parent / campaign[key]).resolve())
    campaign["catalogue"]["size"] = size
    if chunk_size is not None:
        campaign["catalogue"]["chunk_size"] = chunk_size
    campaign["output"] = str(workdir / tag)
    campaign.pop("store", None)
    campaign.update(keys)
    profile = workdir / f"local-{workers}.yaml"
    profile.write_text(yaml.safe_dump({"kind": "local", "local": {
        "n-workers": workers, "threads-per-worker": 1, "dashboard-address": ":0"}}))
    campaign["cluster"] = str(profile)
    path = workdir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


# Each run in a fresh process, as `motex run` is: worker processes spawned later by a long-lived
# parent were measured ~190 MB larger, which says nothing about a campaign.
RUNNER = ("import json, sys\n"
          "from motex_dask.campaign import run_campaign\n"
          "s = run_campaign(sys.argv[1], fits_only=sys.argv[2] == 'fits-only', progress=False)\n"
          "print(json.dumps(s, default=str))")


def run(base: Path, workdir: Path, size: int, workers: int, tag: str, fits_only: bool) -> dict:
    path = write_campaign(base, workdir, size, workers, tag)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, str(path), "fits-only" if fits_only else "all"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"campaign {tag} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def stage_table(summary: dict) -> dict:
    """Per-stage wall times (s) from a campaign summary."""
    fits = summary["fits"]
    return {
        "store": summary["store_seconds"],
        "catalogue": fits["catalogue_seconds"],
        "fits": fits["seconds"] - fits["catalogue_seconds"],
        "training": summary.get("train_seconds"),
        "shap": summary.get("explain_seconds"),
        "report": summary.get("report_seconds"),
        "total": summary["wall_seconds"],
    }


def central_in_lowest(csv_path: Path, n_central: int = 60) -> float | None:
    """How many of the 60 lowest-contribution atoms are the central C60 (atoms 0-59 of the demo model);
    atoms tied at the 60th value count in proportion (stability.truth_overlap)."""
    if not csv_path.is_file():
        return None
    table = pd.read_csv(csv_path)
    return n_central * truth_overlap(table["contribution"].to_numpy(), table["index"].to_numpy() < n_central)


def peak_mb(summary: dict, stage: str) -> float:
    """The largest peak RSS among the workers of one stage."""
    return max(summary["peak_worker_mb"][stage].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, default=ROOT / "workflows" / "c60_paper.yaml")
    parser.add_argument("--size", type=int, help="end-to-end catalogue size (default: the campaign's)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for the speed-up")
    parser.add_argument("--scaling-size", type=int, default=200_000, help="fits per scaling run")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[100_000, 1_000_000])
    parser.add_argument("--memory-full", action="store_true",
                        help="memory runs go through learning too (default: fit stage only)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("end-to-end", "scaling", "memory"))
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    workers = max(args.workers)
    figures: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="motex-bench-") as tmp:
        workdir = Path(tmp)
        if "end-to-end" not in args.skip:
            size = args.size or yaml.safe_load(args.campaign.read_text())["catalogue"]["size"]
            summary = run(args.campaign, workdir, size, workers, "end-to-end", fits_only=False)
            stages = stage_table(summary)
            fits = summary["fits"]
            print(f"end to end: {size} candidates, {fits['fits']} fits on {workers} workers")
            for name, seconds in stages.items():
                print(f"  {name:<10} {seconds:8.1f} s" if seconds is not None else f"  {name:<10}      n/a")
            print(f"  fit rate   {fits['fits'] / stages['fits']:8.0f} fits/s "
                  f"({fits['fits'] / stages['fits'] / workers:.0f} per worker)")
            for stage, peaks in summary["peak_worker_mb"].items():
                print(f"  peak RSS per worker, {stage} stage: " + ", ".join(f"{v:.0f} MB" for v in peaks.values()))
            central = central_in_lowest(Path(summary["outputs"]["atom_contributions"]))
            if central is not None:
                print(f"  central-buckyball atoms among the 60 lowest contributions: {central:.1f}")
            figures["end_to_end"] = {"size": size, "fits": fits["fits"], "workers": workers, "stages_s": stages,
                                     "fits_per_s": fits["fits"] / stages["fits"],
                                     "peak_worker_mb": summary["peak_worker_mb"], "central_in_lowest": central}
        if "scaling" not in args.skip:
            rates = {}
            for n in args.workers:
                s = run(args.campaign, workdir, args.scaling_size, n, f"scaling-{n}", fits_only=True)
                fit_s = s["fits"]["seconds"] - s["fits"]["catalogue_seconds"]
                rates[n] = s["fits"]["fits"] / fit_s
                print(f"fit stage, {n} worker(s): {rates[n]:.0f} fits/s ({args.scaling_size} candidates)")
            lo, hi = min(rates), max(rates)
            speedup = rates[hi] / rates[lo]
            print(f"speed-up {lo} -> {hi} workers: {speedup:.2f}x")
            figures["scaling"] = {"fits_per_s": rates, "speedup": speedup}
        if "memory" not in args.skip:
            peaks = {}
            for size in args.memory_sizes:
                s = run(args.campaign, workdir, size, workers, f"memory-{size}", fits_only=not args.memory_full)
                peaks[size] = {stage: peak_mb(s, stage) for stage in s["peak_worker_mb"]}
                print(f"peak RSS per worker at {size} candidates: "
                      + ", ".join(f"{stage} {mb:.0f} MB" for stage, mb in peaks[size].items()))
            small, large = args.memory_sizes
            ratios = {stage: peaks[large][stage] / peaks[small][stage] for stage in peaks[large]}
            print("peak memory ratio " + ", ".join(f"{stage} {r:.2f}x" for stage, r in ratios.items())
                  + f" ({large} vs {small} candidates)")
            figures["memory"] = {"peak_worker_mb": peaks, "ratio": ratios}
    if args.json:
        print(json.dumps(figures, default=float))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
