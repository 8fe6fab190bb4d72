"""Batched fit engine: many candidate motifs of one starting model refined at once.

Per candidate c and element-pair kind t the model needs
    T_ct(x; u) = Σ_{kept pairs p of kind t} sin(x d_p) exp(-u qbroad² x² d_p²) / d_p
at x = zoom * Q_k, because (Jeong width, equal Uiso u on every atom)
    F_c(Q) = 2 Σ_t f_a(Q) f_b(Q) exp(-u Q²) T_ct(zoom Q; u) / (zoom N_c <f>_c²).
Work shared by all candidates goes through one BLAS product per batch:

1. each kept pair's distance is spread onto a uniform d grid (Lagrange weights), giving a
   histogram H_ct(d_m) per candidate that integrates any smooth function of d to ~1e-6;
2. H @ K tabulates T_ct on a uniform x grid at a few Chebyshev nodes in u (qbroad only);
3. each (zoom, u) evaluation interpolates that table (Lagrange in x, polynomial in u).

R_wp needs only a = <Gobs, T F> and b = |T F|² with T the srreal F -> G map, so the fit
works in Q space through the QR factor of T (≈80 numbers per candidate). Scale is closed
form (a/b); zoom and Uiso are refined with bounds by a projected Levenberg–Marquardt on the
variable-projection residual, candidate by candidate in numba. Rounds of frozen Q grid and
pair window follow `motex_dask.fit.window`; between rounds only the pairs that cross the
window edge are added to or removed from a candidate's table.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from motex_dask.settings import FitSettings
from motex_dask.fit.model import fit_window, model_pdf
from motex_dask.fit.result import FitResult, Status
from motex_dask.fit.window import MAX_ROUNDS
from motex_dask.pdf.calculator import SQRT_EPS, Instrument, PairTable, QGrid, transform_matrix
from motex_dask.pdf.formfactors import scattering_factors

N_TAPS = 12  # Lagrange nodes per interpolation (even)
# grid step times the largest conjugate variable (x for the d grid, d for the x grid):
# 12-point Lagrange error <= 5.5e-5 * STEP_TIMES_FREQ**12 ≈ 8e-6 of the highest-Q term's
# amplitude (measured: < 3e-8 in R_wp)
STEP_TIMES_FREQ = 0.85
# Chebyshev nodes in u for the qbroad factor exp(-u qbroad² x² d²): its exponent spans < 0.33
# over [0.001, 0.05] and is always < 2 % of the exactly applied exp(-u Q²); 4 nodes: < 3e-9 in R_wp
N_U_NODES = 4
BATCH = 128
FTOL = 1e-10  # relative cost decrease (predicted or achieved) that ends a refinement
MAX_ITER = 60
# first trust radius for (zoom, uiso) steps, doubled after each successful step: the
# refinement then ends in the minimum of the start's basin (as srfit's trf does) instead
# of jumping across the many-minima zoom landscape of small motifs
STEP0 = np.array([0.005, 0.002])
_FAST = {"reassoc", "contract", "arcp", "nsz"}  # vectorised sums; NaN/inf semantics kept
_OFFSETS = np.arange(N_TAPS, dtype=float) - (N_TAPS // 2 - 1)  # nodes around floor(s)
_BARY = np.array([1.0 / np.prod(o - np.delete(_OFFSETS, i)) for i, o in enumerate(_OFFSETS)])


def _spread_weights(x: np.ndarray, step: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First node index and N_TAPS Lagrange weights placing each x on the grid m*step."""
    s = x / step
    first = np.clip(np.floor(s).astype(np.int64) - (N_TAPS // 2 - 1), 0, n - N_TAPS)
    e = (s - first)[:, None] - (_OFFSETS + (N_TAPS // 2 - 1))[None, :]  # s - node
    w = np.empty_like(e)
    for i in range(N_TAPS):
        w[:, i] = _BARY[i] * np.prod(np.delete(e, i, axis=1), axis=1)
    return first, w


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _weights(t, offsets, bary, w, wd, tmp):
    """Lagrange weights w[i, a] and t-derivatives wd[i, a] at offsets t[a], division-free.

    Prefix/suffix products over the nodes, each step vectorised over the points a.
    """
    n = bary.size
    na = t.size
    pre, dpre, suf, dsuf = tmp[0], tmp[1], tmp[2], tmp[3]
    for a in range(na):
        pre[0, a] = 1.0
        dpre[0, a] = 0.0
        suf[n - 1, a] = 1.0
        dsuf[n - 1, a] = 0.0
    for i in range(n - 1):
        o = offsets[i]
        for a in range(na):
            e = t[a] - o
            dpre[i + 1, a] = dpre[i, a] * e + pre[i, a]
            pre[i + 1, a] = pre[i, a] * e
    for i in range(n - 1, 0, -1):
        o = offsets[i]
        for a in range(na):
            e = t[a] - o
            dsuf[i - 1, a] = dsuf[i, a] * e + suf[i, a]
            suf[i - 1, a] = suf[i, a] * e
    for i in range(n):
        c = bary[i]
        for a in range(na):
            w[i, a] = c * pre[i, a] * suf[i, a]
            wd[i, a] = c * (dpre[i, a] * suf[i, a] + pre[i, a] * dsuf[i, a])


@numba.njit(cache=True, nogil=True)
def _kept_atoms(keep_row, out):
    """Indices of the kept atoms into out; returns how many."""
    m = 0
    for i in range(keep_row.size):
        if keep_row[i]:
            out[m] = i
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _histograms(keep, pair_index, pkind, pd, pm0, pw, zref, rlo, rhi, hist):
    """Spread every kept pair inside the window onto hist[c, kind, :]; return pair counts.

    Loops over pairs of kept atoms only (pair_index[i, j] = row in the pair arrays, or -1).
    """
    nc = keep.shape[0]
    ntap = pw.shape[1]
    count = np.zeros(nc, np.int64)
    kept = np.empty(keep.shape[1], np.int64)
    for c in range(nc):
        m = _kept_atoms(keep[c], kept)
        for a in range(m):
            row = pair_index[kept[a]]
            for b in range(a + 1, m):
                p = row[kept[b]]
                if p < 0:
                    continue
                dz = pd[p] * zref[c]
                if dz >= rlo[c] and dz <= rhi[c]:
                    count[c] += 1
                    m0 = pm0[p]
                    for i in range(ntap):
                        hist[c, pkind[p], m0 + i] += pw[p, i]
    return count


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _shift_windows(keep, cand, pair_index, pkind, pd, pm0, pw, z0, lo0, hi0, z1, lo1, hi1, kernel,
                   tables, count):
    """Move candidate cand[n]'s pair window from (z0, lo0, hi0)[n] to (z1, lo1, hi1)[n].

    Only the few pairs that enter or leave change, so tables[c] (and count[c]) are updated
    in place by their kernel rows instead of being rebuilt. Returns which candidates changed.
    """
    ncol = kernel.shape[1]
    ntap = pw.shape[1]
    changed = np.zeros(cand.size, np.bool_)
    kept = np.empty(keep.shape[1], np.int64)
    for n in range(cand.size):
        c = cand[n]
        m = _kept_atoms(keep[c], kept)
        for ia in range(m):
            row = pair_index[kept[ia]]
            for ib in range(ia + 1, m):
                p = row[kept[ib]]
                if p < 0:
                    continue
                a = pd[p] * z0[n]
                b = pd[p] * z1[n]
                was = a >= lo0[n] and a <= hi0[n]
                now = b >= lo1[n] and b <= hi1[n]
                if was != now:
                    changed[n] = True
                    sign = 1.0 if now else -1.0
                    count[c] += 1 if now else -1
                    tab = tables[c, pkind[p]]
                    for i in range(ntap):
                        wgt = sign * pw[p, i]
                        krow = kernel[pm0[p] + i]
                        for col in range(ncol):
                            tab[col] += wgt * krow[col]
    return changed


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _evaluate(table, nx, pref, q, kmin, rt_fac, z, u, x0, hx, bary, offsets, unodes, work, taps, j0, y, yz, yu):
    """y = R F, yz = R dF/dz, yu = R dF/du for one candidate at (z, u).

    table (n_kinds, n_u*nx) holds T_t(x_j; u_l) at [t, l*nx + j]; rt_fac is R transposed
    (lower triangular). Scratch: work (8, max(nx, nq)), taps (6, n_taps, nq), j0 (nq,) int.
    """
    nk = table.shape[0]
    nl = unodes.size
    na = q.size - kmin
    ntap = bary.size
    lead = ntap // 2 - 1
    gv, gu, f, fz, fu, lam, dlam, tq = work[0], work[1], work[2], work[3], work[4], work[5], work[6], work[7]
    w, wd = taps[0], taps[1]
    for l in range(nl):  # Lagrange basis in u and its derivative
        v = 1.0
        dv = 0.0
        for m in range(nl):
            if m != l:
                den = unodes[l] - unodes[m]
                dv = dv * (u - unodes[m]) / den + v / den
                v = v * (u - unodes[m]) / den
        lam[l] = v
        dlam[l] = dv
    for a in range(na):  # where each x = z*Q_k falls on the x grid
        s = (z * q[kmin + a] - x0) / hx
        fl = math.floor(s)
        tq[a] = s - fl
        j0[a] = int(fl) - lead
    _weights(tq[:na], offsets, bary, w, wd, taps[2:])
    jlo = max(j0[0], 0)
    jhi = min(j0[na - 1] + ntap, nx)
    for a in range(na):
        f[a] = 0.0
        fz[a] = 0.0
        fu[a] = 0.0
    for kk in range(nk):
        # contract the u nodes first: one table row (and its u-derivative) per kind
        for j in range(jlo, jhi):
            gv[j] = 0.0
            gu[j] = 0.0
        for l in range(nl):
            cl = lam[l]
            dl = dlam[l]
            off = l * nx
            for j in range(jlo, jhi):
                t = table[kk, off + j]
                gv[j] += cl * t
                gu[j] += dl * t
        for a in range(na):
            sv = 0.0
            sx = 0.0
            su = 0.0
            b = j0[a]
            for i in range(ntap):
                sv += w[i, a] * gv[b + i]
                sx += wd[i, a] * gv[b + i]
                su += w[i, a] * gu[b + i]
            pk = pref[kk, kmin + a]
            f[a] += pk * sv
            fz[a] += pk * sx
            fu[a] += pk * su
    for a in range(na):
        qk = q[kmin + a]
        dw = math.exp(-u * qk * qk) / z
        sv = f[a]
        f[a] = dw * sv
        fz[a] = dw * (qk * fz[a] / hx - sv / z)
        fu[a] = -qk * qk * f[a] + dw * fu[a]
    for i in range(na):
        y[i] = 0.0
        yz[i] = 0.0
        yu[i] = 0.0
    for j in range(na):  # y = R f as a sum of columns: contiguous, vectorisable
        c0 = f[j]
        c1 = fz[j]
        c2 = fu[j]
        for i in range(j + 1):
            rij = rt_fac[j, i]
            y[i] += rij * c0
            yz[i] += rij * c1
            yu[i] += rij * c2


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _project(gq, y):
    """(a, b) = (<gq, y>, |y|²)."""
    a = 0.0
    b = 0.0
    for i in range(y.size):
        a += gq[i] * y[i]
        b += y[i] * y[i]
    return a, b


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _refine(tables, nx, idx, prefs, q, kmin, rt_fac, gq, g2, x0, hx, bary, offsets, unodes, theta, lo, hi,
            free, step0, max_iter, ftol, out):
    """Projected Levenberg–Marquardt on (zoom, uiso) for candidates idx; scale in closed form.

    theta[c] holds the start and receives the optimum; out[c] receives
    (cost, scale) and adds the evaluations made to out[c, 2]; cost = |Gobs - scale*G|².
    prefs is indexed like idx.
    """
    na = q.size - kmin
    y = np.empty(na)
    yz = np.empty(na)
    yu = np.empty(na)
    work = np.empty((8, max(nx, na)))
    taps = np.empty((6, bary.size, na))
    j0 = np.empty(na, np.int64)
    for n in range(idx.size):
        c = idx[n]
        table = tables[c]
        pref = prefs[n]
        z = theta[c, 0]
        u = theta[c, 1]
        _evaluate(table, nx, pref, q, kmin, rt_fac, z, u, x0, hx, bary, offsets, unodes, work, taps, j0, y, yz, yu)
        nev = 1
        mu = 1e-3
        radius = 1.0  # trust radius in units of STEP0: stay in the start's basin, like trf
        a, b = _project(gq, y)
        for it in range(max_iter):
            if not (b > 0.0):
                break
            scale = a / b
            cost = g2 - a * scale
            az = 0.0
            au = 0.0
            bz = 0.0
            bu = 0.0
            jzz = 0.0
            jzu = 0.0
            juu = 0.0
            for i in range(na):
                az += gq[i] * yz[i]
                au += gq[i] * yu[i]
                bz += y[i] * yz[i]
                bu += y[i] * yu[i]
                jzz += yz[i] * yz[i]
                jzu += yz[i] * yu[i]
                juu += yu[i] * yu[i]
            # variable projection (Kaufman): J'J and J'res of the residual scale*T F - Gobs
            s2 = scale * scale
            h00 = s2 * (jzz - bz * bz / b)
            h01 = s2 * (jzu - bz * bu / b)
            h11 = s2 * (juu - bu * bu / b)
            g0 = -scale * az + s2 * bz  # half gradient of cost
            g1 = -scale * au + s2 * bu
            # variables fixed by the settings or held at a bound by the gradient
            act0 = free[0] and not ((z <= lo[0] and g0 > 0) or (z >= hi[0] and g0 < 0))
            act1 = free[1] and not ((u <= lo[1] and g1 > 0) or (u >= hi[1] and g1 < 0))
            if not (act0 or act1):
                break
            # converged when the Gauss-Newton model predicts a negligible decrease
            if act0 and act1:
                pred = (g0 * g0 * h11 - 2.0 * g0 * g1 * h01 + g1 * g1 * h00) / (h00 * h11 - h01 * h01)
            elif act0:
                pred = g0 * g0 / h00
            else:
                pred = g1 * g1 / h11
            if pred >= 0.0 and pred <= ftol * cost:
                break
            accepted = False
            zn = z
            un = u
            an = a
            bn = b
            while mu < 1e12:
                d00 = h00 * (1.0 + mu) + 1e-300
                d11 = h11 * (1.0 + mu) + 1e-300
                dz = 0.0
                du = 0.0
                if act0 and act1:
                    det = d00 * d11 - h01 * h01
                    dz = (-g0 * d11 + g1 * h01) / det
                    du = (-g1 * d00 + g0 * h01) / det
                elif act0:
                    dz = -g0 / d00
                else:
                    du = -g1 / d11
                shrink = max(abs(dz) / (radius * step0[0]), abs(du) / (radius * step0[1]), 1.0)
                dz /= shrink
                du /= shrink
                zn = min(max(z + dz, lo[0]), hi[0])
                un = min(max(u + du, lo[1]), hi[1])
                _evaluate(table, nx, pref, q, kmin, rt_fac, zn, un, x0, hx, bary, offsets, unodes, work,
                          taps, j0, y, yz, yu)
                nev += 1
                an, bn = _project(gq, y)
                if bn > 0.0 and g2 - an * an / bn <= cost:
                    accepted = True
                    break
                mu *= 4.0
                radius *= 0.5
            if not accepted:  # no downhill step left: restore the current point
                _evaluate(table, nx, pref, q, kmin, rt_fac, z, u, x0, hx, bary, offsets, unodes, work,
                          taps, j0, y, yz, yu)
                nev += 1
                break
            small = abs(zn - z) <= 1e-12 * abs(z) and abs(un - u) <= 1e-12 * abs(u)
            z = zn
            u = un
            a = an
            b = bn
            mu = max(mu / 3.0, 1e-9)
            radius = min(2.0 * radius, 1e6)
            if cost - (g2 - a * a / b) <= ftol * cost or small:
                break
        a, b = _project(gq, y)
        theta[c, 0] = z
        theta[c, 1] = u
        out[c, 0] = g2 - a * a / b if b > 0.0 else math.nan
        out[c, 1] = a / b if b > 0.0 else math.nan
        out[c, 2] += nev


class _GridData:
    """Everything one Q grid needs: triangular factor of the F -> G map, form-factor products."""

    def __init__(self, grid: QGrid, inst: Instrument, r: np.ndarray, frames: np.ndarray,
                 pairs: PairTable) -> None:
        self.grid = grid
        t = transform_matrix(grid, r, inst.rstep, inst.qdamp)[:, grid.kmin:]
        # T = QR: |T F|² = |R F|² and <Gobs, T F> = <Q'Gobs, R F>. (T'T is numerically
        # singular, the low-Q sines overlap on a short r range, so no Cholesky.)
        qmat, r_fac = np.linalg.qr(t)
        self.rt_fac = np.ascontiguousarray(r_fac.T)
        # Q'Gobs of every frame, one product each: a frame's numbers do not depend on the others
        self.gq = np.array([qmat.T @ g for g in frames])
        self.q = grid.q
        self.ff = scattering_factors(pairs.elements, self.q, inst.radiation)  # (ne, nq)
        self.ffpair = np.array([2.0 * self.ff[a] * self.ff[b] for a, b in pairs.kinds])  # ordered pairs

    def prefactors(self, counts: np.ndarray) -> np.ndarray:
        """(nc, n_kinds, nq): 2 f_a f_b / (N <f>²) for each candidate composition."""
        fsum = counts @ self.ff  # (nc, nq) N <f>
        n = counts.sum(axis=1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(fsum != 0, n / fsum**2, 0.0)
        return self.ffpair[None, :, :] * inv[:, None, :]


class BatchedEngine:
    """The default engine (see module docstring).

    `gobs` is one PDF (n_r,) or a series of frames on the same r grid (n_frames, n_r). A series
    shares each batch's pair tables (the data-independent work) between its frames; frame f > 0
    of a candidate starts from its refined values in frame f - 1 (sequential refinement, as in
    in-situ analysis: neighbouring frames differ little, so the refinement takes few steps).
    """

    name = "batched"

    def __init__(self, symbols, positions, r, gobs, fit: FitSettings) -> None:
        self.r, frames = fit_window(r, gobs, fit)
        self.series = frames.ndim == 2
        self.frames = np.atleast_2d(frames)  # (n_frames, n_r)
        self.gobs = self.frames[0]
        self.settings = fit
        self.inst = Instrument.for_profile(self.r, qmin=fit.qmin, qmax=fit.qmax, qdamp=fit.qdamp,
                                           qbroad=fit.qbroad, radiation=fit.radiation)
        self.pairs = PairTable.build(symbols, positions)
        self.g2 = np.array([float(g @ g) for g in self.frames])  # |Gobs|² of each frame
        zs, us = fit.zoom, fit.uiso
        self.lo = np.array([zs.lo if zs.refine else zs.start, us.lo if us.refine else us.start])
        self.hi = np.array([zs.hi if zs.refine else zs.start, us.hi if us.refine else us.start])
        self.free = np.array([zs.refine, us.refine])
        self.start = np.array([zs.start, us.start])
        # longest unzoomed distance any window can hold; longer pairs never count
        dmax = self.inst.qgrid(self.hi[1]).rhi / self.lo[0]
        use = (self.pairs.d <= dmax) & (self.pairs.d > SQRT_EPS)  # srreal skips coincident atoms
        self._pkind, self._pd = self.pairs.kind[use], self.pairs.d[use]
        n_atoms = self.pairs.species.size
        self._pair_index = np.full((n_atoms, n_atoms), -1, dtype=np.int32)
        self._pair_index[self.pairs.i[use], self.pairs.j[use]] = np.arange(self._pd.size)
        dmax = min(dmax, float(self._pd.max())) if self._pd.size else 1.0
        # x = zoom*Q spans up to hi_zoom*qmax; the d grid must resolve sin(x d) there, and
        # the x grid must resolve it up to dmax (plus the spread's reach)
        xmax = self.hi[0] * fit.qmax
        d_step = STEP_TIMES_FREQ / xmax
        self._nd = int(math.ceil(dmax / d_step)) + N_TAPS
        self._pm0, self._pw = _spread_weights(self._pd, d_step, self._nd)
        self._hx = STEP_TIMES_FREQ / (dmax + N_TAPS * d_step)
        self._x0 = self.lo[0] * max(fit.qmin - 1e-6, 0.0) - N_TAPS * self._hx
        self._nx = int(math.ceil((xmax - self._x0) / self._hx)) + N_TAPS
        x = self._x0 + self._hx * np.arange(self._nx)
        if fit.qbroad > 0 and us.refine:
            k = np.arange(N_U_NODES)
            mid, half = 0.5 * (self.lo[1] + self.hi[1]), 0.5 * (self.hi[1] - self.lo[1])
            self._unodes = mid + half * np.cos(np.pi * (k + 0.5) / N_U_NODES)
        else:
            self._unodes = np.array([self.start[1]])
        dgrid = d_step * np.arange(self._nd)
        xd = np.outer(dgrid, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            base = np.where(dgrid[:, None] > 0, np.sin(xd) / dgrid[:, None], x[None, :])
        self._kernel = np.concatenate(
            [base * np.exp(-un * fit.qbroad**2 * xd**2) for un in self._unodes], axis=1)
        self._grids: dict[QGrid, _GridData] = {}
        self.evaluations = 0  # model evaluations so far (diagnostic for benchmarks)

    def _grid_data(self, grid: QGrid) -> _GridData:
        if grid not in self._grids:
            self._grids[grid] = _GridData(grid, self.inst, self.r, self.frames, self.pairs)
        return self._grids[grid]

    def _tables(self, keep, zref, rlo, rhi) -> tuple[np.ndarray, np.ndarray]:
        """(pair counts, tables (nc, n_kinds, n_u*nx)) for candidates in windows (zref, rlo, rhi)."""
        nc, nk = keep.shape[0], len(self.pairs.kinds)
        hist = np.zeros((nc, nk, self._nd))
        count = _histograms(keep, self._pair_index, self._pkind, self._pd, self._pm0, self._pw,
                            zref, rlo, rhi, hist)
        tables = hist.reshape(nc * nk, self._nd) @ self._kernel
        return count, tables.reshape(nc, nk, self._kernel.shape[1])

    def fit(self, keep: np.ndarray, start: np.ndarray | None = None) -> FitResult:
        """Refine every row of `keep` (n, n_atoms) bool against every frame.

        The result's arrays are (n,) for one PDF and (n, n_frames) for a series. `start` (n, 2):
        (zoom, uiso) to start the first frame from (a series continued from stored frames);
        rows with a NaN start, and every row without `start`, begin at the settings' start.
        """
        keep = np.ascontiguousarray(np.asarray(keep, dtype=bool))
        if keep.ndim != 2 or keep.shape[1] != self.pairs.species.size:
            raise ValueError(f"keep must be (n, {self.pairs.species.size}) bool, got {keep.shape}")
        n = keep.shape[0]
        result = FitResult.pending(n, self.frames.shape[0] if self.series else None)
        theta0 = np.tile(self.start, (n, 1))
        if start is not None:
            given = np.isfinite(start).all(axis=1)
            theta0[given] = np.clip(start[given], self.lo, self.hi)
        # parallelism comes from running engines side by side; threaded BLAS inside
        # each would oversubscribe the cores (20x slower measured with 2 shared cores)
        with threadpool_limits(limits=1, user_api="blas"):
            for lo in range(0, n, BATCH):
                self._fit_batch(keep[lo:lo + BATCH], result, lo, theta0[lo:lo + BATCH])
        return result

    def _fit_batch(self, keep: np.ndarray, result: FitResult, offset: int, theta0: np.ndarray) -> None:
        nc = keep.shape[0]
        counts = keep.astype(float) @ np.eye(len(self.pairs.elements))[self.pairs.species]
        grid0 = self.inst.qgrid(self.start[1])
        zref = np.full(nc, self.start[0])
        npairs, tables = self._tables(keep, zref, np.full(nc, grid0.rlo), np.full(nc, grid0.rhi))
        n_frames = self.frames.shape[0]
        for f in range(n_frames):
            # the tables of the start state, shared by every frame (rounds change them in place)
            last = f == n_frames - 1
            frame_tables, frame_npairs = (tables, npairs) if last else (tables.copy(), npairs.copy())
            out, theta = self._fit_frame(keep, counts, f, theta0.copy(), grid0, frame_tables, frame_npairs)
            for c in range(nc):
                row = (offset + c, f) if self.series else offset + c
                if frame_npairs[c] == 0:
                    result.mark(row, Status.EMPTY)
                else:
                    cost, scale = out[c, 0], out[c, 1]
                    rwp = math.sqrt(max(cost, 0.0) / self.g2[f]) if np.isfinite(cost) else math.nan
                    result.set_row(row, rwp, scale, theta[c, 0], theta[c, 1])
            ok = np.isfinite(out[:, 0]) & np.isfinite(theta).all(axis=1)
            theta0[ok] = theta[ok]  # the next frame starts where this one ended

    def _fit_frame(self, keep, counts, f: int, theta: np.ndarray, grid0: QGrid, tables: np.ndarray,
                   npairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rounds of refinement of frame f from `theta`; tables/npairs hold the state of grid0 at
        the settings' start zoom and are updated in place. Returns (cost, scale, evaluations) and theta."""
        nc = keep.shape[0]
        grids = [grid0] * nc
        zref = np.full(nc, self.start[0])
        rlo = np.full(nc, grid0.rlo)
        rhi = np.full(nc, grid0.rhi)
        out = np.zeros((nc, 3))  # cost, scale, evaluations
        out[:, :2] = np.nan
        todo = np.flatnonzero(npairs > 0)
        moved = np.flatnonzero((theta != self.start).any(axis=1) & (npairs > 0))
        if moved.size:  # a warm start: begin in the fresh state at the start values
            fresh = [self.inst.qgrid(theta[c, 1]) for c in moved]
            new_lo = np.array([g.rlo for g in fresh])
            new_hi = np.array([g.rhi for g in fresh])
            _shift_windows(keep, moved, self._pair_index, self._pkind, self._pd, self._pm0, self._pw,
                           zref[moved], rlo[moved], rhi[moved], theta[moved, 0], new_lo, new_hi,
                           self._kernel, tables, npairs)
            for n, c in enumerate(moved):
                grids[c] = fresh[n]
            zref[moved], rlo[moved], rhi[moved] = theta[moved, 0], new_lo, new_hi
            todo = todo[npairs[todo] > 0]
        for rnd in range(MAX_ROUNDS + 1):
            max_iter = MAX_ITER if rnd < MAX_ROUNDS else 0  # last pass: evaluate the fresh state
            groups: dict[QGrid, list[int]] = {}
            for c in todo:
                groups.setdefault(grids[c], []).append(c)
            for grid, members in groups.items():
                idx = np.array(members, dtype=np.int64)
                gd = self._grid_data(grid)
                _refine(tables, self._nx, idx, gd.prefactors(counts[idx]), gd.q, grid.kmin, gd.rt_fac, gd.gq[f],
                        float(self.g2[f]), self._x0, self._hx, _BARY, _OFFSETS, self._unodes, theta, self.lo, self.hi,
                        self.free, STEP0, max_iter, FTOL, out)
            if rnd == MAX_ROUNDS or todo.size == 0:
                break
            # fresh-calculator state at the refined parameters: refine again where it changed
            fresh = [self.inst.qgrid(theta[c, 1]) for c in todo]
            new_lo = np.array([g.rlo for g in fresh])
            new_hi = np.array([g.rhi for g in fresh])
            moved = _shift_windows(keep, todo, self._pair_index, self._pkind, self._pd, self._pm0, self._pw,
                                   zref[todo], rlo[todo], rhi[todo], theta[todo, 0], new_lo, new_hi,
                                   self._kernel, tables, npairs)
            regrid = np.array([g != grids[c] for g, c in zip(fresh, todo)], dtype=bool)
            for n, c in enumerate(todo):
                grids[c] = fresh[n]
            zref[todo], rlo[todo], rhi[todo] = theta[todo, 0], new_lo, new_hi
            todo = todo[(moved | regrid) & (npairs[todo] > 0)]
        self.evaluations += int(out[:, 2].sum())
        return out, theta

    def model_pdf(self, keep_row, scale: float, zoom: float, uiso: float) -> np.ndarray:
        """scale * G on the fit grid from the exact calculator in the fresh state."""
        return model_pdf(self.pairs, self.inst, self.r, keep_row, scale, zoom, uiso)
