"""The cookie-cutter strategy: each candidate is the set of permuted atoms inside a shape.

Centre (`centre: atoms`, the default): a permuted atom drawn uniformly, moved by a uniform offset
inside a ball of half the median nearest-neighbour distance. Centres thus follow the model's own
atom density (they land inside the model whatever its shape, and off the lattice sites), unlike
centres uniform in a bounding sphere, which waste draws on the empty corners of elongated or
faceted models. `centre: bounding-sphere` draws the centre uniformly in the sphere around the
permuted atoms' centroid that holds them all: for hollow motifs (cages, shells) whose centre is
far from every atom.
Size: a sphere's radius, or each of an ellipsoid's three semi-axes, uniform in `radius`
[min, max]; an ellipsoid gets a uniformly random orientation. Thinning: each atom inside is then
kept with `keep_probability` (1: the whole cut). A cut that holds no atom keeps the permuted atom
nearest its centre. The ligand rule applies afterwards, as for every strategy.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..structure import nearest_neighbour_distance
from .candidates import SHAPE_ELLIPSOID, SHAPE_SPHERE, Candidates

#: Rows whose distances are computed at once: bounds the (rows, n_perm, 3) temporaries (~25 MB at N = 2,000).
_BLOCK = 512


def jitter_radius(positions: np.ndarray) -> float:
    """Half the median nearest-neighbour distance of the permuted atoms (0 for a single atom)."""
    return 0.5 * nearest_neighbour_distance(positions)


def draw_cookie_cutter(part, positions: np.ndarray, rng: np.random.Generator, rows: int) -> Candidates:
    """`rows` shape cuts of the permuted atoms at `positions` (n_perm, 3)."""
    n_perm = len(positions)
    lo, hi = part.radius
    # Every random number is drawn for every row, whatever happens later: the stream stays fixed.
    atom = rng.integers(0, n_perm, size=rows)
    direction = rng.normal(size=(rows, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    if part.centre == "atoms":
        base, reach = positions[atom], jitter_radius(positions)
    else:
        base = positions.mean(axis=0)
        reach = float(np.linalg.norm(positions - base, axis=1).max())
    centre = base + direction * (reach * rng.random(rows) ** (1 / 3))[:, None]
    ellipsoid = part.shape == "ellipsoid"
    if ellipsoid:
        axes = rng.uniform(lo, hi, size=(rows, 3))
        rotation = Rotation.random(rows, random_state=rng).as_matrix()  # (rows, 3, 3): body → model frame
    else:
        axes = np.repeat(rng.uniform(lo, hi, size=rows)[:, None], 3, axis=1)
    p = part.effective_keep_probability
    thin = rng.random((rows, n_perm)) < p if p < 1 else None

    masks = np.empty((rows, n_perm), dtype=bool)
    nearest = np.empty(rows, dtype=np.int64)
    for start in range(0, rows, _BLOCK):
        b = slice(start, min(start + _BLOCK, rows))
        rel = positions[None, :, :] - centre[b, None, :]  # (block, n_perm, 3)
        nearest[b] = np.argmin((rel**2).sum(axis=2), axis=1)
        if ellipsoid:
            rel = np.einsum("bij,bni->bnj", rotation[b], rel)  # into each ellipsoid's own frame
        masks[b] = ((rel / axes[b, None, :]) ** 2).sum(axis=2) <= 1.0
    if thin is not None:
        masks &= thin
    empty = np.flatnonzero(~masks.any(axis=1))
    masks[empty, nearest[empty]] = True
    shape = np.full(rows, SHAPE_ELLIPSOID if ellipsoid else SHAPE_SPHERE, dtype=np.int8)
    return Candidates(masks=masks, centre=centre, axes=axes, shape=shape)
