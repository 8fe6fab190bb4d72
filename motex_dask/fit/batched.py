"""Batched fit engine: many candidate motifs of one starting model refined at once.

Every candidate's model is set by the recipe's physics vector θ = (zoom z, delta1, delta2,
U per element); element-pair kind t = (a, b) has pair width s_t = U_a + U_b (srreal's Jeong
model, tests/data/srreal-v2/README.md section 4). Two ways to evaluate F(Q) and its derivatives:

*Kernel path* (delta1 = delta2 = 0, fixed: the classic recipe, one or per-element Uiso). With
u_t = s_t / 2,
    T_ct(x; u) = Σ_{kept pairs p of kind t} sin(x d_p) exp(-u qbroad² x² d_p²) / d_p
at x = z Q_k gives F_c(Q) = 2 Σ_t f_a f_b exp(-u_t Q²) T_ct(z Q; u_t) / (z N_c <f>_c²). Work
shared by all candidates goes through one BLAS product per batch:

1. each kept pair's distance is spread onto a uniform d grid (Lagrange weights), giving a
   histogram H_ct(d_m) per candidate that integrates any smooth function of d to ~1e-6;
2. H @ K tabulates T_ct on a uniform x grid at a few Chebyshev nodes in u (qbroad only), in
   float32 (its rounding, ~1e-7 of a table entry, is far below the 1e-4 R_wp budget);
3. each evaluation interpolates that table (Lagrange in x, polynomial in u).

*Exact path* (delta1 or delta2 non-zero or refined). J(zd) = 1 - δ1/zd - δ2/(zd)² + (qbroad zd)²
enters each pair's width at its own distance and is clamped at 0 (srreal's zero-width clamp),
which is neither smooth in d nor separable, so each kept pair is summed directly: sin, cos and
the Gaussian advance along the Q grid by recurrences (one sin/cos/exp per pair, not per Q point),
pairs of one kind vectorised side by side.

R_wp needs only a = <Gobs, T F> and b = |T F|² with T the srreal F -> G map, so the fit
works in Q space through the QR factor of T (≈80 numbers per candidate). Scale is closed
form (a/b); the free parameters are refined with bounds by a projected Levenberg–Marquardt on
the variable-projection residual, candidate by candidate in numba; trial steps apply the QR
factor to the model only, its Jacobian only once a step is accepted. Rounds of frozen Q grid and
pair window follow `motex_dask.fit.window`; between rounds only pairs whose distance lies
between a window edge's old and new position are looked at. A series refines frame after frame,
each from the previous frame's optimum; a batch's histograms move with the windows from one
frame's start to the next (exact sums: a frame's numbers depend only on where it starts).

This module holds the engine (batches, Q grids, rounds, frames); its numba kernels live beside it:
`pairs` (histograms, window shifts, pair lists), `evaluate` (F and dF/dθ on either path) and `lm`
(one candidate's refinement).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from motex_dask.fit.evaluate import EXACT, KERNEL, N_U_NODES, PAIR_BLOCK
from motex_dask.fit.lm import MAX_ITER, _refine
from motex_dask.fit.model import fit_window, model_pdf
from motex_dask.fit.pairs import (_BARY, _OFFSETS, COMPLEMENT_ROW, HISTOGRAMS, N_TAPS, NONE, TABLES,
                                  _atom_rows, _complement_gain, _histograms, _pair_lists, _shift_windows,
                                  _spread_weights)
from motex_dask.fit.recipe import ID1, ID2, IU, Recipe
from motex_dask.fit.result import FitResult, Status
from motex_dask.fit.window import MAX_ROUNDS
from motex_dask.pdf.calculator import SQRT_EPS, Instrument, PairTable, QGrid, transform_matrix
from motex_dask.pdf.formfactors import scattering_factors
from motex_dask.settings import FitSettings

# grid step times the largest conjugate variable (x for the d grid, d for the x grid):
# 12-point Lagrange error <= 5.5e-5 * STEP_TIMES_FREQ**12 ≈ 8e-6 of the highest-Q term's
# amplitude (measured: < 3e-8 in R_wp)
STEP_TIMES_FREQ = 0.85
# candidates refined together: the Python work per batch and per Q-grid group is shared by more
# fits (512: 1.11x the C60 rate of 128, same bits); their tables take 4 N_U_NODES nx bytes per kind each
BATCH = 512
FTOL = 1e-8  # relative cost decrease (predicted or achieved) that ends a refinement (R_wp ~5e-9 relative)
# ... in later rounds, which begin at the previous optimum in its fresh state: a new Q grid moves
# the optimum a little, and a gain below this (R_wp ~5e-8 relative) is not worth more
# evaluations (the R_wp reported is the fresh one anyway): 2.4 fewer evaluations per C60 fit
FTOL_LATER = 1e-7
# Q-grid steps tried beyond the rounds' piece, each way (exact path; the deltas make the pieces
# matter most: one W19O60 fit of the v2 fixtures gains 5e-3 in R_wp two steps away)
MAX_PIECE_STEPS = 3


@numba.njit(cache=True, nogil=True)
def _prefactors(counts, ff, ffpair):
    """`_GridData.prefactors` (0 where N <f> is 0); compiled: a group of a few candidates paid ~25 us of numpy calls."""
    nc, ne = counts.shape
    nk, nq = ffpair.shape
    out = np.empty((nc, nk, nq))
    for c in range(nc):
        n = 0.0
        for e in range(ne):
            n += counts[c, e]
        for k in range(nq):
            fsum = 0.0  # N <f>
            for e in range(ne):
                fsum += counts[c, e] * ff[e, k]
            inv = n / (fsum * fsum) if fsum != 0.0 else 0.0
            for t in range(nk):
                out[c, t, k] = ffpair[t, k] * inv
    return out


@numba.njit(cache=True, nogil=True)
def _apply_qt(h, tau, frames):
    """Q'g (first h.shape[0] entries) of each frame g, Q given by the Householder vectors of
    np.linalg.qr(mode="raw") (row j of h: vector j below its implicit unit entry)."""
    na, nr = h.shape
    out = np.empty((frames.shape[0], na))
    g = np.empty(nr)
    for f in range(frames.shape[0]):
        g[:] = frames[f]
        for j in range(na):
            s = g[j]
            for i in range(j + 1, nr):
                s += h[j, i] * g[i]
            s *= tau[j]
            g[j] -= s
            for i in range(j + 1, nr):
                g[i] -= s * h[j, i]
        out[f] = g[:na]
    return out


class _GridData:
    """Everything one Q grid needs: triangular factor of the F -> G map, form-factor products."""

    def __init__(self, grid: QGrid, inst: Instrument, r: np.ndarray, frames: np.ndarray,
                 pairs: PairTable) -> None:
        self.grid = grid
        t = transform_matrix(grid, r, inst.rstep, inst.qdamp)[:, grid.kmin:]
        # T = QR: |T F|² = |R F|² and <Gobs, T F> = <Q'Gobs, R F>. (T'T is numerically
        # singular, the low-Q sines overlap on a short r range, so no Cholesky.) Q stays in its
        # Householder form (half the cost of forming it) and is applied to each frame alone, so
        # a frame's numbers do not depend on the others (a series' frame 0 = a one-PDF fit)
        h, tau = np.linalg.qr(t, mode="raw")  # h: LAPACK's factored T, transposed
        na = t.shape[1]
        self.rt_fac = np.ascontiguousarray(np.tril(h[:, :na]))  # R transposed
        self.gq = _apply_qt(np.ascontiguousarray(h), tau, np.ascontiguousarray(frames, dtype=float))
        self.q = grid.q
        self.ff = scattering_factors(pairs.elements, self.q, inst.radiation)  # (ne, nq)
        self.ffpair = np.array([2.0 * self.ff[a] * self.ff[b] for a, b in pairs.kinds])  # ordered pairs

    def prefactors(self, counts: np.ndarray) -> np.ndarray:
        """(nc, n_kinds, nq): 2 f_a f_b / (N <f>²) for each candidate composition; each row alone, so
        its bits do not depend on its group (`_Batch`'s carried evaluations rely on that)."""
        return _prefactors(counts, self.ff, self.ffpair)


class _Batch:
    """Candidates refined together, frame after frame: what does not change between frames."""

    def __init__(self, keep: np.ndarray, species: np.ndarray, n_elements: int, warm: np.ndarray, na: int,
                 n_physics: int) -> None:
        self.keep = keep
        self.counts = keep.astype(float) @ np.eye(n_elements)[species]  # atoms per element
        self.warm = warm  # rows whose next frame starts from a previous frame's optimum
        self.more = False  # whether another frame follows the one being refined
        # kernel path: (histograms, tables, pair counts, zref, rlo, rhi) of the last frame's start windows
        self.start_tables: tuple | None = None
        # kernel path, `_refine`'s carry: a row whose previous frame ended in its first round (same Q
        # grid and pairs at the optimum as at the start) starts the next frame at that optimum in that
        # state, on the same table row: the evaluation there is the one that frame made last, kept here
        nc = keep.shape[0]
        self.carried = np.zeros(nc, bool)
        self.carry_y, self.carry_fj = np.empty((nc, na)), np.empty((nc, n_physics, na))


class BatchedEngine:
    """The default engine (see module docstring)."""

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
        self.recipe = rc = Recipe.from_settings(fit, self.pairs.elements)
        self.mode = EXACT if rc.has_delta else KERNEL
        # |Gobs|² of each frame, correctly rounded: BLAS's dot rounds by the row's memory alignment,
        # so a frame's value changed with its place in the array (a grown series' frames moved)
        self.g2 = np.array([math.fsum(g * g) for g in self.frames])
        self._ka = np.array([a for a, _ in self.pairs.kinds], dtype=np.int64)
        self._kb = np.array([b for _, b in self.pairs.kinds], dtype=np.int64)
        lo_t, hi_t = rc.physics(rc.lo), rc.physics(rc.hi)  # physics bounds (each entry set by one param)
        u_lo, u_hi = float(lo_t[IU:].min()), float(hi_t[IU:].max())
        # longest unzoomed distance any window can hold (the widest window: largest U, no delta
        # narrowing; deltas >= 0 can only shrink it); longer pairs never count
        dmax = float(self.inst.qgrid(u_hi, min(lo_t[ID1], 0.0), min(lo_t[ID2], 0.0)).rhi) / lo_t[0]
        use = (self.pairs.d <= dmax) & (self.pairs.d > SQRT_EPS)  # srreal skips coincident atoms
        self._pi, self._pj = self.pairs.i[use], self.pairs.j[use]
        self._pkind, self._pd = self.pairs.kind[use], self.pairs.d[use]
        self._by_d = np.argsort(self._pd, kind="stable")
        n_atoms = self.pairs.species.size
        self._pair_index = np.full((n_atoms, n_atoms), -1, dtype=np.int32)
        self._pair_index[self._pi, self._pj] = np.arange(self._pd.size)
        self._grids: dict[QGrid, _GridData] = {}
        self._na_max = self.inst.qgrid(u_hi, min(lo_t[ID1], 0.0), min(lo_t[ID2], 0.0)).nq  # Q points of any grid
        self.evaluations = 0  # model evaluations so far (diagnostic for benchmarks)
        if self.mode == KERNEL:
            self._build_kernel(fit, dmax, u_lo, u_hi, lo_t[0], hi_t[0])
        else:  # no tables: zero-sized stand-ins keep the numba signatures fixed
            self._pm0, self._pw = np.zeros(0, np.int64), np.zeros((0, N_TAPS))
            self._kernel = np.zeros((0, 0), np.float32)
            # distinct (kind, distance) to 1e-9 Å: each is summed once per candidate
            key = np.stack([self._pkind, np.round(self._pd * 1e9).astype(np.int64)], axis=1)
            _, first, self._pid = np.unique(key, axis=0, return_index=True, return_inverse=True)
            self._pid = self._pid.ravel().astype(np.int64)
            self._ud, self._ukind = self._pd[first], self._pkind[first]

    def _build_kernel(self, fit: FitSettings, dmax: float, u_lo: float, u_hi: float, z_lo: float,
                      z_hi: float) -> None:
        """The d grid, x grid and kernel K = sin(x d)/d · exp(-u qbroad² x² d²) at the u nodes."""
        dmax = min(dmax, float(self._pd.max())) if self._pd.size else 1.0
        # x = zoom*Q spans up to hi_zoom*qmax; the d grid must resolve sin(x d) there, and
        # the x grid must resolve it up to dmax (plus the spread's reach)
        xmax = z_hi * fit.qmax
        d_step = STEP_TIMES_FREQ / xmax
        self._nd = int(math.ceil(dmax / d_step)) + N_TAPS
        self._pm0, self._pw = _spread_weights(self._pd, d_step, self._nd)
        self._hx = STEP_TIMES_FREQ / (dmax + N_TAPS * d_step)
        self._x0 = z_lo * max(fit.qmin - 1e-6, 0.0) - N_TAPS * self._hx
        self._nx = int(math.ceil((xmax - self._x0) / self._hx)) + N_TAPS
        x = self._x0 + self._hx * np.arange(self._nx)
        if fit.qbroad > 0 and u_hi > u_lo:
            k = np.arange(N_U_NODES)
            mid, half = 0.5 * (u_lo + u_hi), 0.5 * (u_hi - u_lo)
            self._unodes = mid + half * np.cos(np.pi * (k + 0.5) / N_U_NODES)
        else:
            self._unodes = np.array([u_lo])
        dgrid = d_step * np.arange(self._nd)
        xd = np.outer(dgrid, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            base = np.where(dgrid[:, None] > 0, np.sin(xd) / dgrid[:, None], x[None, :])
        self._kernel = np.concatenate(
            [base * np.exp(-un * fit.qbroad**2 * xd**2) for un in self._unodes], axis=1).astype(np.float32)

    @property
    def n_grids(self) -> int:
        """Q grids whose data this engine holds (a long-lived worker builds each once)."""
        return len(self._grids)

    def _grid_data(self, grid: QGrid) -> _GridData:
        if grid not in self._grids:
            self._grids[grid] = _GridData(grid, self.inst, self.r, self.frames, self.pairs)
        return self._grids[grid]

    def _tables(self, batch: _Batch, zref, rlo, rhi) -> tuple[np.ndarray, np.ndarray]:
        """(pair counts, tables (nc, n_kinds, n_u*nx) float32) of the batch in windows (zref, rlo, rhi).

        The histograms of the previous frame's start are moved to these windows (exactly, see
        HIST_BITS) instead of being built again; the tables are the same BLAS product of the same
        histograms either way, so a frame's tables depend on its windows only (a series continued
        later builds them afresh and gets the same bits). The rounds then change a copy in place.
        """
        keep = batch.keep
        nc, nk = keep.shape[0], len(self.pairs.kinds)
        if batch.start_tables is None:
            hist = np.zeros((nc, nk, self._nd))
            # the most common window (every candidate's at a batch's first start) gets atom rows
            # where the complement path saves more than they cost (~3 spreads per pair)
            windows, which, n_in = np.unique(np.stack([zref, rlo, rhi], axis=1), axis=0, return_inverse=True,
                                             return_counts=True)
            w = int(np.argmax(n_in))
            shared = which.ravel() == w
            gain = _complement_gain(keep[shared].sum(axis=1), keep.shape[1], nk * self._nd // COMPLEMENT_ROW)
            if np.maximum(gain, 0).sum() > 6 * self._pd.size:
                rows, row_counts = _atom_rows(self._pi, self._pj, self._pkind, self._pd, self._pm0, self._pw,
                                              *windows[w], keep.shape[1], nk, self._nd)
            else:
                shared[:] = False
                rows, row_counts = np.zeros((0, nk, self._nd)), np.zeros(0, np.int64)
            count = _histograms(keep, self._pair_index, self._pkind, self._pd, self._pm0, self._pw,
                                zref, rlo, rhi, hist, shared, rows, row_counts)
            changed = True
        else:
            hist, tables, count, z0, lo0, hi0 = batch.start_tables
            changed = _shift_windows(keep, np.arange(nc), self._by_d, self._pi, self._pj, self._pkind, self._pd,
                                     self._pm0, self._pw, z0, lo0, hi0, zref, rlo, rhi, self._kernel,
                                     np.zeros((1, 1, 1), np.float32), hist, count, HISTOGRAMS).any()
        if changed:
            tables = (hist.reshape(nc * nk, self._nd).astype(np.float32) @ self._kernel).reshape(nc, nk, -1)
        if not batch.more:
            return count, tables
        batch.start_tables = (hist, tables, count, zref.copy(), rlo.copy(), rhi.copy())
        return count.copy(), tables.copy()

    def _pair_lists(self, keep, idx, zref, rlo, rhi):
        """(starts, distances, multiplicities) of candidates idx's windows (exact path)."""
        return _pair_lists(keep, idx, self._pair_index, self._pd, self._pid, self._ud, self._ukind,
                           len(self.pairs.kinds), zref, rlo, rhi)

    def _states(self, theta: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fresh-calculator state of each candidate at physics θ (n, n_phys): (grid key, rlo, rhi).

        The key klo * 2**32 + khi names the Q grid (`_grid_of`); integer keys group and compare
        candidates without building a QGrid each.
        """
        u = np.where(present, theta[:, IU:], -np.inf).max(axis=1)
        klo, khi = self.inst.window_steps(np.maximum(u, 0.0), theta[:, ID1], theta[:, ID2])
        return (klo << 32) + khi, klo * self.inst.rstep, khi * self.inst.rstep

    def _grid_of(self, key: int) -> QGrid:
        """The Q grid of a `_states` key."""
        return self.inst.grid_for_steps(int(key) >> 32, int(key) & 0xFFFFFFFF)

    def fit(self, keep: np.ndarray, start: np.ndarray | None = None, frames=None) -> FitResult:
        """Refine every row of `keep` (n, n_atoms) bool against every frame (or the frame indices
        `frames`, fitted in that order: one task's block of a series).

        The result's arrays are (n,) for one PDF and (n, n_frames) for a series; frame f > 0 of a
        candidate starts from its refined values in frame f - 1 (sequential refinement: neighbouring
        frames differ little). `start` (n, len(recipe.columns)): values to start the first frame
        from (a series continued from stored frames); rows with a NaN start begin at the settings'.
        """
        keep = np.ascontiguousarray(np.asarray(keep, dtype=bool))
        if keep.ndim != 2 or keep.shape[1] != self.pairs.species.size:
            raise ValueError(f"keep must be (n, {self.pairs.species.size}) bool, got {keep.shape}")
        rc = self.recipe
        n = keep.shape[0]
        order = list(range(self.frames.shape[0]) if frames is None else frames)
        result = FitResult.pending(n, rc.columns, len(order) if self.series else None)
        params0 = np.tile(rc.start, (n, 1))
        given = np.zeros(n, dtype=bool)
        if start is not None:
            start = np.asarray(start, dtype=float).reshape(n, len(rc.columns))
            given = np.isfinite(start).all(axis=1)
            cols = [rc.names.index(c) for c in rc.columns]
            params0[np.ix_(given, cols)] = np.clip(start[given], rc.lo[cols], rc.hi[cols])
        # parallelism comes from running engines side by side; threaded BLAS inside
        # each would oversubscribe the cores (20x slower measured with 2 shared cores)
        with threadpool_limits(limits=1, user_api="blas"):
            for lo in range(0, n, BATCH):
                batch = _Batch(keep[lo:lo + BATCH], self.pairs.species, len(self.pairs.elements), given[lo:lo + BATCH],
                               self._na_max if self.mode == KERNEL else 0, rc.matrix.shape[0])
                self._fit_batch(batch, result, lo, params0[lo:lo + BATCH], order)
        return result

    def _eval_args(self, grid: QGrid, gd: _GridData, prefs: np.ndarray, tables, lists):
        """The (kernel, exact) argument tuples of `_refine` for one group of candidates on one grid."""
        na = grid.nq - grid.kmin
        if self.mode == KERNEL:
            nx = self._nx
            kd = (tables, nx, prefs, gd.q, grid.kmin, self._x0, self._hx, _BARY, _OFFSETS, self._unodes,
                  self._ka, self._kb, np.empty((8, max(nx, na))), np.empty((6, N_TAPS, na)),
                  np.empty(na, np.int64), np.full(1, np.nan))
            ed = (np.zeros((1, 2), np.int64), np.zeros(0), np.zeros(0), prefs, gd.q, grid.kmin, 0.0, self._ka,
                  self._kb, np.zeros((13, 0)), np.zeros((6, 0)))
        else:
            kd = (np.zeros((1, 1, 1), np.float32), 0, prefs, gd.q, grid.kmin, 0.0, 1.0, _BARY, _OFFSETS,
                  np.zeros(1), self._ka, self._kb, np.zeros((8, 1)), np.zeros((6, N_TAPS, 1)),
                  np.zeros(1, np.int64), np.full(1, np.nan))
            starts, dist, mult = lists
            ed = (starts, dist, mult, prefs, gd.q, grid.kmin, self.settings.qbroad, self._ka, self._kb,
                  np.empty((13, PAIR_BLOCK)), np.empty((6, na)))
        return kd, ed

    def _fit_batch(self, batch: _Batch, result: FitResult, offset: int, params0: np.ndarray,
                   order: list[int]) -> None:
        rc = self.recipe
        nc = batch.keep.shape[0]
        lo, hi = np.tile(rc.lo, (nc, 1)), np.tile(rc.hi, (nc, 1))
        params0 = params0.copy()
        for k, f in enumerate(order):
            # a start at the previous frame's optimum is already close: its first round ends at
            # FTOL_LATER too (bench_series' C60 frames: 4.4 -> 3.7 evaluations in that round)
            ftol0 = np.where(batch.warm, FTOL_LATER, FTOL)
            batch.more = k + 1 < len(order)
            npairs, best, best_scale, best_params = self._rounds(batch, slice(None), params0, lo, hi, f, ftol0)
            found = best_params.copy()
            for side in (-1, 1) if self.mode == EXACT else ():  # walk the objective's pieces (_neighbour_starts)
                walking, at = np.flatnonzero(np.isfinite(best)), found
                for _ in range(MAX_PIECE_STEPS):
                    sel, start, lo_n, hi_n = self._neighbour_starts(at[walking], batch.counts[walking] > 0, side)
                    walking = walking[sel]
                    if walking.size == 0:
                        break
                    # the piece's fresh cost where the walk enters it; refined only where that
                    # already beats the best (a 1 % margin refined 3x as many pieces for a largest
                    # gain of 4e-5 in R_wp on the Ga2O3 bench masks, none on the v2 fixtures), to
                    # FTOL_LATER: its start is the neighbouring optimum, already close
                    _, cost, _, _ = self._rounds(batch, walking, start, lo_n, hi_n, f, FTOL_LATER, refine=False)
                    promising = cost < best[walking]
                    rows = walking[promising]
                    if rows.size:
                        _, cost, scale, par = self._rounds(batch, rows, start[promising], lo_n[promising],
                                                           hi_n[promising], f, FTOL_LATER)
                        better = cost < best[rows]
                        best[rows[better]], best_scale[rows[better]] = cost[better], scale[better]
                        best_params[rows[better]] = par[better]
                    at = at.copy()
                    at[walking] = start
            rows, frame = offset + np.arange(nc), (k if self.series else None)
            empty = npairs == 0
            result.mark(rows[empty] if frame is None else (rows[empty], frame), Status.EMPTY)
            result.set_rows(rows[~empty], np.sqrt(np.maximum(best[~empty], 0.0) / self.g2[f]), best_scale[~empty],
                            {name: best_params[~empty, j] for j, name in enumerate(rc.names)}, frame)
            # the next frame starts where this one ended; rows not stored OK here at the settings'
            # start, as a series continued from the stored (NaN) values of this frame does
            batch.warm = ~empty & np.isfinite(best) & np.isfinite(best_scale) & np.isfinite(best_params).all(axis=1)
            batch.carried &= batch.warm
            params0 = np.where(batch.warm[:, None], best_params, rc.start[None, :])

    def _neighbour_starts(self, params: np.ndarray, present: np.ndarray, side: int):
        """Starts and bounds that confine a refinement to the next piece of the objective.

        The fresh-calculator objective is piecewise smooth: its Q grid and pair window step with
        the largest U of the candidate (README 4.3 of the v2 fixtures: ~1e-3 in R_wp a step, up
        to ~1e-2 seen). Rounds of frozen states settle in one piece, but the best fresh R_wp can
        lie just across a step, where the frozen optimum is outside the piece. So the largest U
        is held below (side -1) or above (+1) the nearest step while the rest refines; the
        result counts only if its fresh R_wp is better. Returns (rows, start, lo, hi).
        """
        rc = self.recipe
        theta = rc.physics(params)
        u_el = np.where(present, theta[:, IU:], -np.inf)
        e_max = u_el.argmax(axis=1)
        k_max = np.array([np.flatnonzero(rc.matrix[IU + e])[0] for e in e_max], dtype=np.int64)
        u0 = u_el.max(axis=1)
        rows = np.arange(params.shape[0])
        if not rc.free[np.unique(k_max)].any():
            return rows[:0], params[:0], params[:0], params[:0]
        key0 = self.inst.window_steps(u0, theta[:, ID1], theta[:, ID2])
        bound = np.where(side < 0, rc.lo[k_max], rc.hi[k_max])
        same, other = u0.copy(), bound.copy()
        key_b = self.inst.window_steps(other, theta[:, ID1], theta[:, ID2])
        has = rc.free[k_max] & ((key_b[0] != key0[0]) | (key_b[1] != key0[1]))
        for _ in range(40):  # bisection for the step: `same` stays in this piece, `other` across
            mid = 0.5 * (same + other)
            km = self.inst.window_steps(mid, theta[:, ID1], theta[:, ID2])
            moved = (km[0] != key0[0]) | (km[1] != key0[1])
            other = np.where(moved, mid, other)
            same = np.where(moved, same, mid)
        rows = rows[has]
        lo, hi = np.tile(rc.lo, (rows.size, 1)), np.tile(rc.hi, (rows.size, 1))
        start = params[rows].copy()
        u_cols = [k for k in range(len(rc.names)) if rc.matrix[IU:, k].any()]
        for n, r in enumerate(rows):
            if side < 0:  # every U at most the step's lower side, so the max stays in that piece
                for k in u_cols:
                    hi[n, k] = max(min(hi[n, k], other[r]), lo[n, k])
            else:
                lo[n, k_max[r]] = min(other[r], hi[n, k_max[r]])
        start = np.clip(start, lo, hi)
        return rows, start, lo, hi

    def _rounds(self, batch: _Batch, rows: slice | np.ndarray, params: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, f: int, ftol0: float | np.ndarray, refine: bool = True):
        """Rounds of frozen-state refinements of frame f for the batch's `rows` (every row on the
        kernel path) from `params` within per-candidate bounds (lo, hi).

        The first round ends at the relative gain ftol0 (per row), later ones at FTOL_LATER. Returns
        (pair counts at the start, best fresh cost, its scale, its parameters); with refine=False just
        the fresh cost at `params`.
        """
        rc = self.recipe
        keep, counts = batch.keep[rows], batch.counts[rows]
        nc = keep.shape[0]
        present = counts > 0
        params = params.copy()
        theta = rc.physics(params)
        grids, rlo, rhi = self._states(theta, present)
        zref = theta[:, 0].copy()
        if self.mode == KERNEL:
            npairs, tables = self._tables(batch, zref, rlo, rhi)
        else:  # the pair lists of the rows `listed`, in their windows: built once a round, shared by its groups
            tables = None
            listed = np.arange(nc)
            lists = self._pair_lists(keep, listed, zref, rlo, rhi)
            npairs = lists[0][:, -1] - lists[0][:, 0]
        npairs0 = npairs.copy()
        out = np.zeros((nc, 5))  # cost, scale, evaluations, start's cost and scale
        out[:, :2] = np.nan
        # the best fresh-calculator cost met so far, and its parameters: the objective is only
        # piecewise smooth (the Q grid steps with max U and the deltas), so rounds can alternate
        # between two states; the better fresh one is reported
        best = np.full(nc, np.inf)
        best_scale = np.full(nc, np.nan)
        best_params = params.copy()
        todo = np.flatnonzero(npairs > 0)
        for rnd in range(MAX_ROUNDS + 1):
            max_iter = MAX_ITER if rnd < MAX_ROUNDS and refine else 0  # last pass: evaluate the fresh state
            ftol = np.broadcast_to(ftol0 if rnd == 0 else FTOL_LATER, (nc,)).astype(float)
            carry = (batch.carried, batch.more, batch.carry_y, batch.carry_fj) if self.mode == KERNEL and rnd == 0 \
                and refine else (np.zeros(nc, bool), False, np.zeros((1, 1)), np.zeros((1, 1, 1)))
            start_params = params[todo].copy()
            keys, which = np.unique(grids[todo], return_inverse=True)
            for g, key in enumerate(keys):
                idx = todo[which == g]
                grid = self._grid_of(key)
                gd = self._grid_data(grid)
                group = None if self.mode == KERNEL else (lists[0][np.searchsorted(listed, idx)], *lists[1:])
                kd, ed = self._eval_args(grid, gd, gd.prefactors(counts[idx]), tables, group)
                _refine(self.mode, kd, ed, idx, params, rc.matrix, lo, hi, rc.free, rc.step0,
                        grid.nq - grid.kmin, gd.rt_fac, gd.gq[f], float(self.g2[f]), max_iter, ftol, out, carry)
            if rnd > 0 or not refine:  # each round starts at the previous optimum in its fresh state
                better = out[todo, 3] < best[todo]
                best[todo[better]] = out[todo[better], 3]
                best_scale[todo[better]] = out[todo[better], 4]
                best_params[todo[better]] = start_params[better]
            if rnd == MAX_ROUNDS or todo.size == 0 or not refine:
                break
            # fresh-calculator state at the refined parameters: refine again where it changed
            theta = rc.physics(params[todo])
            fresh, new_lo, new_hi = self._states(theta, present[todo])
            moved = _shift_windows(keep, todo, self._by_d, self._pi, self._pj, self._pkind, self._pd, self._pm0,
                                   self._pw, zref[todo], rlo[todo], rhi[todo], theta[:, 0], new_lo, new_hi,
                                   self._kernel, tables if tables is not None else np.zeros((1, 1, 1), np.float32),
                                   np.zeros((1, 1, 1)), npairs, TABLES if self.mode == KERNEL else NONE)
            regrid = fresh != grids[todo]
            settled = todo[~(moved | regrid)]  # the optimum's own state: a fresh cost
            if rnd == 0 and self.mode == KERNEL:  # the evaluation kept for the next frame is at its start
                batch.carried[np.setdiff1d(np.arange(nc), settled)] = False
            better = out[settled, 0] < best[settled]
            best[settled[better]] = out[settled[better], 0]
            best_scale[settled[better]] = out[settled[better], 1]
            best_params[settled[better]] = params[settled[better]]
            grids[todo], zref[todo], rlo[todo], rhi[todo] = fresh, theta[:, 0], new_lo, new_hi
            if self.mode == EXACT:  # the lists and pair counts follow the new windows
                listed = todo
                lists = self._pair_lists(keep, listed, zref[listed], rlo[listed], rhi[listed])
                npairs[listed] = lists[0][:, -1] - lists[0][:, 0]
            todo = todo[(moved | regrid) & (npairs[todo] > 0)]
        self.evaluations += int(out[:, 2].sum())
        return npairs0, best, best_scale, best_params

    def model_pdf(self, keep_row, scale: float, values: dict[str, float]) -> np.ndarray:
        """scale * G on the fit grid from the exact calculator in the fresh state at these parameter values."""
        return model_pdf(self.pairs, self.inst, self.r, keep_row, scale, self.recipe.physics(self.recipe.vector(values)))
