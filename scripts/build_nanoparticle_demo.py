"""Build the nanoparticle demos (workflows/data/): large fcc starting models, a known motif, its PDF.

Two demos with a truth to check (issue 12: large starting models and the cookie-cutter catalogue):

* ``au_aggregate``: an oriented-attachment aggregate of pure Au (a = 4.078 Å), 345 atoms, all cut
  from one fcc crystal: a 135-atom grain (the fcc sites within 7.8 Å of a lattice site, a closed-
  shell sphere) fused through narrow necks (2.3 Å-radius cylinders between grain centres) to four
  smaller grains of 43–56 atoms. The data are the simulated PDF of the 135-atom grain, 11 Å off the
  aggregate's centre. No copy of that grain under any fcc symmetry operation (lattice translation
  × the 48 cubic point operations) lies inside the aggregate (scripts/check_identifiability.py
  counts them), so the PDF can say which atoms it is: in a plain crystal cut, lattice translates of
  a sub-cluster have exactly its PDF and no method can locate it.
* ``auag_rod``: an elongated motif in a random AuAg alloy: the starting model is a 13 Å sphere (557
  atoms), the motif the 86 atoms inside a prolate ellipsoid (semi-axes 11 × 5.6 × 5.6 Å) along
  [1 1 0.3], 3 Å off-centre. Here lattice translates of the motif lie inside the model and differ
  from it only by their Au/Ag arrangement: the motif is only weakly identifiable (README).

The data are X-ray PDFs with realistic settings (Qmin 0.8, Qmax 24 Å⁻¹, Qdamp 0.03, Qbroad 0.01,
Uiso 0.008 Å², a 0.3 % expansion) and Gaussian noise of 0.5 % of max |G|, written like PDFgetX3
.gr files. The truth (0-based indices of the motif's atoms in the starting model) goes to
``<name>_truth.txt``.

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
OFF_SITE = (0.31, 0.17, 0.23)  # Å: the alloy spheres' centre, off the lattice sites


@dataclass(frozen=True)
class Aggregate:
    """Spherical grains of one fcc crystal joined by cylindrical necks; the motif is grain 0."""

    name: str
    grains: tuple             # ((centre x, y, z) in Å, radius in Å); grain 0 (the motif) sits on a lattice site
    necks: tuple              # pairs of grain numbers joined by a neck
    neck_radius: float        # Å: sites within this distance of the segment between two grain centres
    seed: int
    description: str


@dataclass(frozen=True)
class AlloyEllipsoid:
    """A random AuAg alloy sphere; the motif is the atoms inside a prolate ellipsoid."""

    name: str
    model_radius: float       # Å
    motif_centre: tuple       # Å, relative to the particle's centre
    semi_axes: tuple          # Å: (long, short, short)
    long_axis: tuple          # direction of the long semi-axis
    seed: int
    description: str


AGGREGATE = Aggregate(
    "au_aggregate",
    grains=(((0.0, 0.0, 0.0), 7.8), ((13.3, 3.1, -1.9), 6.0), ((20.9, -5.3, 1.4), 5.8),
            ((26.0, 5.2, -4.0), 6.1), ((12.3, -2.2, 11.4), 5.6)),
    necks=((0, 1), (1, 2), (1, 3), (1, 4)), neck_radius=2.3, seed=12,
    description="135-atom grain of a 345-atom Au oriented-attachment aggregate, 11 Å off its centre")
ROD = AlloyEllipsoid("auag_rod", 13.0, (1.6, -1.9, 1.7), (11.0, 5.6, 5.6), (1.0, 1.0, 0.3), 13,
                     "prolate (11 x 5.6 x 5.6 Å) sub-cluster inside a 13 Å AuAg alloy sphere")
DEMOS = (AGGREGATE, ROD)


def fcc_sites(extent: float, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Every fcc site (a = LATTICE, one at `origin`) in the cube |x|, |y|, |z| <= extent (Å) around `origin`."""
    n = int(np.ceil(extent / LATTICE)) + 1
    bulk = ase.build.bulk("Au", "fcc", a=LATTICE, cubic=True).repeat((2 * n, 2 * n, 2 * n))
    return bulk.get_positions() - n * LATTICE + np.asarray(origin)


