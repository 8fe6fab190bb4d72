"""Debye PDF of a discrete structure, emulating diffpy.srreal's DebyePDFCalculator.

Conventions (libdiffpy 1.4, see tests/data/srreal/README.md section 5), all with
"fresh calculator" semantics, i.e. the Q grid follows the structure's own max Uiso:

* r grid ``k*rstep`` for ``rminSteps <= k < ceil(rmax/rstep)``;
* extension = min(maxextension, 6 termination ripples + Gaussian peak tail of the widest
  Jeong peak); extendedrmin/max snapped to the r step; pairs outside that window dropped;
* qstep = π/extendedrmax, F on ``k*qstep`` for ``0 <= k < ceil(qmax/qstep)``;
* F(Q) = Σ_{i≠j} f_i f_j exp(-σ²Q²/2) sin(Qd)/d / (N <f>²) with the Jeong width
  σ² = (U_i+U_j)·J(d), J(d) = 1 - δ1/d - δ2/d² + (qbroad d)², and σ = 0 where J(d) <= 0
  (srreal's zero-width clamp; tests/data/srreal-v2/README.md section 4);
* G: F zeroed below kmin, sine transform on the Npad2 grid, linear interpolation onto r,
  times the qdamp envelope exp(-(qdamp r)²/2).

The pieces the fit engines reuse (Q grid, the linear map F -> G) are public.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motex_dask.pdf.formfactors import scattering_factors
from motex_dask.settings import range_problem

SQRT_EPS = math.sqrt(np.finfo(float).eps)  # libdiffpy's eps_eq tolerance
PEAK_PRECISION = 3.33e-6  # libdiffpy DEFAULT_PEAKPRECISION: peak-tail cut of the r extension
DEBYE_PRECISION = 1e-6  # libdiffpy: a pair's Q loop stops below this |2 f_i f_j DW / d|
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
TAIL_PER_FWHM = math.sqrt(-math.log(PEAK_PRECISION) / (4.0 * math.log(2.0)))
N_RIPPLES = 6
MAX_EXTENSION = 10.0
_PAIR_CHUNK = 20000  # pairs per vectorised block: bounds memory to ~chunk*nQ doubles

#: Most r points of one calculated PDF (100 Å at 0.0001 Å steps).
MAX_R_POINTS = 1_000_000


def check_settings(**settings: float) -> list[tuple[str, str]]:
    """Problems with calculator settings as (setting, what is wrong); [] when they are usable."""
    problems = [(name, problem) for name, value in settings.items()
                if (problem := range_problem(name, value)) is not None]
    if problems:
        return problems
    for lo, hi in (("qmin", "qmax"), ("rmin", "rmax")):
        if lo in settings and hi in settings and not settings[lo] < settings[hi]:
            problems.append((lo, f"must be below {hi} (got {lo}={settings[lo]:g}, {hi}={settings[hi]:g})"))
    if not problems and {"rmin", "rmax", "rstep"} <= settings.keys():
        rmin, rmax, rstep = settings["rmin"], settings["rmax"], settings["rstep"]
        n = rmax_steps(rmax, rstep) - rmin_steps(rmin, rstep)
        if n < 2:
            problems.append(("rstep", f"gives {max(n, 0)} r points from rmin={rmin:g} to rmax={rmax:g} "
                                      f"(got rstep={rstep:g}); use a finer step or a wider range"))
        elif n > MAX_R_POINTS:
            problems.append(("rstep", f"gives {n} r points, more than {MAX_R_POINTS} (got rstep={rstep:g}); "
                                      "use a coarser step or a shorter range"))
    return problems


def rmin_steps(rmin: float, rstep: float) -> int:
    """First r-grid index at or above rmin (one lower when rmin sits on the previous point)."""
    k = int(math.ceil(rmin / rstep))
    if abs(rmin - (k - 1) * rstep) <= SQRT_EPS:
        k -= 1
    return k


def rmax_steps(rmax: float, rstep: float) -> int:
    """One past the last r-grid index (rmax itself is excluded)."""
    return int(math.ceil(rmax / rstep))


def r_grid(rmin: float, rmax: float, rstep: float) -> np.ndarray:
    """srreal's output r grid for (rmin, rmax, rstep)."""
    return np.arange(rmin_steps(rmin, rstep), rmax_steps(rmax, rstep)) * rstep


@dataclass(frozen=True)
class QGrid:
    """One Debye Q grid: F lives on k*qstep for k < nq; G uses k >= kmin only."""

    qstep: float
    nq: int
    kmin: int
    rlo: float  # extendedrmin: shortest pair distance summed
    rhi: float  # extendedrmax: longest pair distance summed

    @property
    def q(self) -> np.ndarray:
        return np.arange(self.nq) * self.qstep


