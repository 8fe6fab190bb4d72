"""Fit engines: refine candidate motifs against a measured PDF (see docs/design.md)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from motex_dask.settings import FitSettings
from motex_dask.fit.result import FitResult, Status


class Engine(Protocol):
    """What every engine offers: batched fits and the model curve of one fitted row."""

    name: str
    r: np.ndarray  # the fit grid (data points with rmin <= r < rmax)

    def fit(self, keep: np.ndarray) -> FitResult: ...

    def model_pdf(self, keep_row, scale: float, values: dict[str, float]) -> np.ndarray: ...


def make_engine(symbols, positions, r, gobs, fit: FitSettings) -> Engine:
    """The engine `fit.engine` names, set up for one starting model and one data set."""
    if fit.engine == "batched":
        from motex_dask.fit.batched import BatchedEngine

        return BatchedEngine(symbols, positions, r, gobs, fit)
    if fit.engine == "srfit":
        from motex_dask.fit.srfit_engine import SrfitEngine

        return SrfitEngine(symbols, positions, r, gobs, fit)
    raise ValueError(f"unknown fit engine {fit.engine!r}: use 'batched' or 'srfit'")


__all__ = ["Engine", "FitResult", "Status", "make_engine"]
