"""Benchmark large starting models (N ≈ 300 to 2,000 atoms): fits per second per core, memory per worker.

Models: random fcc AuAg alloy spheres cut from the crystal (scripts/build_nanoparticle_demo.py's
`fcc_sphere`) with about N atoms, every atom permuted. Data: the PDF of a compact 100-atom
sub-cluster (the demo's settings: Qmax 24 Å⁻¹, 0.5 % noise), fitted on r = 2–16 Å.

Part 1, the fit engine, in this process and single-threaded (so CPU seconds are core seconds):
warm fits per core-second (after as many fits on other masks) of the batched engine on
cookie-cutter spheres (radius 5–9.5 Å, the demos' catalogue) and on uniform-size masks (k uniform
in 1..N: mostly huge motifs, the costly case). Nothing else runs in a timed region.

Part 2, memory: each N also runs as a whole campaign (fits, learning without the hyper-parameter
search, explanation, report) on the local cluster, and its summary's peak resident memory of every
worker (fit stage and learn stage) is reported against the 2 GiB per worker budget.

    python scripts/bench_large_models.py [--sizes 300 1000] [--fits 256] [--candidates 1500] [--json]

The machine may be shared: CPU seconds are measured per process, so fits per core-second do not
depend on the load, but wall times do.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from motex_dask.campaign import run_campaign
from motex_dask.catalogue import chunk_masks
from motex_dask.fit import make_engine
from motex_dask.pdf import pdf_from_atoms, write_gr
from motex_dask.settings import CatalogueSettings, FitSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_nanoparticle_demo import LATTICE, NOISE, SETTINGS, fcc_sphere  # noqa: E402

FIT = {"rmin": 2.0, "rmax": 16.0, "qmin": 0.8, "qmax": 24.0, "qdamp": 0.03, "qbroad": 0.01}
COOKIE = {"strategy": "cookie-cutter", "radius": (5.0, 9.5)}
BUDGET_MB = 2048


def model_of_size(n: int, seed: int = 5):
    """An fcc AuAg sphere with about n atoms, and its 100 atoms nearest a point off its centre."""
    radius = (3 * n / (4 * np.pi) * LATTICE**3 / 4) ** (1 / 3)  # 4 atoms per cubic cell
    atoms = fcc_sphere(radius, seed)
    pos = atoms.get_positions()
    motif = np.argsort(np.linalg.norm(pos - np.array([0.3 * radius, 0.1, -0.2]), axis=1))[:100]
    return atoms, motif


def data_of(atoms, motif) -> tuple[np.ndarray, np.ndarray]:
    r, g = pdf_from_atoms(np.array(atoms.get_chemical_symbols())[motif], atoms.get_positions()[motif], **SETTINGS)
    return r, g + np.random.default_rng(1).normal(0.0, NOISE * np.abs(g).max(), g.size)


def engine_rates(atoms, r, g, n_fits: int) -> dict:
    """Warm fits per core-second of the batched engine on cookie-cutter and uniform-size masks."""
    fit = FitSettings(**FIT)
    window = (r >= fit.rmin) & (r < fit.rmax)
    t0 = time.process_time()
    engine = make_engine(np.array(atoms.get_chemical_symbols()), atoms.get_positions(), r[window], g[window], fit)
    out = {"n_atoms": len(atoms), "engine_setup_core_s": time.process_time() - t0}
    pos = atoms.get_positions()
    for name, cat in (("cookie_cutter", CatalogueSettings(size=2 * n_fits, chunk_size=n_fits, seed=1, **COOKIE)),
                      ("uniform_size", CatalogueSettings(size=2 * n_fits, chunk_size=n_fits, seed=1))):
        engine.fit(chunk_masks(cat, pos, 1))  # warm-up on other masks: Q-grid data built, numba loaded
        masks = chunk_masks(cat, pos, 0)
        t0 = time.process_time()
        engine.fit(masks)
        seconds = time.process_time() - t0
        out[f"{name}_fits_per_core_s"] = n_fits / seconds
        out[f"{name}_mean_motif_atoms"] = float(masks.sum(axis=1).mean())
    return out


def campaign_memory(atoms, r, g, n_candidates: int, folder: Path) -> dict:
    """Peak worker memory (MB) of a whole cookie-cutter campaign on this model."""
    ase.io.write(folder / "model.xyz", atoms)
    write_gr(folder / "data.gr", r, g, {"source": "bench_large_models.py"})
    doc = {"structure": "model.xyz", "data": "data.gr", "permute": sorted(set(atoms.get_chemical_symbols())),
           "output": "results", "catalogue": {"size": n_candidates, "chunk_size": 500, "seed": 1,
                                              **{k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in COOKIE.items()}},
           "fit": FIT, "learn": {"tune": False, "bootstrap": 10}}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc))
    t0 = time.perf_counter()
    summary = run_campaign(path, progress=False)
    peaks = {stage: max(by_worker.values()) for stage, by_worker in summary["peak_worker_mb"].items()}
    return {"campaign_candidates": n_candidates, "campaign_wall_s": time.perf_counter() - t0,
            "peak_worker_mb": peaks, "within_budget": max(peaks.values()) <= BUDGET_MB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--fits", type=int, default=256, help="fits timed per model and strategy")
    parser.add_argument("--candidates", type=int, default=1500, help="candidates of each memory campaign (0: skip)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        atoms, motif = model_of_size(n)
        r, g = data_of(atoms, motif)
        with threadpool_limits(limits=1):
            row = engine_rates(atoms, r, g, args.fits)
        if args.candidates:
            with tempfile.TemporaryDirectory() as tmp:
                row.update(campaign_memory(atoms, r, g, args.candidates, Path(tmp)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps({"fit": FIT, "cookie_cutter": {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in COOKIE.items()}, "runs": rows}))


if __name__ == "__main__":
    main()