def fcc_sphere(radius: float, seed: int, silver: float = SILVER) -> ase.Atoms:
    """Every fcc site within `radius` of a point off the lattice sites, each Ag with chance `silver`, else Au."""
    pos = fcc_sites(radius, OFF_SITE)
    pos = pos[np.linalg.norm(pos, axis=1) <= radius]
    symbols = np.where(np.random.default_rng([seed, 0]).random(len(pos)) < silver, "Ag", "Au")
    return ase.Atoms(symbols.tolist(), positions=pos)


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point to the segment a–b."""
    t = np.clip((points - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * (b - a)), axis=1)


def aggregate_grains(demo: Aggregate) -> tuple[np.ndarray, np.ndarray]:
    """The aggregate's sites and each one's grain (-1: a neck site outside every grain)."""
    centres = np.array([c for c, _ in demo.grains])
    extent = max(np.abs(c).max() + r for c, r in demo.grains)
    pos = fcc_sites(extent)
    grain = np.full(len(pos), -1)
    inside = np.zeros(len(pos), dtype=bool)
    for g, (centre, radius) in reversed(list(enumerate(demo.grains))):  # a site in two grains: the lower number
        here = np.linalg.norm(pos - centre, axis=1) <= radius
        grain[here] = g
        inside |= here
    for a, b in demo.necks:
        inside |= segment_distance(pos, centres[a], centres[b]) <= demo.neck_radius
    return pos[inside], grain[inside]


def model_and_truth(demo) -> tuple[ase.Atoms, np.ndarray]:
    """The starting model and the motif's atom indices in it."""
    if isinstance(demo, Aggregate):
        pos, grain = aggregate_grains(demo)
        return ase.Atoms(["Au"] * len(pos), positions=pos), np.flatnonzero(grain == 0)
    model = fcc_sphere(demo.model_radius, demo.seed)
    return model, ellipsoid_indices(model.get_positions(), demo)


def ellipsoid_indices(positions: np.ndarray, demo: AlloyEllipsoid) -> np.ndarray:
    """Atoms inside the motif's ellipsoid (long semi-axis along `long_axis`)."""
    u = np.asarray(demo.long_axis, float)
    u /= np.linalg.norm(u)
    v = np.cross(u, [0.0, 0.0, 1.0] if abs(u[2]) < 0.9 else [1.0, 0.0, 0.0])
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    rel = (positions - np.asarray(demo.motif_centre)) @ np.stack([u, v, w]).T
    return np.flatnonzero(((rel / np.asarray(demo.semi_axes)) ** 2).sum(axis=1) <= 1.0)


def simulated_data(symbols, positions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The X-ray PDF of these atoms with the demo settings, plus Gaussian noise."""
    r, g = pdf_from_atoms(symbols, positions, **SETTINGS)
    return r, g + np.random.default_rng([seed, 1]).normal(0.0, NOISE * np.abs(g).max(), size=g.shape)


def build(demo, out: Path) -> tuple[int, int]:
    model, truth = model_and_truth(demo)
    comment = (f"Au oriented-attachment aggregate: {len(demo.grains)} grains of one fcc crystal (a = {LATTICE} A) "
               f"joined by necks" if isinstance(demo, Aggregate) else
               f"random fcc AuAg alloy sphere of radius {demo.model_radius} A cut from the crystal "
               f"(a = {LATTICE} A, Ag share {SILVER})")
    ase.io.write(out / f"{demo.name}_model.xyz", model, format="xyz", comment=comment)
    motif = model[truth]
    r, g_obs = simulated_data(motif.get_chemical_symbols(), motif.get_positions(), demo.seed)
    header = {"source": f"simulated X-ray PDF of a {demo.description} (motex_dask scripts/build_nanoparticle_demo.py)",
              **SETTINGS, "noise_fraction_of_max": NOISE, "seed": demo.seed}
    write_gr(out / f"{demo.name}_motif.gr", r, g_obs, header)
    (out / f"{demo.name}_truth.txt").write_text(
        f"# {demo.description}: indices (0-based) of the {len(truth)} motif atoms in {demo.name}_model.xyz\n"
        + "\n".join(str(i) for i in truth) + "\n")
    return len(model), len(truth)


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
