"""Benchmark steps 3–4 (train + explain) on a synthetic campaign store with a planted motif.

    python scripts/bench_learn.py                       # 10^6 candidates × 129 features, 2 workers
    python scripts/bench_learn.py --n 20000 --json      # small; last line: one JSON object

The store follows docs/design.md and is written chunk by chunk with plain zarr: permuted atoms
0..planted-1 form the motif, R_wp = 0.6 − 0.04·(planted kept) + 0.01·(others kept) + noise. Training
and SHAP run on a LocalCluster of worker processes; the peak resident memory of each worker
(getrusage) and of this process (sampled) are reported, next to the size of the full feature
matrix, to show that no process holds all rows. `write_planted_store` also builds the tests' stores.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motex_dask.settings import LearnSettings  # noqa: E402
from motex_dask.fit.result import Status  # noqa: E402
from motex_dask.structure import StartingModel  # noqa: E402


@dataclass(frozen=True)
class PlantedCampaign:
    """A synthetic store and the starting model it was made for."""

    path: str
    model: StartingModel
    planted: np.ndarray  # permuted-atom positions (0..n_perm-1) of the motif
    size: int
    chunk_size: int


def planted_model(n_perm: int, seed: int = 0) -> StartingModel:
    """n_perm Ga atoms in a ball and one O between each pair (2j, 2j+1); atoms interleaved Ga Ga O."""
    rng = np.random.default_rng(seed)
    radius = 2.0 * n_perm ** (1 / 3)
    metal = rng.normal(size=(n_perm, 3))
    metal *= (radius * rng.random(n_perm) ** (1 / 3) / np.linalg.norm(metal, axis=1))[:, None]
    symbols, positions, permuted, parents = [], [], [], []
    for j in range(n_perm):
        permuted.append(len(symbols))
        symbols.append("Ga")
        positions.append(metal[j])
        if j % 2 == 1:
            parents.append((len(symbols), (j - 1, j)))
            symbols.append("O")
            positions.append((metal[j - 1] + metal[j]) / 2 + 0.3)
    ligand_of = np.zeros((len(symbols), n_perm), dtype=bool)
    for i, js in parents:
        ligand_of[i, list(js)] = True
    return StartingModel(symbols=np.array(symbols), positions=np.array(positions),
                         permuted=np.array(permuted, dtype=np.int64), ligand_of=ligand_of)


def write_planted_store(path: str | Path, size: int, n_perm: int = 40, n_planted: int = 10, chunk_size: int = 500,
                        seed: int = 0, fail_fraction: float = 0.03, pending_chunks: int = 0,
                        noise: float = 0.005) -> PlantedCampaign:
    """A campaign store (layout of docs/design.md) whose R_wp depends on known atoms.

    Masks are uniform-size (k uniform in 1..n_perm-1, then k random atoms); `fail_fraction` of the
    rows are NONFINITE (R_wp NaN); the last `pending_chunks` chunks are left unfitted (PENDING).
    """
    zarr.config.set({"array.write_empty_chunks": True})
    model = planted_model(n_perm, seed)
    root = zarr.open_group(str(path), mode="w")
    n_chunks = -(-size // chunk_size)
    row = dict(chunks=(chunk_size,), dimension_names=("candidate",))
    arrays = {
        "mask": root.create_array("mask", shape=(size, n_perm), chunks=(chunk_size, n_perm), dtype="bool",
                                  fill_value=False, dimension_names=("candidate", "atom")),
        "n_atoms": root.create_array("n_atoms", shape=(size,), dtype="int32", fill_value=0, **row),
        **{k: root.create_array(k, shape=(size,), dtype="float64", fill_value=float("nan"), **row)
           for k in ("rwp", "scale", "zoom", "uiso")},
        "status": root.create_array("status", shape=(size,), dtype="int8", fill_value=0, **row),
        "duplicate_of": root.create_array("duplicate_of", shape=(size,), dtype="int64", fill_value=-1, **row),
    }
    chunk = dict(shape=(n_chunks,), chunks=(1,), dimension_names=("chunk",))
    done = root.create_array("chunk_done", dtype="int32", fill_value=0, **chunk)
    secs = root.create_array("chunk_seconds", dtype="float64", fill_value=0.0, **chunk)
    ends = root.create_array("chunk_end", dtype="float64", fill_value=0.0, **chunk)
    root.create_array("atom_index", shape=(n_perm,), chunks=(n_perm,), dtype="int64", fill_value=-1,
                      dimension_names=("atom",))[:] = model.permuted
    planted = np.arange(n_planted)
    for c in range(n_chunks - pending_chunks):
        start, stop = c * chunk_size, min(size, (c + 1) * chunk_size)
        rng = np.random.default_rng([seed, c])
        n = stop - start
        k = rng.integers(1, n_perm, size=n)
        mask = np.argsort(rng.random((n, n_perm)), axis=1).argsort(axis=1) < k[:, None]
        rwp = (0.6 - 0.04 * mask[:, planted].sum(1) + 0.01 * (mask.sum(1) - mask[:, planted].sum(1))
               + rng.normal(0, noise, n))
        status = np.where(rng.random(n) < fail_fraction, Status.NONFINITE, Status.OK).astype(np.int8)
        ok = status == Status.OK
        t0 = time.perf_counter()
        arrays["mask"][start:stop] = mask
        arrays["n_atoms"][start:stop] = model.motif_size(mask)
        arrays["rwp"][start:stop] = np.where(ok, rwp, np.nan)
        arrays["scale"][start:stop] = np.where(ok, 1.0, np.nan)
        arrays["zoom"][start:stop] = np.where(ok, 1.0, np.nan)
        arrays["uiso"][start:stop] = np.where(ok, 0.005, np.nan)
        arrays["status"][start:stop] = status
        secs[c] = time.perf_counter() - t0
        ends[c] = time.time()
        done[c] = n  # written last, as the store's ledger rule says
    root.attrs["motex_dask"] = {
        "format": 1, "version": "synthetic", "fingerprint": f"planted-{seed}", "size": size,
        "chunk_size": chunk_size, "n_chunks": n_chunks, "n_perm": n_perm,
        "permuted_symbols": [str(model.symbols[i]) for i in model.permuted],
        "status_codes": {s.name: int(s) for s in Status}, "settings": {},
    }
    return PlantedCampaign(path=str(path), model=model, planted=planted, size=size, chunk_size=chunk_size)


class PeakRSS:
    """Samples this process's resident memory in a thread (the client's share of the work)."""

    def __init__(self, interval: float = 0.05):
        self.peak, self._stop, self._interval = 0, threading.Event(), interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _worker_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _start_sampler(dask_worker) -> None:
    """Per worker: a PeakRSS sampler, read and restarted at each phase boundary."""
    dask_worker.motex_peak = PeakRSS().__enter__()


def _phase_peak_mib(dask_worker) -> float:
    """Peak RSS since the last call (MiB); starts the next phase."""
    sampler = dask_worker.motex_peak
    sampler.__exit__()
    dask_worker.motex_peak = PeakRSS().__enter__()
    return round(max(sampler.peak, psutil.Process().memory_info().rss) / 2**20, 1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="candidates in the store")
    ap.add_argument("--n-perm", type=int, default=128, help="permuted atoms (features = n_perm + 1)")
    ap.add_argument("--planted", type=int, default=10, help="motif atoms")
    ap.add_argument("--chunk-size", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--trials", type=int, default=4, help="hyper-parameter trials (0: no search)")
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--max-depth", type=int, default=4,
                    help="deepest trees the search may pick (exact SHAP costs ~2^depth·depth² per tree)")
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--explain-rows", type=int, default=0, help="candidates explained (0: all OK ones)")
    ap.add_argument("--store", help="where to write the store (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line, last")
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    from motex_dask.explain import explain
    from motex_dask.learn import load_features, train

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or str(Path(tmp) / "planted.zarr")
        t0 = time.perf_counter()
        camp = write_planted_store(path, args.n, n_perm=args.n_perm, n_planted=args.planted,
                                   chunk_size=args.chunk_size)
        t_store = time.perf_counter() - t0
        settings = replace(LearnSettings(), tune=args.trials > 0, n_trials=max(args.trials, 1),
                           max_rounds=args.max_rounds, bootstrap=args.bootstrap)
        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client, PeakRSS() as client_peak:
            base_rss = psutil.Process().memory_info().rss
            client.run(_start_sampler)
            phase_peaks = {"start": client.run(_phase_peak_mib)}
            t0 = time.perf_counter()
            features = load_features(path)
            t_load = time.perf_counter() - t0
            trained = train(client, features, settings, search_space={"max_depth": (2, args.max_depth)})
            phase_peaks["load+train"] = client.run(_phase_peak_mib)
            t1 = time.perf_counter()
            contrib = explain(client, features, trained, settings, max_rows=args.explain_rows)
            t_explain = time.perf_counter() - t1
            total = time.perf_counter() - t0
            phase_peaks["explain"] = client.run(_phase_peak_mib)
            worker_peaks = client.run(_worker_peak_mib)
    top = set(np.argsort(contrib.rank)[: args.planted].tolist())
    figures = {
        "n": args.n, "n_perm": args.n_perm, "n_features": args.n_perm + 1, "n_ok": features.n_ok,
        "chunk_size": args.chunk_size, "workers": args.workers, "threads_per_worker": args.threads,
        "feature_matrix_mib": args.n * (args.n_perm + 1) * 4 / 2**20,
        "store_write_seconds": round(t_store, 2), "load_seconds": round(t_load, 2),
        "train_seconds": {k: round(v, 2) for k, v in trained.seconds.items()},
        "explain_seconds": round(t_explain, 2), "total_seconds": round(total, 2),
        "shap_core_us_per_row": round(contrib.seconds["shap"] * args.workers * args.threads
                                      / contrib.n_explained * 1e6, 1),
        "n_trees": trained.n_trees, "max_depth_searched": args.max_depth, "best_params": trained.best_params,
        "test_r2": trained.metrics["test"]["r2"], "test_rmse": trained.metrics["test"]["rmse"],
        "n_explained": contrib.n_explained, "shap_check_max_abs_diff": contrib.shap_check["max_abs_diff"],
        "planted_in_top_ranks": len(top & set(camp.planted.tolist())) / args.planted,
        "worker_peak_rss_mib": {w: round(v, 1) for w, v in worker_peaks.items()},
        "worker_phase_peak_rss_mib": {w: {ph: peaks[w] for ph, peaks in phase_peaks.items()} for w in worker_peaks},
        "client_peak_rss_mib": round(client_peak.peak / 2**20, 1),
        "client_rss_growth_mib": round((client_peak.peak - base_rss) / 2**20, 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>26}: {v}")
    return figures


if __name__ == "__main__":
    main()
