"""Build the nanoparticle demos (workflows/data/): large fcc Au starting models, a known motif, its PDF.

Two demos with a truth to check (issue 12: large starting models and the cookie-cutter catalogue):

* ``au_sphere``: a spherical Au nanoparticle cut from the fcc crystal (a = 4.078 Å, radius 12 Å,
  418 atoms); the data are the simulated PDF of a compact sub-cluster of 106 of its atoms: those
  within 7.6 Å of a point 4.7 Å off the particle's centre (not a lattice site).
* ``au_rod``: an elongated one: the starting model is a 13 Å sphere (557 atoms) and the motif the
  86 atoms inside a prolate ellipsoid (semi-axes 11 × 5.6 × 5.6 Å) along [1 1 0.3], 3 Å off-centre.

The data are X-ray PDFs with realistic settings (Qmin 0.8, Qmax 24 Å⁻¹, Qdamp 0.03, Qbroad 0.01,
Uiso 0.008 Å², a 0.3 % expansion) and 1 % Gaussian noise, written like PDFgetX3 .gr files. The
truth (0-based indices of the motif's atoms in the starting model) goes to ``<name>_truth.txt``.

    python scripts/build_nanoparticle_demo.py [--out workflows/data]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np

from motex_dask.pdf import pdf_from_atoms, write_gr

LATTICE = 4.078          # Å, fcc Au at room temperature
SETTINGS = dict(qmin=0.8, qmax=24.0, qdamp=0.03, qbroad=0.01, rmin=0.5, rmax=25.0, rstep=0.01,
                uiso=0.008, zoom=1.003, radiation="xray")
NOISE = 0.005            # Gaussian noise, as a fraction of max |G|
SILVER = 0.5             # chance that a site holds Ag instead of Au (a random, chemically disordered alloy)


@dataclass(frozen=True)
class Demo:
    """A starting model (fcc sphere) and the motif inside it: a sphere or a prolate ellipsoid."""

    name: str
    model_radius: float       # Å
    motif_centre: tuple       # Å, relative to the particle's centre
    semi_axes: tuple          # Å: (long, short, short); equal for a sphere
    long_axis: tuple          # direction of the long semi-axis
    seed: int
    description: str


DEMOS = (
    Demo("auag_sphere", 12.0, (4.4, 0.9, -1.3), (7.6, 7.6, 7.6), (1.0, 0.0, 0.0), 12,
         "spherical sub-cluster 4.7 Å off the centre of a 12 Å AuAg alloy sphere"),
    Demo("auag_rod", 13.0, (1.6, -1.9, 1.7), (11.0, 5.6, 5.6), (1.0, 1.0, 0.3), 13,
         "prolate (11 x 5.6 x 5.6 Å) sub-cluster inside a 13 Å AuAg alloy sphere"),
)


def fcc_sphere(radius: float, seed: int, silver: float = SILVER) -> ase.Atoms:
    """Every fcc site within `radius` of a point off the lattice sites, each Ag with chance `silver`, else Au."""
    n = int(np.ceil(radius / LATTICE)) + 1
    bulk = ase.build.bulk("Au", "fcc", a=LATTICE, cubic=True).repeat((2 * n, 2 * n, 2 * n))
    pos = bulk.get_positions() - n * LATTICE + np.array([0.31, 0.17, 0.23])
    pos = pos[np.linalg.norm(pos, axis=1) <= radius]
    symbols = np.where(np.random.default_rng([seed, 0]).random(len(pos)) < silver, "Ag", "Au")
    return ase.Atoms(symbols.tolist(), positions=pos)


def motif_indices(positions: np.ndarray, demo: Demo) -> np.ndarray:
    """Atoms inside the motif's ellipsoid (long semi-axis along `long_axis`)."""
    u = np.asarray(demo.long_axis, float)
    u /= np.linalg.norm(u)
    v = np.cross(u, [0.0, 0.0, 1.0] if abs(u[2]) < 0.9 else [1.0, 0.0, 0.0])
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    rel = (positions - np.asarray(demo.motif_centre)) @ np.stack([u, v, w]).T
    return np.flatnonzero(((rel / np.asarray(demo.semi_axes)) ** 2).sum(axis=1) <= 1.0)


def build(demo: Demo, out: Path) -> tuple[int, int]:
    model = fcc_sphere(demo.model_radius, demo.seed)
    truth = motif_indices(model.get_positions(), demo)
    ase.io.write(out / f"{demo.name}_model.xyz", model, format="xyz",
                 comment=f"random fcc AuAg alloy sphere of radius {demo.model_radius} A cut from the crystal "
                         f"(a = {LATTICE} A, Ag share {SILVER})")
    motif = model[truth]
    r, g = pdf_from_atoms(motif.get_chemical_symbols(), motif.get_positions(), **SETTINGS)
    g_obs = g + np.random.default_rng([demo.seed, 1]).normal(0.0, NOISE * np.abs(g).max(), size=g.shape)
    header = {"source": f"simulated X-ray PDF of a {demo.description} (motex_dask scripts/build_nanoparticle_demo.py)",
              **SETTINGS, "noise_fraction_of_max": NOISE, "seed": demo.seed}
    write_gr(out / f"{demo.name}_motif.gr", r, g_obs, header)
    (out / f"{demo.name}_truth.txt").write_text(
        f"# {demo.description}: indices (0-based) of the {len(truth)} motif atoms in {demo.name}_model.xyz\n"
        + "\n".join(str(i) for i in truth) + "\n")
    return len(model), len(truth)


def read_truth(path: Path) -> np.ndarray:
    """The motif's atom indices written by `build`."""
    return np.loadtxt(path, dtype=np.int64, comments="#", ndmin=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "workflows" / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for demo in DEMOS:
        n_model, n_motif = build(demo, args.out)
        print(f"{demo.name}: model {n_model} atoms, motif {n_motif} atoms ({demo.description})")


if __name__ == "__main__":
    main()
