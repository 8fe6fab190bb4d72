"""Mixed catalogues: several strategies in one catalogue, each owning a share of the rows.

Row i (global candidate index) belongs to part p when frac(i·φ) (φ = the golden ratio's
fraction) falls in part p's slice of [0, 1) (slices in the declared order, widths = shares).
That sequence is equidistributed, so any prefix of the catalogue, and so any chunk size or a
later extension, holds every part in proportion, and a row's part depends on its index alone.
Part p of chunk c draws from ``default_rng([seed, c, p])`` a full chunk of its own strategy and
keeps its own rows: each part's rows are as reproducible as a single-strategy chunk.
"""

from __future__ import annotations

import numpy as np

_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def part_of_rows(rows: np.ndarray, shares: tuple[float, ...]) -> np.ndarray:
    """The part index (int64) of each global row index, for parts with these shares (summing to 1)."""
    edges = np.cumsum(shares)[:-1]
    u = np.mod(np.asarray(rows, dtype=np.float64) * _PHI, 1.0)
    return np.searchsorted(edges, u, side="right").astype(np.int64)