@dataclass(frozen=True)
class Instrument:
    """Calculator settings that stay fixed while a structure is refined."""

    qmin: float
    qmax: float
    qdamp: float
    qbroad: float
    rmin: float
    rmax: float
    rstep: float
    radiation: str = "xray"
    maxextension: float = MAX_EXTENSION

    @classmethod
    def for_profile(cls, r: np.ndarray, *, qmin: float, qmax: float, qdamp: float, qbroad: float,
                    radiation: str = "xray") -> "Instrument":
        """A fresh calculator whose r grid is the uniform profile grid r: rmin its first point,
        rmax one step past its last (srreal excludes rmax), as the v2 fixtures' fresh re-scores.

        (srfit's own generator uses rmax = last + rstep/2, which can put its pair window one
        r step lower: srreal-v2 README 5.5.)
        """
        r = np.asarray(r, dtype=float)
        if r.size < 2:
            raise ValueError("the fit grid needs at least two r points")
        lo, hi = float(r.min()), float(r.max())
        rstep = (hi - lo) / (r.size - 1)
        return cls(qmin=qmin, qmax=qmax, qdamp=qdamp, qbroad=qbroad, rmin=lo,
                   rmax=lo + r.size * rstep, rstep=rstep, radiation=radiation)

    def r(self) -> np.ndarray:
        return r_grid(self.rmin, self.rmax, self.rstep)

    def extension(self, max_uiso, delta1=0.0, delta2=0.0):
        """r-range extension: termination ripples plus the widest peak's tail, capped.

        The widest peak is that of the largest Uiso with the Jeong factor max(1, J(rmin), J(rmax)).
        Works elementwise on arrays (the fit engines ask for many candidates at once).
        """
        ripples = N_RIPPLES * 2.0 * math.pi / self.qmax if self.qmax > 0 else 0.0
        jeong = np.maximum(1.0, np.maximum(jeong_factor(self.rmin, self.qbroad, delta1, delta2),
                                           jeong_factor(self.rmax, self.qbroad, delta1, delta2)))
        u = np.asarray(max_uiso, dtype=float)
        fwhm = FWHM_PER_SIGMA * np.sqrt(2.0 * np.maximum(u, 0.0)) * np.sqrt(jeong)
        return np.minimum(self.maxextension, ripples + TAIL_PER_FWHM * fwhm)

    def window_steps(self, max_uiso, delta1=0.0, delta2=0.0) -> tuple[np.ndarray, np.ndarray]:
        """(extendedrmin, extendedrmax) in r steps for arrays of max Uiso, delta1, delta2."""
        ext = self.extension(max_uiso, delta1, delta2)
        x = (self.rmin - ext) / self.rstep
        klo = np.ceil(x).astype(np.int64)
        klo -= np.abs(self.rmin - ext - (klo - 1) * self.rstep) <= SQRT_EPS  # rmin_steps' eps rule
        khi = np.ceil((self.rmax + ext) / self.rstep).astype(np.int64)
        return np.maximum(klo, 0), khi

    def qgrid(self, max_uiso: float, delta1: float = 0.0, delta2: float = 0.0) -> QGrid:
        """The Q grid and pair window of a fresh calculator: max Uiso of the structure, its deltas."""
        klo, khi = self.window_steps(max_uiso, delta1, delta2)
        return self.grid_for_steps(int(klo), int(khi))

    def grid_for_steps(self, klo: int, khi: int) -> QGrid:
        """The Q grid of the pair window [klo, khi] * rstep (cached: engines meet few distinct ones)."""
        return _grid_for_steps(self, klo, khi)


@functools.lru_cache(maxsize=4096)
def _grid_for_steps(inst: Instrument, klo: int, khi: int) -> QGrid:
    rlo, rhi = klo * inst.rstep, khi * inst.rstep
    qstep = math.pi / rhi if inst.qmax * rhi / math.pi > 4 else inst.qmax / 4
    nq = int(math.ceil(inst.qmax / qstep))
    kmin = int(math.ceil(inst.qmin / qstep))
    if abs(inst.qmin - (kmin - 1) * qstep) <= SQRT_EPS:
        kmin -= 1
    return QGrid(qstep=qstep, nq=nq, kmin=min(kmin, nq), rlo=rlo, rhi=rhi)


def jeong_factor(d, qbroad: float, delta1: float = 0.0, delta2: float = 0.0):
    """J(d) = 1 - δ1/d - δ2/d² + (qbroad d)²: σ² = (U_i + U_j)·J(d); 0 below machine epsilon."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = 1.0 - delta1 / d - delta2 / d**2 + (qbroad * d) ** 2
    return np.where(d < np.finfo(float).eps, 0.0, j)


def fft_length(grid: QGrid, rstep: float) -> int:
    """Npad2: length of srreal's zero-padded sine transform (a power of two)."""
    n = max(grid.nq, int(math.ceil(math.pi / rstep / grid.qstep)))
    return 1 << int(math.ceil(math.log2(n)))


