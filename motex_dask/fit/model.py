"""What both engines share: the fit window of the data and the exact model curve."""

from __future__ import annotations

import numpy as np

from motex_dask.fit.recipe import ID1, ID2, IU, IZ
from motex_dask.pdf.calculator import Instrument, PairTable, structure_function, transform_matrix
from motex_dask.settings import FitSettings


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


def max_uiso(theta: np.ndarray, present: np.ndarray) -> float:
    """srreal's max Uii: the largest Uiso among the elements the structure holds."""
    u = np.asarray(theta, dtype=float)[IU:][np.asarray(present, bool)]
    return float(u.max()) if u.size else 0.0


def model_pdf(pairs: PairTable, inst: Instrument, r: np.ndarray, keep_row, scale: float,
              theta: np.ndarray) -> np.ndarray:
    """scale * G(r) of the kept atoms from a fresh calculator at physics vector θ (see recipe)."""
    keep = np.asarray(keep_row, bool)
    present = np.bincount(pairs.species[keep], minlength=len(pairs.elements)) > 0
    grid = inst.qgrid(max_uiso(theta, present), theta[ID1], theta[ID2])
    uiso = np.asarray(theta[IU:], dtype=float)[pairs.species]
    f = structure_function(pairs, grid, uiso, inst.qbroad, inst.radiation, theta[IZ], keep=keep,
                           delta1=theta[ID1], delta2=theta[ID2])
    return scale * (transform_matrix(grid, r, inst.rstep, inst.qdamp) @ f)
