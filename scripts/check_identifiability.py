"""Can a PDF say which atoms of the au_aggregate demo are its motif? Symmetry copies and near-truth fits.

A sub-cluster of a crystal cut has exactly the PDF of each of its images under the crystal's space
group (a lattice translation times one of the 48 cubic point operations) that also lies inside the
model: such a copy cannot be told from the truth by any method. This script

1. counts, for the au_aggregate demo (scripts/build_nanoparticle_demo.py), every image of the
   135-atom truth under every fcc lattice translation × point operation whose atoms are all sites of
   the model, other than the truth itself (it must be 0), and the largest share of any other image
   that does lie inside; and, for contrast, the same for the same grain inside a plain 12 Å fcc
   sphere (the old demo's design, where copies exist);
2. fits, with the batched engine and the demo campaign's fit settings, the truth against near-truth
   alternatives: the truth shrunk or grown by an atom shell, with the necks or the next grain
   added, shifted by each nearest-neighbour lattice vector, moved off the lattice, thinned at
   random, and each other grain alone;
3. fits the truth with one atom flipped, for every atom of the model (a truth atom removed, any other
   atom added): the per-atom evidence the data hold at the answer itself. An ideal per-atom ranking
   (keeping the atom changes R_wp by minus its removal cost, or by its addition cost) is scored by its
   top-k overlap with the truth; atoms far from the grain add no pair inside the fit range, so they
   are invisible one at a time, and every effect is ~1e-4 in R_wp against catalogue R_wp spreads of
   ~0.1-0.5: this bounds what any per-atom explanation of a catalogue can recover here.

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
from motex_dask.fit import Engine, make_engine
from motex_dask.stability import truth_overlap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_nanoparticle_demo import AGGREGATE, LATTICE, aggregate_grains, fcc_sites, simulated_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The 48 cubic point operations (signed permutation matrices), about a lattice site.
POINT_OPERATIONS = [np.eye(3, dtype=np.int64)[list(perm)] * np.array(signs)[:, None]
                    for perm in itertools.permutations(range(3)) for signs in itertools.product((1, -1), repeat=3)]


def symmetry_copies(positions: np.ndarray, truth: np.ndarray) -> dict:
    """Images of the truth under the fcc space group (a lattice site at the origin) inside the model.

    Sites become integer coordinates in units of a/2; every image of the truth that could overlap the
    model is the point-operated truth translated so that its first atom lands on a model site.
    """
    sites = np.rint(positions / (LATTICE / 2)).astype(np.int64)
    if not np.allclose(sites * (LATTICE / 2), positions, atol=1e-6):
        raise ValueError("the model's atoms are not fcc sites with one at the origin")
    index = {tuple(s): i for i, s in enumerate(sites)}
    own = frozenset(truth.tolist())
    copies, largest = set(), 0
    for op in POINT_OPERATIONS:
        image = sites[truth] @ op.T
        for site in sites:
            found = [index.get(tuple(s)) for s in image + (site - image[0])]
            kept = frozenset(i for i in found if i is not None)
            if kept == own:
                continue  # a symmetry of the truth itself
            if len(kept) == len(truth):
                copies.add(kept)
            largest = max(largest, len(kept))
    return {"model_atoms": len(positions), "truth_atoms": len(truth), "copies_inside": len(copies),
            "largest_other_image_inside": largest}


def alternatives(positions: np.ndarray, grain: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Named groups of near-truth masks (a group of several is reported by its best and median)."""
    truth = grain == 0
    centre, radius = np.asarray(AGGREGATE.grains[0][0]), AGGREGATE.grains[0][1]
    dist = np.linalg.norm(positions - centre, axis=1)
    shells = np.unique(np.round(dist, 3))
    inner, outer = shells[shells <= radius][-2], shells[shells > radius]  # the truth's last shell, the next ones
    nn = [np.array(v) * LATTICE / 2 for v in itertools.product((-1, 0, 1), repeat=3) if np.count_nonzero(v) == 2]
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(10, 3))
    directions /= np.linalg.norm(directions, axis=1)[:, None]
    groups = {"truth": [truth],
              "shrunk by its outer shell": [dist <= inner + 1e-3],
              "grown by the next shell": [dist <= outer[0] + 1e-3],
              "grown by two shells": [dist <= outer[1] + 1e-3],
              "with every neck atom": [truth | (grain < 0)],
              "with the grain it is fused to": [truth | (grain == 1)],
              "shifted by a nearest-neighbour vector (12)":
                  [np.linalg.norm(positions - centre - v, axis=1) <= radius for v in nn]}
    for d in (0.5, 1.0, 2.0):
        groups[f"moved {d} Å off the lattice (10)"] = [np.linalg.norm(positions - centre - d * u, axis=1) <= radius
                                                       for u in directions]
    for share in (0.05, 0.1):
        groups[f"{share:.0%} of its atoms removed at random (20)"] = [truth & (rng.random(len(truth)) >= share)
                                                                     for _ in range(20)]
    for g in range(1, len(AGGREGATE.grains)):
        groups[f"grain {g} alone"] = [grain == g]
    return groups