def transform_matrix(grid: QGrid, r: np.ndarray, rstep: float, qdamp: float) -> np.ndarray:
    """Linear map T (len(r), nq) with G(r) = T @ F, exactly srreal's F -> G steps.

    Columns below kmin are zero (qmin cut). The sine transform on the padded grid
    r_j = j*π/(Npad2*qstep) is evaluated directly (k*j taken modulo 2*Npad2, as the FFT's twiddle factors are),
    then linearly interpolated at r and damped by the qdamp envelope.
    """
    r = np.asarray(r, dtype=float)
    npad = fft_length(grid, rstep)
    drpad = math.pi / (npad * grid.qstep)
    xdrp = r / drpad
    jlo = xdrp.astype(np.int64)
    whi = xdrp - jlo
    k = np.arange(grid.nq, dtype=np.int64)
    sines = np.sin(np.pi * np.arange(2 * npad) / npad)  # sin(Q_k r_j) = sines[k*j mod 2*Npad2]

    def sine(j: np.ndarray) -> np.ndarray:
        return sines[np.outer(j, k) & (2 * npad - 1)]  # modulo the power of two 2*Npad2

    t = (1.0 - whi)[:, None] * sine(jlo) + whi[:, None] * sine(jlo + 1)
    t *= (2.0 / math.pi) * grid.qstep
    t[:, : grid.kmin] = 0.0
    if qdamp > 0:
        t *= np.exp(-0.5 * (qdamp * r) ** 2)[:, None]
    return t


def sine_transform(grid: QGrid, f: np.ndarray, r: np.ndarray, rstep: float, qdamp: float) -> np.ndarray:
    """``transform_matrix(grid, r, rstep, qdamp) @ f`` through an FFT, as srreal computes it.

    O(Npad2 log Npad2) instead of O(len(r) × nq): a long r range or a fine step stays cheap.
    """
    r = np.asarray(r, dtype=float)
    npad = fft_length(grid, rstep)
    padded = np.zeros(2 * npad)
    padded[grid.kmin:grid.nq] = f[grid.kmin:]
    # -Im FFT_j = Σ_k F_k sin(π k j / Npad2): the sine transform on r_j = j π / (Npad2 qstep),
    # periodic in j with period 2 Npad2 (as the matrix's k*j modulo 2*Npad2).
    sines = -np.fft.fft(padded).imag * (2.0 / math.pi) * grid.qstep
    xdrp = r / (math.pi / (npad * grid.qstep))
    jlo = xdrp.astype(np.int64)
    whi = xdrp - jlo
    g = (1.0 - whi) * sines[jlo % (2 * npad)] + whi * sines[(jlo + 1) % (2 * npad)]
    return g * np.exp(-0.5 * (qdamp * r) ** 2) if qdamp > 0 else g


@dataclass(frozen=True)
class PairTable:
    """All atom pairs i<j of a structure, with element-pair type indices."""

    i: np.ndarray  # (n_pairs,) int64
    j: np.ndarray
    d: np.ndarray  # (n_pairs,) float64 distance, Å
    kind: np.ndarray  # (n_pairs,) int64 index into `kinds`
    elements: tuple[str, ...]  # distinct elements, in order of first appearance
    species: np.ndarray  # (n_atoms,) int64 index into `elements`
    kinds: tuple[tuple[int, int], ...]  # (a, b) element indices with a <= b

    @classmethod
    def build(cls, symbols, positions) -> "PairTable":
        symbols = [str(s) for s in symbols]
        pos = np.asarray(positions, dtype=float).reshape(-1, 3)
        if len(symbols) != len(pos):
            raise ValueError(f"{len(symbols)} symbols but {len(pos)} positions")
        elements = tuple(dict.fromkeys(symbols))
        species = np.array([elements.index(s) for s in symbols], dtype=np.int64)
        ne = len(elements)
        kinds = tuple((a, b) for a in range(ne) for b in range(a, ne))
        kind_of = np.zeros((ne, ne), dtype=np.int64)
        for idx, (a, b) in enumerate(kinds):
            kind_of[a, b] = kind_of[b, a] = idx
        i, j = np.triu_indices(len(pos), k=1)
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
        return cls(i=i, j=j, d=d, kind=kind_of[species[i], species[j]], elements=elements,
                   species=species, kinds=kinds)


