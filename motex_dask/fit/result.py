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
    """Refined rwp, scale and one (n,) float64 array per reported parameter, status (n,) int8
    (each (n, n_frames) for a series of frames; rows then index as (row, frame)).

    `params` is keyed by the recipe's columns (``zoom``, ``uiso`` or ``uiso_<El>``, refined
    ``delta1``/``delta2``). Rows that are not OK hold NaN, except EMPTY rows (no atom pair in
    the pair window): their model is G = 0, so rwp = 1 and scale = 0 exactly.
    """

    rwp: np.ndarray
    scale: np.ndarray
    params: dict[str, np.ndarray]
    status: np.ndarray

    @classmethod
    def pending(cls, n: int, columns, n_frames: int | None = None) -> "FitResult":
        """n rows of the parameter `columns`, or (n, n_frames) for a series of frames."""
        shape = (n,) if n_frames is None else (n, n_frames)
        return cls(rwp=np.full(shape, np.nan), scale=np.full(shape, np.nan),
                   params={name: np.full(shape, np.nan) for name in columns},
                   status=np.full(shape, Status.PENDING, dtype=np.int8))

    def __getitem__(self, name: str) -> np.ndarray:
        """rwp, scale or a parameter column by name."""
        if name in ("rwp", "scale"):
            return getattr(self, name)
        return self.params[name]

    def set_row(self, row: int, rwp: float, scale: float, values: dict[str, float]) -> None:
        """Store one fitted row (see `set_rows`)."""
        self.set_rows(np.array([row]), np.array([rwp]), np.array([scale]),
                      {name: np.array([values[name]]) for name in self.params})

    def set_rows(self, rows: np.ndarray, rwp: np.ndarray, scale: np.ndarray, values: dict[str, np.ndarray],
                 frame: int | None = None) -> None:
        """Store fitted rows `rows` (of frame `frame` in a series) from aligned arrays: OK where every
        value is finite, NONFINITE (all NaN) elsewhere."""
        ok = np.isfinite(rwp) & np.isfinite(scale)
        for name in self.params:
            ok &= np.isfinite(values[name])
        at = rows[ok] if frame is None else (rows[ok], frame)
        self.rwp[at], self.scale[at] = rwp[ok], scale[ok]
        for name in self.params:
            self.params[name][at] = values[name][ok]
        self.status[at] = Status.OK
        self.mark(rows[~ok] if frame is None else (rows[~ok], frame), Status.NONFINITE)

    def mark(self, row, status: Status) -> None:
        """Flag rows as not fitted; EMPTY rows get rwp 1 and scale 0 (their model is G = 0)."""
        self.rwp[row] = 1.0 if status == Status.EMPTY else np.nan
        self.scale[row] = 0.0 if status == Status.EMPTY else np.nan
        for values in self.params.values():
            values[row] = np.nan
        self.status[row] = status
