"""Campaign store benchmark: write throughput of fit results, and resume overhead of a complete store.

    python scripts/bench_store.py [--size 1000000] [--chunk-size 2000] [--threads 4] [--dir DIR] [--json]

Builds a store for a C60 campaign (60 permuted atoms), writes every chunk with synthetic fit results
through `CampaignStore.write_chunk` (what fit tasks call), first from one thread, then from
--threads threads (as several workers would), and times what a resumed `motex run` does before it
knows there is nothing left: open the store for a run (lock, fingerprint, size), read the ledger,
and `run_fits` with a live client; and, for a store whose run was killed before it saved its
ledger snapshot, the time to read every chunk's ledger entry instead. With --json the last line is
one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.build
import ase.io
import numpy as np

from motex_dask.inputs import prepare
from motex_dask.catalogue import chunk_candidates
from motex_dask.campaign_file import load_campaign
from motex_dask.fit import Status
from motex_dask.graph import FitProblem, run_fits
from motex_dask.pdf import pdf_from_atoms, write_gr
from motex_dask.store import CampaignStore, shape_columns

PDF = dict(qmin=0.7, qmax=20.0, qdamp=0.04, qbroad=0.01, rmin=0.5, rmax=12.0, rstep=0.01, uiso=0.005,
           zoom=1.0, radiation="xray")


def write_campaign(folder: Path, size: int, chunk_size: int, store: Path) -> Path:
    atoms = ase.build.molecule("C60")
    ase.io.write(folder / "c60.xyz", atoms, format="xyz")
    r, g = pdf_from_atoms(atoms.get_chemical_symbols(), atoms.get_positions(), **PDF)
    write_gr(folder / "c60.gr", r, g, PDF)
    path = folder / "bench.yaml"
    path.write_text(f"structure: c60.xyz\ndata: c60.gr\npermute: [C]\noutput: out\nstore: {store}\n"
                    f"catalogue: {{size: {size}, chunk_size: {chunk_size}}}\n")
    return path


def payload(campaign, model, c: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Chunk c's arrays as a fit task would write them: ~90 % OK, some duplicates and failures."""
    drawn = chunk_candidates(campaign.catalogue, model.permuted_positions, c)
    masks = drawn.masks
    n = len(masks)
    status = rng.choice([Status.OK, Status.DUPLICATE, Status.NONFINITE, Status.EMPTY], size=n,
                        p=[0.9, 0.07, 0.02, 0.01]).astype(np.int8)
    ok = status == Status.OK
    out = {"mask": masks, "n_atoms": masks.sum(axis=1).astype(np.int32), "status": status, **shape_columns(drawn),
           "duplicate_of": np.where(status == Status.DUPLICATE, c * campaign.catalogue.chunk_size, -1),
           "round": np.zeros(n, np.int16), "origin": np.zeros(n, np.int8)}
    for name, lo, hi in (("rwp", 0.1, 0.9), ("scale", 0.5, 2.0), ("zoom", 0.97, 1.03), ("uiso", 0.001, 0.05)):
        out[name] = np.where(ok, rng.uniform(lo, hi, n), np.nan)
    out["rwp"][status == Status.EMPTY] = 1.0
    out["scale"][status == Status.EMPTY] = 0.0
    return out


def bench(args: argparse.Namespace, root: Path) -> dict:
    store_path = root / "bench.zarr"
    inputs = prepare(load_campaign(write_campaign(root, args.size, args.chunk_size, store_path)))
    campaign, model, data = inputs.campaign, inputs.model, inputs.data
    url = str(store_path)
    rng = np.random.default_rng(0)
    with CampaignStore.open_for_run(url, campaign, model, data) as store:
        n = store.n_chunks
        samples = [payload(campaign, model, c, rng) for c in range(min(n, 16))]
        serial = max(1, n // 4)  # a quarter of the chunks from one thread, the rest from a pool
        t0 = time.perf_counter()
        for c in range(serial):
            store.write_chunk(c, _cut(samples[c % len(samples)], store, c), 1.0)
        t_serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda c: store.write_chunk(c, _cut(samples[c % len(samples)], store, c), 1.0),
                          range(serial, n)))
        t_pool = time.perf_counter() - t0
        for c in range(n):  # as run_fits does when each task returns, then at the end of the run
            store.note_done(c)
        store.checkpoint()
        t0 = time.perf_counter()
        assert np.all(store.ledger("chunk_done") > 0)
        t_ledger = time.perf_counter() - t0  # a resume after a kill that beat the last snapshot
    rows_serial = serial * args.chunk_size
    rows_pool = args.size - rows_serial
    disk = sum(p.stat().st_size for p in store_path.rglob("*") if p.is_file())

    # Resume: what `motex run` does on a complete store before it finds nothing to do.
    opens = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        with CampaignStore.open_for_run(url, campaign, model, data) as store:
            todo = store.incomplete_chunks()
        opens.append(time.perf_counter() - t0)
        assert todo == []
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        with CampaignStore.open_for_run(url, campaign, model, data) as store:
            summary = run_fits(client, store, FitProblem(model, data, campaign.fit, campaign.catalogue,
                                                         store.fingerprint), progress=False)
        t_run = time.perf_counter() - t0
    assert summary["chunks"] == 0
    return {
        "size": args.size, "chunk_size": args.chunk_size, "n_chunks": n, "n_perm": model.n_perm,
        "write_fits_per_s_1_thread": rows_serial / t_serial,
        f"write_fits_per_s_{args.threads}_threads": rows_pool / t_pool,
        "write_chunks_per_s_1_thread": serial / t_serial,
        "store_bytes": disk, "bytes_per_fit": disk / args.size,
        "resume_open_s": statistics.median(opens),
        "resume_run_fits_s": t_run,
        "resume_ledger_only_s": t_ledger,
    }


def _cut(sample: dict[str, np.ndarray], store: CampaignStore, c: int) -> dict[str, np.ndarray]:
    """A sample payload cut to chunk c's length (the last chunk may be shorter)."""
    start, stop = store.bounds(c)
    return {k: v[: stop - start] for k, v in sample.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="candidates (default 10^6)")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4, help="parallel writers for the second timing")
    parser.add_argument("--repeat", type=int, default=5, help="timed resume checks (the median is reported)")
    parser.add_argument("--dir", type=Path, help="where to build the store (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(dir=args.dir))
        figures = bench(args, root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = bench(args, Path(tmp))
    for key, value in figures.items():
        print(f"{key:32s} {value:,.3f}" if isinstance(value, float) else f"{key:32s} {value:,}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
