"""Per-candidate fit outcome: refined values and a status code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Status(IntEnum):
    """Why a row holds (or lacks) refined values; stored as int8."""

    PENDING = 0
    OK = 1
    DUPLICATE = 2
    NONFINITE = 3
    OPTIMIZER = 4
    EMPTY = 5


@dataclass
class FitResult:
    """Refined rwp, scale, zoom, uiso (n,) float64 and status (n,) int8 for n candidates
    (each (n, n_frames) for a series of frames).

    Rows that are not OK hold NaN, except EMPTY rows (no atom pair in the pair window):
    their model is G = 0, so rwp = 1 and scale = 0 exactly.
    """

    rwp: np.ndarray
    scale: np.ndarray
    zoom: np.ndarray
    uiso: np.ndarray
    status: np.ndarray

    @classmethod
    def pending(cls, n: int, n_frames: int | None = None) -> "FitResult":
        """n rows, or (n, n_frames) for a series of frames (rows then index as (row, frame))."""
        shape = (n,) if n_frames is None else (n, n_frames)
        nan = np.full(shape, np.nan)
        return cls(rwp=nan.copy(), scale=nan.copy(), zoom=nan.copy(), uiso=nan.copy(),
                   status=np.full(shape, Status.PENDING, dtype=np.int8))

    def set_row(self, row: int, rwp: float, scale: float, zoom: float, uiso: float) -> None:
        """Store one fitted row: OK if every value is finite, NONFINITE (all NaN) otherwise."""
        values = (rwp, scale, zoom, uiso)
        if all(np.isfinite(v) for v in values):
            self.rwp[row], self.scale[row], self.zoom[row], self.uiso[row] = values
            self.status[row] = Status.OK
        else:
            self.mark(row, Status.NONFINITE)

    def mark(self, row, status: Status) -> None:
        """Flag rows as not fitted; EMPTY rows get rwp 1 and scale 0 (their model is G = 0)."""
        self.rwp[row] = 1.0 if status == Status.EMPTY else np.nan
        self.scale[row] = 0.0 if status == Status.EMPTY else np.nan
        self.zoom[row] = np.nan
        self.uiso[row] = np.nan
        self.status[row] = status
