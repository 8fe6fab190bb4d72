"""Step 1, the catalogue: candidate masks over the permuted atoms, chunk by chunk.

Chunk c is drawn from ``numpy.random.default_rng([seed, c])`` and always for a full chunk of
rows, then cut to length; so any chunk is regenerated bit-identically on any worker, and raising
the catalogue size later leaves every existing row unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from .config import EXHAUSTIVE_MAX_ATOMS, CatalogueSettings
from .errors import InputError


def catalogue_size(cat: CatalogueSettings, n_perm: int) -> int:
    """Rows in the catalogue; exhaustive catalogues hold every non-empty mask."""
    if cat.strategy == "exhaustive":
        return min(cat.size, 2**n_perm - 1)
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


def chunk_masks(cat: CatalogueSettings, n_perm: int, c: int) -> np.ndarray:
    """The (rows, n_perm) bool masks of chunk c."""
    size = catalogue_size(cat, n_perm)
    start, stop = chunk_bounds(c, size, cat.chunk_size)
    if cat.strategy == "exhaustive":
        # Row i is the binary expansion of i + 1: every non-empty mask once.
        ints = np.arange(start + 1, stop + 1, dtype=np.int64)
        return ((ints[:, None] >> np.arange(n_perm, dtype=np.int64)[None, :]) & 1).astype(bool)
    rng = np.random.default_rng([cat.seed, c])
    rows = cat.chunk_size
    if cat.strategy == "uniform-size":
        # The original ML-MotEx draw: a size k, then k distinct atoms.
        k = rng.integers(1, n_perm + 1, size=rows)
        order = np.argsort(rng.random((rows, n_perm)), axis=1)
        masks = np.zeros((rows, n_perm), dtype=bool)
        masks[np.arange(rows)[:, None], order] = np.arange(n_perm)[None, :] < k[:, None]
    else:  # bernoulli
        masks = rng.random((rows, n_perm)) < cat.keep_probability
        fallback = rng.integers(0, n_perm, size=rows)  # drawn for every row: the stream stays fixed
        empty = ~masks.any(axis=1)
        masks[np.flatnonzero(empty), fallback[empty]] = True
    return masks[: stop - start]


def mask_keys(masks: np.ndarray) -> np.ndarray:
    """Exact, sortable keys of mask rows (their packed bits as one opaque value each)."""
    packed = np.ascontiguousarray(np.packbits(np.asarray(masks, dtype=bool), axis=1))
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
