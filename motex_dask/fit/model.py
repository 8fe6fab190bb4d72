"""What both engines share: the fit window of the data and the exact model curve."""

from __future__ import annotations

import numpy as np

from motex_dask.settings import FitSettings
from motex_dask.pdf.calculator import Instrument, PairTable, structure_function, transform_matrix


def fit_window(r, gobs, fit: FitSettings) -> tuple[np.ndarray, np.ndarray]:
    """Data points with rmin <= r < rmax, checked to be finite and enough to fit.

    gobs: one PDF (n_r,) or frames on the same r grid (n_frames, n_r); each frame is checked.
    """
    r = np.asarray(r, dtype=float).ravel()
    gobs = np.asarray(gobs, dtype=float)
    gobs = gobs.ravel() if gobs.ndim < 2 else gobs
    if gobs.ndim > 2 or r.size != gobs.shape[-1]:
        raise ValueError(f"r and G differ in length ({r.size} vs {gobs.shape[-1]})")
    sel = (r >= fit.rmin) & (r < fit.rmax)
    r, gobs = r[sel], gobs[..., sel]
    if r.size < 3:
        raise ValueError(f"only {r.size} data points lie in the fit range [{fit.rmin}, {fit.rmax}) Å")
    if not (np.isfinite(r).all() and np.isfinite(gobs).all()):
        raise ValueError("the data hold non-finite r or G values inside the fit range")
    if np.any(np.diff(r) <= 0):
        raise ValueError("the data r values must increase strictly")
    if not np.all(np.any(np.atleast_2d(gobs) != 0, axis=1)):
        raise ValueError("the data G is zero everywhere in the fit range")
    return r, gobs


def model_pdf(pairs: PairTable, inst: Instrument, r: np.ndarray, keep_row, scale: float, zoom: float,
              uiso: float) -> np.ndarray:
    """scale * G(r) of the kept atoms from a fresh calculator (Q grid and window at uiso, zoom)."""
    grid = inst.qgrid(uiso)
    f = structure_function(pairs, grid, uiso, inst.qbroad, inst.radiation, zoom, keep=np.asarray(keep_row, bool))
    return scale * (transform_matrix(grid, r, inst.rstep, inst.qdamp) @ f)
