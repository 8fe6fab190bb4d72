"""Benchmark the fit engines: fits per second per core, batched vs srfit, on the same masks.

Models: (a) a ≈130-atom C60-crystal fragment (workflows/data/c60_model.xyz, or built here with
ase: one C60 at the origin plus the nearest atoms of its 12 fcc neighbours, a = 14.16 Å) with
every atom permuted, and (b) the two-element Ga2O3 cut workflows/data/ga2o3_GO_1x2x2.xyz
(80 atoms) with Ga permuted and O kept within 2.2 Å of a kept Ga, as workflows/ga2o3.yaml does.
Data: our calculator's PDF of the full model (zoom 1.006, Uiso 0.006, scale 0.7) plus 0.5 %
noise on r = 1.6-10 Å; ML-MotEx settings (qmin 0.7, qmax 20, qdamp 0.05, qbroad 0.01). Masks
are drawn the ML-MotEx way: k uniform in 1..N, then k distinct permuted atoms.

Recipes: "default" (one Uiso, zoom, scale) on both models, and "per-element + delta2" (one
Uiso per element and delta2 refined in [0, 5] from 1.0) on Ga2O3. Both engines run
single-threaded in this process, so CPU seconds are core seconds; nothing else (no memory
tracing) runs in a timed region. "cold" is a fresh engine (it builds each Q grid's data as
fits first need it); "warm" is the same engine on new masks after --warmup more (untimed), as
a long-lived worker sees it once it has met the campaign's Q grids (a C60 worker meets ~50); the
Q grids the warm masks still had to build are reported. The speedup compares warm batched with
srfit on the srfit masks.
Usage: python scripts/bench_engine.py [--n-batched 2000] [--n-srfit 20] [--warmup 10000] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from threadpoolctl import threadpool_limits

from motex_dask.catalogue import chunk_masks
from motex_dask.settings import CatalogueSettings, FitSettings, ParamSpec
from motex_dask.structure import build_model
from motex_dask.fit import make_engine
from motex_dask.pdf import pdf_from_atoms

REPO = Path(__file__).resolve().parents[1]
C60_FILE = REPO / "workflows" / "data" / "c60_model.xyz"
GO_FILE = REPO / "workflows" / "data" / "ga2o3_GO_1x2x2.xyz"
FCC_A = 14.16
FRAGMENT_ATOMS = 130
GA_THRESHOLD = 2.2  # Å, workflows/ga2o3.yaml


def read_xyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Symbols and positions of a plain xyz file (extra columns after x y z are ignored)."""
    lines = path.read_text().splitlines()
    n = int(lines[0].split()[0])
    rows = [line.split() for line in lines[2:2 + n]]
    return np.array([r[0] for r in rows]), np.array([[float(v) for v in r[1:4]] for r in rows])


def c60_fragment() -> tuple[np.ndarray, np.ndarray]:
    """C60 at the origin plus its 12 fcc neighbours' atoms within the radius giving ≈130 atoms."""
    if C60_FILE.exists():
        return read_xyz(C60_FILE)
    from ase.build import molecule

    c60 = molecule("C60").positions
    c60 -= c60.mean(axis=0)
    h = FCC_A / 2
    shifts = sorted({tuple(np.roll((a * h, b * h, 0.0), k)) for a in (-1, 1) for b in (-1, 1) for k in range(3)})
    others = np.vstack([c60 + np.array(s) for s in shifts])
    dist = np.linalg.norm(others, axis=1)
    levels = np.unique(np.round(dist, 6))
    counts = np.array([(dist <= lv + 1e-6).sum() for lv in levels])  # radius at each distance shell
    radius = levels[np.argmin(np.abs(counts + len(c60) - FRAGMENT_ATOMS))] + 1e-6
    pos = np.vstack([c60, others[dist <= radius]])
    return np.array(["C"] * len(pos)), pos


