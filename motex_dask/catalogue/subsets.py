"""Random subsets of the permuted atoms, blind to where the atoms are: uniform-size and bernoulli."""

from __future__ import annotations

import numpy as np

from .candidates import Candidates


def draw_uniform_size(part, positions: np.ndarray, rng: np.random.Generator, rows: int) -> Candidates:
    """The original ML-MotEx draw: a size k uniform in 1..N, then k distinct atoms."""
    n_perm = len(positions)
    k = rng.integers(1, n_perm + 1, size=rows)
    order = np.argsort(rng.random((rows, n_perm)), axis=1)
    masks = np.zeros((rows, n_perm), dtype=bool)
    masks[np.arange(rows)[:, None], order] = np.arange(n_perm)[None, :] < k[:, None]
    return Candidates.masks_only(masks)


def draw_bernoulli(part, positions: np.ndarray, rng: np.random.Generator, rows: int) -> Candidates:
    """Each atom kept with `keep_probability`; an empty draw keeps one random atom."""
    n_perm = len(positions)
    masks = rng.random((rows, n_perm)) < part.effective_keep_probability
    fallback = rng.integers(0, n_perm, size=rows)  # drawn for every row: the stream stays fixed
    empty = ~masks.any(axis=1)
    masks[np.flatnonzero(empty), fallback[empty]] = True
    return Candidates.masks_only(masks)
