"""Scale model: measure each component's rate here, extrapolate to 10^9 candidates on 1,000 workers.

    python scripts/bench_scale_model.py [--json]                     # ~5 min on 2 cores
    python scripts/bench_scale_model.py --dedup-sizes 1e6,1e8 --json # the 10^8 duplicate detection
    python scripts/bench_scale_model.py --learn-sizes 1e5,4e5        # learn memory (slow)

Components (docs/scale_model.md explains the model):

* scheduler: no-op tasks per second through one Dask scheduler, and the tasks per CPU second
  its process spends (client submission included): the rate it could sustain on a core of its own;
* store: `CampaignStore.write_chunk` calls per second and objects written per chunk
  (scripts/bench_store.py, on this machine's disk);
* duplicate detection: peak resident memory of the client process, each size in a fresh process,
  for the old way (one key per candidate gathered to the client, np.unique there) and the
  hash-partitioned reduction on the workers (motex_dask.duplicates); RSS sampled by a thread
  (bench_learn.PeakRSS), no memory tracing;
* learn: peak resident memory per learn worker at two store sizes (scripts/bench_learn.py), as
  bytes per candidate held by a worker.

The extrapolation takes the measured rates and the fit rate per worker (--fits-per-worker, the
README's 3,153 fits/s on C60 by default) and names, for each component, the load at 10^9
candidates / 1,000 workers and where it stops keeping up. With --json the last line printed is one
JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

SCRIPTS = Path(__file__).resolve().parent
#: The campaign the duplicate detection runs on: the catalogue of a 40-atom model.
DEDUP_N_PERM, DEDUP_CHUNK = 40, 100_000


def _noop(x: int) -> int:
    return x


def scheduler_rate(workers: int, tasks: int) -> dict[str, float]:
    """No-op tasks through a scheduler with `workers` single-thread worker processes: wall rate,
    and the rate the scheduler's process could sustain alone (tasks per CPU second it spent, client
    submission included): on a loaded machine, and with more workers, the second is the robust one."""
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        wait(client.map(_noop, range(200), pure=False))  # warm-up
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        wait(client.map(_noop, range(tasks), pure=False))
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    return {"tasks_per_s_wall": tasks / wall, "tasks_per_cpu_s": tasks / cpu, "workers": workers, "tasks": tasks}


def _cpu_seconds() -> float:
    """CPU time of this process (scheduler, client and their threads; LocalCluster hosts the scheduler here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def store_rates() -> dict[str, float]:
    """bench_store.py's write rates (its own fresh process) and the objects one chunk writes."""
    from motex_dask.store.layout import CHUNK_ARRAYS, ROW_ARRAYS

    out = subprocess.run([sys.executable, str(SCRIPTS / "bench_store.py"), "--size", "200000", "--chunk-size", "2000",
                          "--threads", "4", "--repeat", "1", "--json"], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return {"chunk_writes_per_s_1_thread": figures["write_chunks_per_s_1_thread"],
            "chunk_writes_per_s_4_threads": figures["write_fits_per_s_4_threads"] / 2000,
            # one object per array and chunk: the rows, the ledger entries and the host
            "objects_per_chunk": len(ROW_ARRAYS) + len(CHUNK_ARRAYS) + 1}


def dedup_child(method: str, size: int, workers: int) -> dict[str, float]:
    """Run one duplicate detection (in this fresh process): seconds, and the client process's
    resident memory before and at its peak during the detection (sampled by a thread)."""
    from bench_learn import PeakRSS
    from distributed import Client, LocalCluster, wait

    from motex_dask.catalogue import chunk_masks, mask_keys, n_chunks
    from motex_dask.duplicates import find_duplicates
    from motex_dask.settings import CatalogueSettings

    cat = CatalogueSettings(size=size, chunk_size=DEDUP_CHUNK, strategy="bernoulli", keep_probability=0.5, seed=1)
    positions = np.zeros((DEDUP_N_PERM, 3))  # bernoulli draws ignore positions
    chunks = n_chunks(size, DEDUP_CHUNK)
    # No dashboard: the client process should hold what a campaign's client holds, not bokeh.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": None}) as cluster, \
            Client(cluster) as client:
        before = psutil.Process().memory_info().rss
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            if method == "gather":  # what run_fits did before motex_dask.duplicates: every key to the client
                keys = client.gather(client.map(lambda c: mask_keys(chunk_masks(cat, positions, c)), range(chunks)))
                _, first, inverse = np.unique(np.concatenate(keys), return_index=True, return_inverse=True)
                n_dup = int((first[inverse.ravel()] != np.arange(size)).sum())
                del keys, first, inverse
            else:
                found = find_duplicates(client, cat, positions, chunks)
                wait(list(found.groups.values()))
                n_dup = sum(client.submit(lambda p: len(p[0]), f).result() for f in found.groups.values())
            seconds = time.perf_counter() - t0
    return {"seconds": seconds, "duplicates": n_dup, "client_rss_before_mib": before / 2**20,
            "client_peak_rss_mib": peak.peak / 2**20}


def dedup_memory(method: str, size: int, workers: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--dedup-child", method, str(size), "--workers", str(workers)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dedup {method} {size}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def learn_memory(size: int, workers: int) -> float:
    """Peak RSS (MiB) of the busiest learn worker for a planted store of `size` candidates."""
    out = subprocess.run([sys.executable, str(SCRIPTS / "bench_learn.py"), "--n", str(size), "--n-perm", "60",
                          "--trials", "0", "--bootstrap", "10", "--explain-rows", "1000", "--workers", str(workers),
                          "--json"], capture_output=True, text=True, check=True)
    return max(json.loads(out.stdout.strip().splitlines()[-1])["worker_peak_rss_mib"].values())


def model(f: dict, candidates: float, workers: int, chunk: int, fits_per_worker: float, learn_workers: int) -> dict:
    """Each component's load at the target, and the largest size/worker count it keeps up with."""
    tasks_per_s = workers * fits_per_worker / chunk  # fit tasks finishing per second, all workers busy
    out: dict[str, dict] = {}
    rate = f["scheduler"]["tasks_per_cpu_s"]
    out["scheduler"] = {"needed_tasks_per_s": tasks_per_s, "measured_tasks_per_s": rate,
                        "max_workers_at_this_chunk_size": rate * chunk / fits_per_worker,
                        "min_chunk_size_for_target": workers * fits_per_worker / rate,
                        "tasks_total": candidates / chunk}
    objects = tasks_per_s * f["store"]["objects_per_chunk"]
    out["store"] = {"needed_chunk_writes_per_s": tasks_per_s, "needed_objects_per_s": objects,
                    "files_total": candidates / chunk * f["store"]["objects_per_chunk"],
                    "measured_chunk_writes_per_s_one_client_4_threads": f["store"]["chunk_writes_per_s_4_threads"]}
    dedup = f.get("dedup", {})
    gathered = sorted((int(s), v) for s, v in dedup.get("gather", {}).items())
    if len(gathered) >= 2:
        (s0, a), (s1, b) = gathered[0], gathered[-1]
        per_row = (b["client_peak_rss_mib"] - a["client_peak_rss_mib"]) * 2**20 / (s1 - s0)
        out["client_dedup_gather"] = {"bytes_per_candidate": per_row,
                                      "client_gib_at_target": per_row * candidates / 2**30,
                                      "candidates_in_16_gib": 16 * 2**30 / per_row if per_row > 0 else None}
    reduced = sorted((int(s), v) for s, v in dedup.get("reduce", {}).items())
    if len(reduced) >= 2:
        (s0, a), (s1, b) = reduced[0], reduced[-1]
        out["client_dedup_reduce"] = {"sizes": [s0, s1], "client_peak_rss_mib": [a["client_peak_rss_mib"],
                                                                              b["client_peak_rss_mib"]],
                                      "ratio": b["client_peak_rss_mib"] / a["client_peak_rss_mib"]}
    learn = sorted((int(s), v) for s, v in f.get("learn_worker_peak_rss_mib", {}).items())
    if len(learn) >= 2:
        (s0, a), (s1, b) = learn[0], learn[-1]
        per_row = (b - a) * 2**20 / ((s1 - s0) / f["learn_workers"])  # bytes per candidate a worker holds
        out["learn"] = {"bytes_per_candidate_per_worker": per_row,
                        "worker_gib_at_target": (a * 2**20 + per_row * candidates / learn_workers) / 2**30,
                        "learn_workers": learn_workers,
                        "learn_workers_for_8_gib_each": per_row * candidates / (8 * 2**30 - a * 2**20)}
    return out


def _sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dedup-child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help="worker processes for dedup and learn (default 2)")
    ap.add_argument("--scheduler-workers", type=int, default=8, help="worker processes for the scheduler rate")
    ap.add_argument("--scheduler-tasks", type=int, default=20_000)
    ap.add_argument("--dedup-sizes", default="1e6,1e7", help="catalogue sizes for duplicate detection")
    ap.add_argument("--gather-max", type=float, default=1e7, help="largest size run the old (gather) way")
    ap.add_argument("--learn-sizes", default="", help="store sizes for learn memory, e.g. 1e5,4e5 (slow)")
    ap.add_argument("--skip", default="", help="comma list of components not to measure: scheduler,store")
    ap.add_argument("--candidates", type=float, default=1e9)
    ap.add_argument("--target-workers", type=int, default=1000)
    ap.add_argument("--chunk-size", type=int, default=2000, help="catalogue.chunk_size at the target")
    ap.add_argument("--fits-per-worker", type=float, default=3153.0)
    ap.add_argument("--learn-workers", type=int, default=2, help="learn.jobs at the target")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.dedup_child:
        print(json.dumps(dedup_child(args.dedup_child[0], int(args.dedup_child[1]), args.workers)))
        return 0

    skip = set(args.skip.split(","))
    figures: dict = {"workers": args.workers}
    if "scheduler" not in skip:
        figures["scheduler"] = scheduler_rate(args.scheduler_workers, args.scheduler_tasks)
        print(f"scheduler: {figures['scheduler']}", flush=True)
    if "store" not in skip:
        figures["store"] = store_rates()
        print(f"store: {figures['store']}", flush=True)
    figures["dedup"] = {"gather": {}, "reduce": {}}
    for size in _sizes(args.dedup_sizes):
        for method in ("gather", "reduce"):
            if method == "gather" and size > args.gather_max:
                continue
            result = dedup_memory(method, size, args.workers)
            figures["dedup"][method][str(size)] = result
            print(f"dedup {method} {size:.0e}: {result}", flush=True)
    if args.learn_sizes:
        figures["learn_workers"] = args.workers
        figures["learn_worker_peak_rss_mib"] = {str(s): learn_memory(s, args.workers) for s in _sizes(args.learn_sizes)}
        print(f"learn: {figures['learn_worker_peak_rss_mib']}", flush=True)
    if "scheduler" in figures and "store" in figures:
        figures["model"] = model(figures, args.candidates, args.target_workers, args.chunk_size,
                                 args.fits_per_worker, args.learn_workers)
        print(json.dumps(figures["model"], indent=1))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