def synthetic_data(symbols, positions, fit: FitSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0.7 × G(full model, zoom 1.006, Uiso 0.006) on r = rmin..rmax step 0.01, plus 0.5 % noise."""
    r, g = pdf_from_atoms(symbols, positions, qmin=fit.qmin, qmax=fit.qmax, qdamp=fit.qdamp,
                          qbroad=fit.qbroad, rmin=fit.rmin, rmax=fit.rmax, rstep=0.01, uiso=0.006,
                          zoom=1.006, radiation=fit.radiation)
    g = 0.7 * g
    return r, g + np.random.default_rng(seed).normal(0.0, 0.005 * np.abs(g).max(), g.size)


def motex_masks(n_atoms: int, n: int, seed: int) -> np.ndarray:
    """ML-MotEx masks (the catalogue's uniform-size strategy): k uniform in 1..n_atoms, then k atoms kept."""
    return chunk_masks(CatalogueSettings(size=n, chunk_size=n, seed=seed), np.zeros((n_atoms, 3)), 0)  # blind to positions


def timed_fit(engine, masks: np.ndarray):
    """(result, wall s, cpu s) of engine.fit(masks)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = engine.fit(masks)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def per_element_delta2(fit: FitSettings, elements) -> FitSettings:
    """The richer recipe: one Uiso per element and delta2 refined, as metal-oxide fits use."""
    return dataclasses.replace(fit, uiso={str(e): fit.uiso for e in elements},
                               delta2=ParamSpec(True, 1.0, 0.0, 5.0))


def bench_recipe(name: str, recipe: str, symbols, positions, keep_of, n_perm: int, fit: FitSettings,
                 n_batched: int, n_srfit: int, warmup: int) -> dict:
    """Cold and warm batched fits and srfit fits of one recipe on one model (keep_of: masks -> atoms)."""
    r, g = synthetic_data(symbols, positions, FitSettings(), seed=1)
    masks = keep_of(motex_masks(n_perm, n_batched, seed=2))
    t0 = time.perf_counter()
    batched = make_engine(symbols, positions, r, g, fit)
    setup = time.perf_counter() - t0
    batched.fit(masks[:8])  # numba compilation outside the timing
    _, wall_b, cpu_b = timed_fit(batched, masks)  # cold: builds its Q-grid data as it goes
    if warmup:
        batched.fit(keep_of(motex_masks(n_perm, warmup, seed=4)))
    warm_masks = keep_of(motex_masks(n_perm, n_batched, seed=3))
    evals0, grids0 = batched.evaluations, batched.n_grids
    _, _, cpu_warm = timed_fit(batched, warm_masks)  # warm: a long-lived engine, grids cached
    evals, new_grids = batched.evaluations - evals0, batched.n_grids - grids0
    res_b, _, _ = timed_fit(batched, warm_masks[:n_srfit])
    srfit = make_engine(symbols, positions, r, g, dataclasses.replace(fit, engine="srfit"))
    res_s, wall_s, cpu_s = timed_fit(srfit, warm_masks[:n_srfit])
    ok = (res_b.status == 1) & (res_s.status == 1)
    fits_w, fits_s = n_batched / cpu_warm, n_srfit / cpu_s
    return {
        "model": name, "recipe": recipe, "n_atoms": int(len(symbols)),
        "elements": sorted(set(map(str, symbols))), "parameters": list(res_b.params),
        "batched_fits": n_batched, "batched_cold_fits_per_core_s": n_batched / cpu_b, "batched_cold_wall_s": wall_b,
        "batched_warm_fits_per_core_s": fits_w, "batched_setup_s": setup, "warmup_fits": warmup,
        "grids_built_while_warm": new_grids, "grids_held": batched.n_grids,
        "batched_evaluations_per_fit": evals / n_batched,
        "srfit_fits": n_srfit, "srfit_fits_per_core_s": fits_s, "srfit_wall_s": wall_s, "speedup": fits_w / fits_s,
        "agreement_max_abs_drwp": float(np.max(np.abs(res_b.rwp[ok] - res_s.rwp[ok]))) if ok.any() else None,
        "median_rwp": float(np.nanmedian(res_b.rwp)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-batched", type=int, default=2000)
    parser.add_argument("--n-srfit", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10000,
                        help="untimed fits between the cold and the warm run (0: the warm run meets new Q grids)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    fit = FitSettings()
    c60_symbols, c60_positions = c60_fragment()
    go_symbols, go_positions = read_xyz(GO_FILE)
    go = build_model(Atoms(go_symbols, go_positions), ("Ga",), GA_THRESHOLD)
    runs = [("c60_fragment", "default", c60_symbols, c60_positions, lambda m: m, len(c60_symbols), fit),
            ("ga2o3_GO_1x2x2", "default", go_symbols, go_positions, go.keep_atoms, go.n_perm, fit),
            ("ga2o3_GO_1x2x2", "per-element+delta2", go_symbols, go_positions, go.keep_atoms, go.n_perm,
             per_element_delta2(fit, set(go_symbols)))]
    figures = {"settings": dataclasses.asdict(fit), "runs": []}
    with threadpool_limits(limits=1):
        for run in runs:
            fig = bench_recipe(*run, args.n_batched, args.n_srfit, args.warmup)
            figures["runs"].append(fig)
            print(f"{fig['model']} [{fig['recipe']}: {', '.join(fig['parameters'])}]: {fig['n_atoms']} atoms "
                  f"{fig['elements']}")
            print(f"  batched {fig['batched_warm_fits_per_core_s']:9.1f} fits/s/core warm ({fig['batched_fits']} "
                  f"fits, {fig['batched_evaluations_per_fit']:.1f} evaluations/fit, {fig['grids_built_while_warm']} of "
                  f"{fig['grids_held']} Q grids built in it); cold "
                  f"{fig['batched_cold_fits_per_core_s']:.1f} (setup {fig['batched_setup_s']:.2f} s)")
            print(f"  srfit   {fig['srfit_fits_per_core_s']:9.2f} fits/s/core  ({fig['srfit_fits']} fits, same masks)")
            print(f"  speedup {fig['speedup']:9.0f}x   max |Δrwp| on shared masks {fig['agreement_max_abs_drwp']:.2e}")
    c60, go_default, go_rich = figures["runs"]
    figures["ga2o3_rich_over_default_warm"] = (go_rich["batched_warm_fits_per_core_s"]
                                              / go_default["batched_warm_fits_per_core_s"])
    print(f"Ga2O3 per-element+delta2 / default (warm batched): {figures['ga2o3_rich_over_default_warm']:.2f}")
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {figures['peak_rss_mb']:.0f} MiB")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
