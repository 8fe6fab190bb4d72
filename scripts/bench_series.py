"""Time-resolved series benchmark: the fit stage for F frames against one frame, and growing a store.

    python scripts/bench_series.py                   # F = 10 and 50 on a 24,000-candidate C60 catalogue
    python scripts/bench_series.py --size 8000 --frames 10 50 --json

Catalogue and settings: workflows/c60.yaml (the 130-atom C60 fragment). Frames: 60 simulated
PDFs of the central C60 plus the neighbour atoms within a radius that rises and falls, the sample
heating up (zoom, Uiso), 1 % noise. Each campaign runs in a
fresh process on a fresh store (frames_per_task 10), the embedded LocalCluster with --workers
single-threaded workers, like `motex run --fits-only`. The fit stage is run_fits' wall time (keys
and duplicates, all fit tasks, store writes). Checked:

* fit stage(F) / fit stage(one frame, a one-file campaign) <= 1 + 0.25 (F - 1) for each F;
* adding 10 frames to the finished 50-frame store fits exactly size x 10 (candidate, frame) pairs
  and leaves every array of the 50 fitted frames bit-identical.

The engine's own marginal cost of a frame (one 2,000-candidate chunk, in this process) is printed too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from motex_dask.pdf import pdf_from_atoms, write_gr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import RUNNER, write_campaign  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "workflows" / "c60.yaml"


def write_frames(folder: Path, n: int) -> list[Path]:
    """n frames of a C60 cluster whose neighbour shell radius rises and falls, heating up."""
    import ase.io

    model = ase.io.read(ROOT / "workflows" / "data" / "c60_model.xyz")
    pos, sym = model.get_positions(), np.array(model.get_chemical_symbols())
    dist = np.linalg.norm(pos[60:], axis=1)
    rng = np.random.default_rng(50)
    paths = []
    for k in range(n):
        t = k / max(n - 1, 1)
        radius = 6.5 + 1.0 * np.sin(np.pi * 3 * t) ** 2
        keep = np.concatenate([np.arange(60), 60 + np.flatnonzero(dist < radius)])
        r, g = pdf_from_atoms(sym[keep], pos[keep], qmin=0.7, qmax=20.0, qdamp=0.04, qbroad=0.01, rmin=0.5,
                              rmax=15.0, rstep=0.01, uiso=0.005 + 0.002 * t, zoom=1.0 + 0.004 * t)
        paths.append(folder / f"frame_{k + 1}.gr")
        write_gr(paths[-1], r, g + rng.normal(0.0, 0.01 * np.abs(g).max(), g.size), {"frame": k + 1})
    return paths


def campaign(workdir: Path, tag: str, data, size: int, chunk: int, workers: int, store: Path) -> Path:
    series = {"frames_per_task": 10} if isinstance(data, list) else {}
    return write_campaign(BASE, workdir, size, workers, tag, chunk_size=chunk, data=data, store=str(store), **series)


def fit_stage(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", RUNNER, str(path), "fits-only"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["fits"]


def frame_hashes(store: Path, n_frames: int) -> dict[str, str]:
    """sha256 of every per-candidate array and of the first n_frames frames of each frame array."""
    from motex_dask.store import CampaignStore

    s = CampaignStore.open_readonly(str(store))
    out = {}
    for name in ("mask", "n_atoms", "duplicate_of", *s.frame_arrays):
        a = s.array(name)[:]
        a = a[:, :n_frames] if name in s.frame_arrays else a
        out[name] = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return out


def engine_marginal(frames: list[Path], n: int = 10) -> dict:
    """Engine only: seconds for one 2,000-candidate chunk against 1 and n frames (this process)."""
    from motex_dask.inputs import prepare
    from motex_dask.campaign_file import load_campaign
    from motex_dask.catalogue import chunk_masks
    from motex_dask.data import read_frames
    from motex_dask.fit import make_engine

    inp = prepare(load_campaign(ROOT / "workflows" / "c60.yaml"))
    fit = inp.campaign.fit
    data = read_frames(frames[:n], fit.rmin, fit.rmax)
    keep = inp.model.keep_atoms(chunk_masks(inp.campaign.catalogue, inp.model.permuted_positions, 0))
    one = make_engine(inp.model.symbols, inp.model.positions, data[0].r, data[0].g, fit)
    many = make_engine(inp.model.symbols, inp.model.positions, data[0].r, np.array([d.g for d in data]), fit)
    one.fit(keep[:200]), many.fit(keep[:200])  # compiled and warm
    t0 = time.perf_counter()
    one.fit(keep)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    many.fit(keep)
    tn = time.perf_counter() - t0
    return {"one_frame_s": t1, f"{n}_frames_s": tn, "marginal_per_frame": (tn - t1) / (n - 1) / t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=24000)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict = {"size": args.size, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="motex-bench-series-") as tmp:
        work = Path(tmp)
        (work / "frames").mkdir()
        top = max(args.frames)
        frames = write_frames(work / "frames", top + 10)
        out["engine"] = engine_marginal(frames)
        one = fit_stage(campaign(work, "one", str(frames[0]), args.size, args.chunk_size, args.workers,
                                 work / "one.zarr"))
        out["one_frame_s"] = one["seconds"]
        out["series"] = {}
        for n in args.frames:
            s = fit_stage(campaign(work, f"f{n}", [str(p) for p in frames[:n]], args.size, args.chunk_size,
                                   args.workers, work / f"f{n}.zarr"))
            ratio = s["seconds"] / one["seconds"]
            out["series"][n] = {"seconds": s["seconds"], "ratio": ratio, "limit": 1 + 0.25 * (n - 1),
                                "ok": ratio <= 1 + 0.25 * (n - 1)}
        before = frame_hashes(work / f"f{top}.zarr", top)
        grow = fit_stage(campaign(work, "grow", [str(p) for p in frames[:top + 10]], args.size, args.chunk_size,
                                  args.workers, work / f"f{top}.zarr"))
        after = frame_hashes(work / f"f{top}.zarr", top)
        out["grow"] = {"frames_added": 10, "seconds": grow["seconds"], "fits": grow["fits"],
                       "candidates_x_frames": grow["candidates"], "expected": args.size * 10,
                       "unchanged": before == after,
                       "ok": before == after and grow["candidates"] == args.size * 10}
    for n, s in out["series"].items():
        print(f"F = {n:3d}: fit stage {s['seconds']:7.2f} s = {s['ratio']:.2f} x one frame "
              f"({out['one_frame_s']:.2f} s); limit {s['limit']:.2f}: {'ok' if s['ok'] else 'FAILED'}")
    e = out["engine"]
    print(f"engine alone, one chunk: 1 frame {e['one_frame_s']:.2f} s, 10 frames {e['10_frames_s']:.2f} s: "
          f"an extra frame costs {e['marginal_per_frame']:.2f} x the first")
    g = out["grow"]
    print(f"grow {top} -> {top + 10} frames: {g['seconds']:.2f} s, {g['candidates_x_frames']} candidate-frames done "
          f"(expected {g['expected']}), fitted frames unchanged: {g['unchanged']}: {'ok' if g['ok'] else 'FAILED'}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
