"""The frozen evaluation state of a fit round: Q grid and pair window.

srreal's Q grid and pair window depend on the largest Uiso, delta1/delta2 and zoom (the extended
r range holds a width-dependent peak tail; pairs longer than it are dropped), so R_wp jumps
where they change. Both engines therefore refine in rounds with a frozen state, then recompute
the fresh-calculator state at the refined parameters and refine again while it changed. The
reported R_wp is always that of a fresh calculator at the reported parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motex_dask.fit.model import max_uiso
from motex_dask.fit.recipe import ID1, ID2, IZ
from motex_dask.pdf.calculator import SQRT_EPS, Instrument, QGrid

MAX_ROUNDS = 4


@dataclass(frozen=True)
class WindowState:
    """Q grid plus the zoom at which the pair window [grid.rlo, grid.rhi] is applied."""

    grid: QGrid
    zref: float

    @classmethod
    def fresh(cls, inst: Instrument, theta: np.ndarray, present: np.ndarray) -> "WindowState":
        """State of a fresh calculator at physics vector θ for a structure holding `present` elements."""
        return cls(inst.qgrid(max_uiso(theta, present), theta[ID1], theta[ID2]), float(theta[IZ]))

    def in_window(self, d: np.ndarray) -> np.ndarray:
        """Which unzoomed pair distances `d` this state sums."""
        dz = d * self.zref
        return (dz >= self.grid.rlo) & (dz <= self.grid.rhi) & (d > SQRT_EPS)

    def same_as(self, other: "WindowState", d: np.ndarray) -> bool:
        """True when both states use the same Q grid and sum the same pairs of `d`."""
        return self.grid == other.grid and bool(np.array_equal(self.in_window(d), other.in_window(d)))