def demo_engine(positions: np.ndarray, truth: np.ndarray) -> Engine:
    """The batched engine with the demo campaign's fit settings, against the truth's simulated data."""
    fit = load_campaign(ROOT / "workflows" / f"{AGGREGATE.name}.yaml").fit
    symbols = np.full(len(positions), "Au")
    r, g = simulated_data(symbols[truth], positions[truth], AGGREGATE.seed)
    window = (r >= fit.rmin) & (r < fit.rmax)
    return make_engine(symbols, positions, r[window], g[window], fit)


def fit_alternatives(engine: Engine, positions: np.ndarray, grain: np.ndarray) -> list[dict]:
    """R_wp of the truth and of each group of alternatives against the truth's simulated data."""
    truth = grain == 0
    groups = alternatives(positions, grain)
    rwp = np.asarray(engine.fit(np.array([m for ms in groups.values() for m in ms])).rwp)
    rows, k = [], 0
    for name, masks in groups.items():
        vals = rwp[k:k + len(masks)]
        k += len(masks)
        rows.append({"alternative": name, "atoms": int(np.median([m.sum() for m in masks])),
                     "overlap_with_truth": float(np.median([(m & truth).sum() / truth.sum() for m in masks])),
                     "rwp_best": float(vals.min()), "rwp_median": float(np.median(vals))})
    return rows


SHELLS = (0.0, 3.0, 5.0, 7.0, 8.0, 11.0, 16.0, 25.0, np.inf)  # Å from the grain's centre


def single_flips(engine: Engine, positions: np.ndarray, grain: np.ndarray) -> dict:
    """R_wp change of flipping one atom of the truth's mask, per distance shell, and the ideal ranking."""
    truth = grain == 0
    masks = np.repeat(truth[None], len(truth) + 1, axis=0)
    masks[np.arange(1, len(truth) + 1), np.arange(len(truth))] ^= True
    rwp = np.asarray(engine.fit(masks).rwp, dtype=np.float64)
    cost = rwp[1:] - rwp[0]
    # Keeping a truth atom lowers R_wp by its removal cost; keeping any other raises it by its addition cost.
    ideal = np.where(truth, -cost, cost)
    dist = np.linalg.norm(positions - np.asarray(AGGREGATE.grains[0][0]), axis=1)
    rows = []
    for lo, hi in zip(SHELLS[:-1], SHELLS[1:]):
        sel = (dist >= lo) & (dist < hi)
        if sel.any():
            rows.append({"shell": f"{lo:g}-{hi:g} Å", "atoms": int(sel.sum()), "truth_atoms": int(truth[sel].sum()),
                         "cost_mean": float(cost[sel].mean()), "cost_min": float(cost[sel].min()),
                         "cost_max": float(cost[sel].max())})
    return {"truth_rwp": float(rwp[0]), "shells": rows, "ideal_overlap": truth_overlap(ideal, truth),
            "others_free_to_add": int(np.sum(~truth & (cost <= 0)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    positions, grain = aggregate_grains(AGGREGATE)
    truth = np.flatnonzero(grain == 0)
    copies = {"au_aggregate": symmetry_copies(positions, truth)}
    # Contrast: the same grain inside a plain 12 Å fcc sphere whose centre is 3.9 Å away.
    sphere = fcc_sites(16.0)
    sphere = sphere[np.linalg.norm(sphere - np.array([-3.6, -0.9, 1.3]), axis=1) <= 12.0]
    radius = AGGREGATE.grains[0][1]
    copies["plain 12 Å sphere"] = symmetry_copies(sphere, np.flatnonzero(np.linalg.norm(sphere, axis=1) <= radius))
    for name, c in copies.items():
        print(f"{name}: {c['model_atoms']} atoms; copies of the {c['truth_atoms']}-atom truth inside: "
              f"{c['copies_inside']}; largest other image inside: {c['largest_other_image_inside']} atoms")
    engine = demo_engine(positions, grain == 0)
    rows = fit_alternatives(engine, positions, grain)
    print("| alternative | atoms | overlap with truth | R_wp (best) | R_wp (median) |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['alternative']} | {row['atoms']} | {row['overlap_with_truth']:.2f} | "
              f"{row['rwp_best']:.4f} | {row['rwp_median']:.4f} |")
    flips = single_flips(engine, positions, grain)
    print(f"\none atom flipped at the truth (R_wp {flips['truth_rwp']:.4f}): a truth atom removed, any other added\n"
          "| distance from the grain's centre | atoms | truth atoms | R_wp change: mean | min | max |\n|---|---|---|---|---|---|")
    for row in flips["shells"]:
        print(f"| {row['shell']} | {row['atoms']} | {row['truth_atoms']} | {row['cost_mean']:+.5f} | "
              f"{row['cost_min']:+.5f} | {row['cost_max']:+.5f} |")
    print(f"ideal per-atom ranking from these costs: top-k overlap {flips['ideal_overlap']:.2f}; "
          f"{flips['others_free_to_add']} non-truth atoms cost nothing to add")
    if args.json:
        print(json.dumps({"symmetry_copies": copies, "fits": rows, "single_flips": flips}))


if __name__ == "__main__":
    main()
