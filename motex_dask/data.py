"""Measured PDF files (.gr/.dat/.txt): headers of PDFgetX3, xPDFsuite and diffpy, then columns.

Columns: ``r G`` or ``r G dG`` or diffpy's ``r G dr dG``. The data block is the run of numeric lines
at the end of the file; everything before it is header.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError

#: Coarsest r step (Å) we fit: the Debye model is compared point by point with the data.
MAX_RSTEP = 0.05
#: Relative tolerance on a uniform r step.
STEP_TOL = 1e-3


@dataclass(frozen=True)
class PDFData:
    """A measured PDF on an r grid (Å), G in Å⁻², optional uncertainties."""

    r: np.ndarray
    g: np.ndarray
    dg: np.ndarray | None
    path: str

    def window(self, rmin: float, rmax: float) -> "PDFData":
        """The points with rmin <= r < rmax, checked to cover the range on a fine, uniform grid."""
        if self.r[0] > rmin + MAX_RSTEP or self.r[-1] < rmax - MAX_RSTEP:
            raise InputError(
                f"{self.path}: data cover r = {self.r[0]:g}–{self.r[-1]:g} Å but the fit range is "
                f"{rmin:g}–{rmax:g} Å; set fit.rmin/fit.rmax inside the data range")
        eps = 1e-9
        sel = (self.r >= rmin - eps) & (self.r < rmax - eps)
        r = self.r[sel]
        if len(r) < 10:
            raise InputError(f"{self.path}: only {len(r)} data points in the fit range "
                             f"{rmin:g}–{rmax:g} Å; widen the range or use finer data")
        steps = np.diff(r)
        step = float(np.median(steps))
        if step > MAX_RSTEP:
            raise InputError(f"{self.path}: r step {step:g} Å is too coarse (at most {MAX_RSTEP} Å); "
                             "export the PDF on a finer grid (e.g. 0.01 Å)")
        if np.max(np.abs(steps - step)) > STEP_TOL * step:
            i = int(np.argmax(np.abs(steps - step)))
            raise InputError(f"{self.path}: r grid is not uniform in the fit range (step {steps[i]:g} Å "
                             f"at r = {r[i]:g} Å, elsewhere {step:g} Å); resample the data on a uniform grid")
        if not np.any(self.g[sel] != 0):
            raise InputError(f"{self.path}: G(r) is zero everywhere in the fit range; check the file")
        return replace(self, r=r, g=self.g[sel], dg=None if self.dg is None else self.dg[sel])

    @property
    def rstep(self) -> float:
        return float((self.r[-1] - self.r[0]) / (len(self.r) - 1))


def _numbers(line: str) -> list[float] | None:
    """The floats of a data line, or None when the line is not all numbers."""
    tokens = line.replace(",", " ").split()
    if len(tokens) < 2:
        return None
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def read_pdf(path: str | Path) -> PDFData:
    """Read a measured PDF file and check its columns and r grid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: data file not found")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; give the PDF as text columns r G [dG]") from None
    rows: list[tuple[int, list[float]]] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        values = _numbers(text)
        if values is None:
            if rows:
                raise InputError(f"{path}: line {lineno}: expected numeric columns r G [dG], got {text[:40]!r}")
            continue  # still in the header
        rows.append((lineno, values))
    if not rows:
        raise InputError(f"{path}: no data columns found; expected lines of numbers r G [dG]")
    ncol = len(rows[0][1])
    for lineno, values in rows:
        if len(values) != ncol:
            raise InputError(f"{path}: line {lineno}: {len(values)} columns where the data start with {ncol}")
    table = np.array([v for _, v in rows], dtype=np.float64)
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        lineno = rows[int(np.argmax(bad))][0]
        raise InputError(f"{path}: line {lineno}: NaN or infinite value; remove or fix that point")
    r, g = table[:, 0], table[:, 1]
    dg = table[:, 3] if ncol >= 4 else table[:, 2] if ncol == 3 else None
    dr = np.diff(r)
    if np.any(dr == 0):
        lineno = rows[int(np.argmax(dr == 0)) + 1][0]
        raise InputError(f"{path}: line {lineno}: duplicated r = {r[np.argmax(dr == 0)]:g}; each r must appear once")
    if np.any(dr < 0):
        lineno = rows[int(np.argmax(dr < 0)) + 1][0]
        raise InputError(f"{path}: line {lineno}: r decreases; r must increase down the file")
    if len(r) < 10:
        raise InputError(f"{path}: only {len(r)} data points; a PDF needs many more")
    return PDFData(r=r, g=g, dg=dg, path=str(path))
