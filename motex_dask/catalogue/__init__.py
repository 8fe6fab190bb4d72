"""Step 1, the catalogue: candidate masks over the permuted atoms, chunk by chunk.

Chunk c is drawn from ``numpy.random.default_rng([seed, c])`` and always for a full chunk of
rows, then cut to length; so any chunk is regenerated bit-identically on any worker, and raising
the catalogue size later leaves every existing row unchanged. A mixed catalogue (`parts`) draws
part p of chunk c from ``default_rng([seed, c, p])`` (see `mixed`).

One module per strategy: `subsets` (uniform-size, bernoulli: blind to positions), `cookie_cutter`
(shape cuts), `exhaustive` below (row i is a binary number, no randomness), `guided` (adaptive
rounds: blind rows of the first-round strategy mixed with rows drawn from a stored round plan). A strategy is a
function ``draw(part, positions, rng, rows) -> Candidates`` registered in DRAWERS; `part` is the
catalogue settings (or one entry of `catalogue.parts`) and `positions` the (n_perm, 3) permuted atoms.
"""

from __future__ import annotations

import math

from collections.abc import Callable

import numpy as np

from ..settings import EXHAUSTIVE_MAX_ATOMS, CatalogueSettings
from ..errors import InputError
from .candidates import SHAPE_ELLIPSOID, SHAPE_FILL, SHAPE_NAMES, SHAPE_NONE, SHAPE_SPHERE, Candidates
from ..proposal import BLIND, RoundPlan
from .cookie_cutter import draw_cookie_cutter
from .guided import draw_adaptive
from .mixed import part_of_rows
from .subsets import draw_bernoulli, draw_uniform_size

__all__ = ["SHAPE_ELLIPSOID", "SHAPE_FILL", "SHAPE_NAMES", "SHAPE_NONE", "SHAPE_SPHERE", "Candidates", "DRAWERS",
           "catalogue_size", "check_catalogue", "chunk_bounds", "chunk_candidates", "chunk_draw", "chunk_masks",
           "mask_keys", "n_chunks"]

#: The random strategies: name -> draw(part, positions, rng, rows), each from its own stream.
DRAWERS: dict[str, Callable[..., Candidates]] = {
    "uniform-size": draw_uniform_size,
    "bernoulli": draw_bernoulli,
    "cookie-cutter": draw_cookie_cutter,
}


def catalogue_size(cat: CatalogueSettings, n_perm: int) -> int:
    """Rows in the catalogue; exhaustive catalogues hold every non-empty mask."""
    if cat.strategy == "exhaustive":
        return min(cat.size, 2**n_perm - 1)
    if cat.strategy == "adaptive":  # the first round; the store grows round by round
        return min(cat.size, cat.adaptive.round_size)
    return cat.size


def check_catalogue(cat: CatalogueSettings, n_perm: int, source: str) -> None:
    """Checks that need the number of permuted atoms."""
    if cat.strategy == "exhaustive" and n_perm > EXHAUSTIVE_MAX_ATOMS:
        raise InputError(f"{source}: field 'catalogue.strategy': exhaustive needs at most "
                         f"{EXHAUSTIVE_MAX_ATOMS} permuted atoms (the model has {n_perm}); "
                         "use uniform-size")


def n_chunks(size: int, chunk_size: int) -> int:
    return math.ceil(size / chunk_size)


def chunk_bounds(c: int, size: int, chunk_size: int) -> tuple[int, int]:
    """Rows [start, stop) of chunk c."""
    start = c * chunk_size
    return start, min(start + chunk_size, size)


def chunk_draw(cat: CatalogueSettings, positions: np.ndarray, c: int,
               plans: tuple[RoundPlan, ...] = ()) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """The candidates of chunk c with each row's round and origin (proposal.BLIND/MODEL/MUTATION);
    `plans`: an adaptive catalogue's rounds (other strategies: round 0, all blind)."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if cat.strategy == "adaptive":
        return draw_adaptive(cat, positions, c, plans, chunk_candidates)
    drawn = chunk_candidates(cat, positions, c)
    return drawn, np.zeros(len(drawn), dtype=np.int16), np.full(len(drawn), BLIND, dtype=np.int8)


def chunk_candidates(cat: CatalogueSettings, positions: np.ndarray, c: int,
                     plans: tuple[RoundPlan, ...] = ()) -> Candidates:
    """The candidates of chunk c; `positions`: (n_perm, 3) coordinates of the permuted atoms."""
    if cat.strategy == "adaptive":
        return chunk_draw(cat, positions, c, plans)[0]
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n_perm = len(positions)
    size = catalogue_size(cat, n_perm)
    start, stop = chunk_bounds(c, size, cat.chunk_size)
    if cat.strategy == "exhaustive":
        # Row i is the binary expansion of i + 1: every non-empty mask once.
        ints = np.arange(start + 1, stop + 1, dtype=np.int64)
        return Candidates.masks_only(((ints[:, None] >> np.arange(n_perm, dtype=np.int64)[None, :]) & 1).astype(bool))
    rows = cat.chunk_size
    if not cat.parts:
        return DRAWERS[cat.strategy](cat, positions, np.random.default_rng([cat.seed, c]), rows).take(
            slice(0, stop - start))
    owner = part_of_rows(np.arange(c * rows, (c + 1) * rows), tuple(p.share for p in cat.parts))
    out = None
    for p, part in enumerate(cat.parts):
        drawn = DRAWERS[part.strategy](part, positions, np.random.default_rng([cat.seed, c, p]), rows)
        if out is None:
            out = drawn
        else:
            out.put(np.flatnonzero(owner == p), drawn)
    return out.take(slice(0, stop - start))


def chunk_masks(cat: CatalogueSettings, positions: np.ndarray, c: int, plans: tuple[RoundPlan, ...] = ()) -> np.ndarray:
    """The (rows, n_perm) bool masks of chunk c."""
    return chunk_candidates(cat, positions, c, plans).masks


def mask_keys(masks: np.ndarray) -> np.ndarray:
    """Exact, sortable keys of mask rows (their packed bits as one opaque value each)."""
    packed = np.ascontiguousarray(np.packbits(np.asarray(masks, dtype=bool), axis=1))
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()

