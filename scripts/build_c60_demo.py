"""Build the C60 demo inputs (workflows/data/): the starting model and a simulated measured PDF.

Starting model: one whole C60 at the origin plus the nearest atoms of its 12 neighbours in the fcc
C60 crystal (a = 14.17 Å), 130 atoms in all: ML-MotEx's first example. Data: the PDF of one ideal
C60 with realistic instrument settings and noise, written like a PDFgetX3 .gr file.

    python scripts/build_c60_demo.py [--out workflows/data]
"""

from __future__ import annotations

import argparse
from itertools import product
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np

from motex_dask.pdf import pdf_from_atoms, write_gr

LATTICE = 14.17          # Å, fcc C60 at room temperature
FRAGMENT_RADIUS = 7.44   # Å: takes the 70 nearest neighbour atoms (a gap lies at 7.39–7.49 Å)
SETTINGS = dict(qmin=0.7, qmax=20.0, qdamp=0.04, qbroad=0.01, rmin=0.5, rmax=15.0, rstep=0.01,
                uiso=0.005, zoom=1.0, radiation="xray")
NOISE = 0.01             # Gaussian noise, as a fraction of max |G|
SEED = 60


def build_model() -> ase.Atoms:
    """Central C60 first (atoms 0–59), then neighbour fragments sorted by distance."""
    c60 = ase.build.molecule("C60")
    c60.translate(-c60.get_positions().mean(axis=0))
    centres = []
    for axes in ((0, 1), (0, 2), (1, 2)):
        for signs in product((1, -1), repeat=2):
            centre = np.zeros(3)
            centre[list(axes)] = np.array(signs) * LATTICE / 2
            centres.append(centre)
    neighbours = np.concatenate([c60.get_positions() + c for c in centres])
    dist = np.linalg.norm(neighbours, axis=1)
    order = np.argsort(dist, kind="stable")
    fragments = neighbours[order[dist[order] <= FRAGMENT_RADIUS]]
    positions = np.concatenate([c60.get_positions(), fragments])
    return ase.Atoms("C" * len(positions), positions=positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "workflows" / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model()
    ase.io.write(args.out / "c60_model.xyz", model, format="xyz",
                 comment="C60 in its fcc crystal: central molecule (atoms 0-59) + 70 neighbour atoms")
    ideal = model[:60]
    r, g = pdf_from_atoms(ideal.get_chemical_symbols(), ideal.get_positions(), **SETTINGS)
    rng = np.random.default_rng(SEED)
    g_obs = g + rng.normal(0.0, NOISE * np.abs(g).max(), size=g.shape)
    header = {"source": "simulated X-ray PDF of one ideal C60 (motex_dask scripts/build_c60_demo.py)",
              **SETTINGS, "noise_fraction_of_max": NOISE, "seed": SEED}
    write_gr(args.out / "c60_ideal.gr", r, g_obs, header)
    print(f"wrote {args.out / 'c60_model.xyz'} ({len(model)} atoms) and {args.out / 'c60_ideal.gr'} ({len(r)} points)")


if __name__ == "__main__":
    main()
