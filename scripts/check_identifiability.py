"""How well can a PDF locate a sub-cluster inside a nanoparticle cut from a crystal? R_wp of its copies.

For the au(ag)_sphere demo's motif (a 7.6 Å sphere of a 12 Å fcc particle) this fits, with the
batched engine and the demo campaign's fit settings, the true motif and the same sphere moved by
each fcc lattice vector of length ≤ one cell edge that keeps it inside the particle; and spheres
moved off the lattice by 0.5–4 Å in random directions. A pure Au particle (every Ag made Au, its
own simulated data) is compared with the random AuAg alloy of the demo. In a pure crystal every
lattice translate has exactly the truth's distances: no method can tell them apart from the PDF.

    python scripts/check_identifiability.py [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from motex_dask.campaign_file import load_campaign
from motex_dask.fit import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_nanoparticle_demo import DEMOS, LATTICE, NOISE, SETTINGS, fcc_sphere, motif_indices  # noqa: E402
from motex_dask.pdf import pdf_from_atoms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rwp_of_copies(symbols: np.ndarray, pos: np.ndarray, demo, fit) -> dict:
    truth = motif_indices(pos, demo)
    r, g = pdf_from_atoms(symbols[truth], pos[truth], **SETTINGS)
    g = g + np.random.default_rng([demo.seed, 1]).normal(0.0, NOISE * np.abs(g).max(), size=g.shape)
    w = (r >= fit.rmin) & (r < fit.rmax)
    engine = make_engine(symbols, pos, r[w], g[w], fit)
    radius, centre = demo.semi_axes[0], np.asarray(demo.motif_centre)
    inside = np.linalg.norm(pos, axis=1).max()
    half = LATTICE / 2
    shifts = [np.array(v) * half for v in itertools.product((-2, -1, 0, 1, 2), repeat=3)
              if sum(v) % 2 == 0 and 0 < np.linalg.norm(v) * half <= LATTICE + 1e-9]
    shifts = [s for s in shifts if np.linalg.norm(centre + s) + radius <= inside]  # copy wholly inside
    masks = [np.linalg.norm(pos - (centre + s), axis=1) <= radius for s in [np.zeros(3), *shifts]]
    rng = np.random.default_rng(0)
    off = {}
    for d in (0.5, 1.0, 2.0, 4.0):
        u = rng.normal(size=(20, 3))
        u /= np.linalg.norm(u, axis=1)[:, None]
        off[d] = [np.linalg.norm(pos - (centre + d * v), axis=1) <= radius for v in u]
    res = engine.fit(np.array(masks + [m for ms in off.values() for m in ms]))
    rwp = np.asarray(res.rwp)
    n_copies = len(masks)
    out = {"truth_rwp": float(rwp[0]), "lattice_copies": len(shifts),
           "lattice_copies_rwp_min": float(rwp[1:n_copies].min()) if shifts else None,
           "lattice_copies_rwp_max": float(rwp[1:n_copies].max()) if shifts else None}
    k = n_copies
    for d, ms in off.items():
        vals = rwp[k:k + len(ms)]
        overlap = np.mean([m[truth].mean() for m in ms])
        out[f"off_lattice_{d}A"] = {"rwp_min": float(vals.min()), "rwp_median": float(np.median(vals)),
                                    "overlap_with_truth": float(overlap)}
        k += len(ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    demo = DEMOS[0]
    fit = load_campaign(ROOT / "workflows" / f"{demo.name}.yaml").fit
    atoms = fcc_sphere(demo.model_radius, demo.seed)
    pos = atoms.get_positions()
    alloy = np.array(atoms.get_chemical_symbols())
    rows = {"pure Au": rwp_of_copies(np.full(len(pos), "Au"), pos, demo, fit),
            "random AuAg (the demo)": rwp_of_copies(alloy, pos, demo, fit)}
    for name, row in rows.items():
        print(f"{name}: truth R_wp {row['truth_rwp']:.4f}; {row['lattice_copies']} lattice copies inside: "
              f"R_wp {row['lattice_copies_rwp_min']:.4f}–{row['lattice_copies_rwp_max']:.4f}; off-lattice moves "
              + ", ".join(f"{d}: min {v['rwp_min']:.4f} median {v['rwp_median']:.4f} (overlap {v['overlap_with_truth']:.2f})"
                          for d, v in ((k.split('_')[-1], v) for k, v in row.items() if k.startswith("off_"))))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
