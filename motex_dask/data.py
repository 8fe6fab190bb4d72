"""Measured PDF files (.gr/.dat/.txt): headers of PDFgetX3, xPDFsuite and diffpy, then columns.

Columns: ``r G`` or ``r G dG`` or diffpy's ``r G dr dG``, separated by blanks, commas or semicolons.
The data block starts after a ``#### start data`` marker when there is one, and is otherwise the run
of numeric lines at the end of the file; everything before it is header. ``#`` lines are comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError

#: Coarsest r step (Å) we fit: the Debye model is compared point by point with the data.
MAX_RSTEP = 0.05
#: Relative tolerance on a uniform r step.
STEP_TOL = 1e-3
#: A header holding this many numeric lines is really data interrupted by a bad line.
_MAX_NUMERIC_HEADER_LINES = 5
_START_DATA = re.compile(r"^#+\s*start\s+data", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s,;]+")
# "1,23 4,56" or "1,23;4,56": numbers written with decimal commas (a spreadsheet in many locales).
_DECIMAL_COMMAS = re.compile(r"^-?\d+,\d+(?:[eE][-+]?\d+)?(?:\s*;\s*|\s+)-?\d+,\d+")
_HEADER_ITEM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*[=:]\s*(\S.*?)\s*$")


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


def _read_lines(path: Path, what: str) -> list[str]:
    """The text lines of a user file, or one InputError saying why it cannot be read."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the {what} file itself")
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read the {what} file ({err.strerror})") from None
    if b"\0" in raw:
        raise InputError(f"{path}: not a text file; give the PDF as text columns r G [dG]")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # e.g. "Å" written in Latin-1 by an older Windows program
        text = raw.decode("latin-1")
    return text.splitlines()


def _tokens(line: str) -> list[str]:
    return [t for t in _SEPARATORS.split(line.strip()) if t]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _data_start(lines: list[str]) -> int:
    """Index of the first line of the data block (see the module docstring)."""
    markers = [i for i, line in enumerate(lines) if _START_DATA.match(line.strip())]
    if markers:
        return markers[-1] + 1
    start = len(lines)
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].strip()
        if not text or text.startswith("#"):
            continue
        tokens = _tokens(text)
        if not _is_number(tokens[0]):
            break
        start = i
    return start


def read_header(path: str | Path) -> dict[str, str]:
    """``key = value`` items of a data file's header (PDFgetX3/xPDFsuite/PDFgui), keys lower-case."""
    lines = _read_lines(Path(path), "data")
    items = {}
    for line in lines[: _data_start(lines)]:
        match = _HEADER_ITEM.match(line.lstrip("#"))
        if match:
            items[match.group(1).lower()] = match.group(2)
    return items


def read_pdf(path: str | Path) -> PDFData:
    """Read a measured PDF file and check its columns and r grid."""
    path = Path(path)
    lines = _read_lines(path, "data")
    if not any(line.strip() for line in lines):
        raise InputError(f"{path}: the data file is empty; expected lines of numbers r G [dG]")
    start = _data_start(lines)
    # Without a start marker, a header of many numeric lines is data broken by a bad line; with
    # one, the header is whatever the writer put before it (PDFgetX3 writes numeric settings).
    marked = start > 0 and _START_DATA.match(lines[start - 1].strip()) is not None
    header_numeric = [] if marked else [i for i, line in enumerate(lines[:start]) if _tokens(line) and
                                        all(_is_number(t) for t in _tokens(line))]
    if len(header_numeric) > _MAX_NUMERIC_HEADER_LINES:
        # Numbers, then a non-numeric line, then more numbers: a broken line inside the data.
        bad = next(i for i in range(header_numeric[0], start) if lines[i].strip()
                   and not lines[i].lstrip().startswith("#") and i not in header_numeric)
        raise InputError(f"{path}: line {bad + 1}: expected numeric columns r G [dG], "
                         f"got {lines[bad].strip()[:40]!r}; fix or remove that line")
    rows: list[tuple[int, list[float]]] = []
    for i in range(start, len(lines)):
        text = lines[i].strip()
        if not text or text.startswith("#"):
            continue
        lineno = i + 1
        if _DECIMAL_COMMAS.match(text):
            raise InputError(f"{path}: line {lineno}: numbers written with decimal commas ({text[:30]!r}); "
                             "export the data with decimal points")
        tokens = _tokens(text)
        bad = [t for t in tokens if not _is_number(t)]
        if bad:
            if not rows and not _is_number(tokens[0]):
                continue  # a column-title line after the "start data" marker
            column = tokens.index(bad[0]) + 1
            raise InputError(f"{path}: line {lineno}: column {column} is not a number ({bad[0][:20]!r}); "
                             "expected numeric columns r G [dG]")
        rows.append((lineno, [float(t) for t in tokens]))
    if not rows:
        raise InputError(f"{path}: no data columns found; expected lines of numbers r G [dG]")
    ncol = len(rows[0][1])
    if ncol < 2:
        raise InputError(f"{path}: line {rows[0][0]}: only one column; expected columns r G [dG]")
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


def read_frames(paths, rmin: float, rmax: float) -> tuple[PDFData, ...]:
    """Read and window every frame of a series; all frames must share the first frame's r grid.

    Each frame gets the single-file checks (its own `error:` naming it); the engine compares every
    frame with one model curve per candidate, so the fit-range r values must agree point by point.
    """
    frames = tuple(read_pdf(p).window(rmin, rmax) for p in paths)
    first = frames[0]
    for frame in frames[1:]:
        if frame.r.size != first.r.size or not np.allclose(frame.r, first.r, rtol=0.0, atol=STEP_TOL * first.rstep):
            raise InputError(f"{frame.path}: this frame's r grid in the fit range ({frame.r.size} points, "
                             f"{frame.r[0]:g}–{frame.r[-1]:g} Å) differs from the first frame's "
                             f"({Path(first.path).name}: {first.r.size} points, {first.r[0]:g}–{first.r[-1]:g} Å); "
                             "give every frame on the same r grid")
    return frames