def structure_function(pairs: PairTable, grid: QGrid, uiso, qbroad: float, radiation: str = "xray",
                       zoom: float = 1.0, keep: np.ndarray | None = None,
                       window_zoom: float | None = None, ff: np.ndarray | None = None,
                       delta1: float = 0.0, delta2: float = 0.0) -> np.ndarray:
    """Debye F(Q) on `grid` of the atoms `keep` (all by default), coordinates times `zoom`.

    `uiso` is a scalar or one value per atom of the full structure; each pair's width is
    (U_i + U_j)·J(d) at its zoomed distance, zero where J <= 0 (module docstring). Normalised by the kept
    atoms' own N<f(Q)>², as for a structure built from those atoms alone. The pair window
    [grid.rlo, grid.rhi] applies to distances times `window_zoom` (default: `zoom`), which
    lets a fit hold the summed pairs fixed while zoom varies. `ff` may pass the scattering
    factors of `pairs.elements` on `grid.q` when the caller reuses them.
    """
    n_atoms = pairs.species.size
    keep = np.ones(n_atoms, bool) if keep is None else np.asarray(keep, bool)
    u = np.broadcast_to(np.asarray(uiso, dtype=float), (n_atoms,))
    q = grid.q
    ff = scattering_factors(pairs.elements, q, radiation) if ff is None else ff  # (ne, nq)
    d = pairs.d * zoom
    dw = pairs.d * (zoom if window_zoom is None else window_zoom)
    sel = keep[pairs.i] & keep[pairs.j] & (dw >= grid.rlo) & (dw <= grid.rhi) & (pairs.d > SQRT_EPS)
    num = np.zeros(grid.nq)
    for kind, (a, b) in enumerate(pairs.kinds):
        idx = np.flatnonzero(sel & (pairs.kind == kind))
        fab = ff[a] * ff[b]
        for start in range(0, idx.size, _PAIR_CHUNK):
            p = idx[start:start + _PAIR_CHUNK]
            dp = d[p][:, None]
            jeong = np.maximum(jeong_factor(dp, qbroad, delta1, delta2), 0.0)  # the zero-width clamp
            msd = (u[pairs.i[p]] + u[pairs.j[p]])[:, None] * jeong
            amp = 2.0 * fab * np.exp(-0.5 * msd * q**2) / dp  # ordered pairs: i<j counted twice
            # srreal stops a pair's Q loop at the first point below DEBYE_PRECISION
            amp *= np.logical_and.accumulate(np.abs(amp) >= DEBYE_PRECISION, axis=1)
            num += (amp * np.sin(q * dp)).sum(axis=0)
    counts = np.bincount(pairs.species[keep], minlength=len(pairs.elements)).astype(float)
    n_kept = counts.sum()
    fsum = counts @ ff  # N <f>
    norm = np.divide(n_kept, fsum**2, out=np.zeros(grid.nq), where=fsum != 0)  # 1/(N <f>^2)
    return num * norm


def per_atom_uiso(symbols, uiso) -> np.ndarray:
    """Uiso of every atom from a scalar, a per-atom sequence or an {element: Uiso} mapping."""
    symbols = [str(s) for s in symbols]
    if isinstance(uiso, Mapping):
        missing = sorted(set(symbols) - set(uiso))
        if missing:
            raise ValueError(f"no Uiso given for element(s) {', '.join(missing)}")
        return np.array([float(uiso[s]) for s in symbols])
    return np.broadcast_to(np.asarray(uiso, dtype=float), (len(symbols),)).copy()


def pdf_from_atoms(symbols, positions, *, qmin: float, qmax: float, qdamp: float, qbroad: float,
                   rmin: float, rmax: float, rstep: float, uiso=0.005, zoom: float = 1.0,
                   radiation: str = "xray", delta1: float = 0.0, delta2: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(r, G) of a discrete structure as a fresh srreal DebyePDFCalculator gives it.

    `uiso`: one value for every atom, one per atom, or a mapping element -> value.
    """
    inst = Instrument(qmin=qmin, qmax=qmax, qdamp=qdamp, qbroad=qbroad, rmin=rmin, rmax=rmax,
                      rstep=rstep, radiation=radiation)
    pairs = PairTable.build(symbols, positions)
    u = per_atom_uiso(symbols, uiso)
    grid = inst.qgrid(float(u.max()), delta1, delta2)
    f = structure_function(pairs, grid, u, qbroad, radiation, zoom, delta1=delta1, delta2=delta2)
    r = inst.r()
    return r, sine_transform(grid, f, r, rstep, qdamp)


def write_gr(path, r: np.ndarray, g: np.ndarray, header: dict) -> None:
    """Write a two-column (r, G) text file with one `# key: value` header line per entry.

    Written beside the target and renamed over it: a failed write (full disk) leaves no partial file.
    """
    lines = [f"# {key}: {value}" for key, value in header.items()]
    lines.append("# r(Å) G(Å^-2)")
    lines += [f"{ri:.6f} {gi:.10g}" for ri, gi in zip(np.asarray(r, float), np.asarray(g, float))]
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text("\n".join(lines) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
