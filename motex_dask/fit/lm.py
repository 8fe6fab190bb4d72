"""The refinement of one candidate (batched engine): a projected Levenberg–Marquardt on the
variable-projection residual in Q space, with bounds and trust radii. Internal to motex_dask.fit.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from motex_dask.fit.evaluate import _evaluate
from motex_dask.fit.fastmath import FAST as _FAST

# Trust radii: the first of each parameter is recipe.STEP0, doubled after each successful step, so
# the refinement ends in the minimum of the start's basin (as srfit's trf does) instead of jumping
# across the many-minima zoom landscape of small motifs.
MAX_ITER = 60  # LM iterations of one round at most


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _apply_r(rt_fac, v, out):
    """out = R v, R upper triangular given as its transpose (column sums: contiguous, vectorised).

    Four columns per pass over out (each out[i] still adds its terms in column order): 1.2x faster.
    """
    na = v.size
    for i in range(na):
        out[i] = 0.0
    j = 0
    while j + 4 <= na:
        c0, c1, c2, c3 = v[j], v[j + 1], v[j + 2], v[j + 3]
        r0, r1, r2, r3 = rt_fac[j], rt_fac[j + 1], rt_fac[j + 2], rt_fac[j + 3]
        for i in range(j + 1):
            out[i] = out[i] + r0[i] * c0 + r1[i] * c1 + r2[i] * c2 + r3[i] * c3
        out[j + 1] = out[j + 1] + r1[j + 1] * c1 + r2[j + 1] * c2 + r3[j + 1] * c3
        out[j + 2] = out[j + 2] + r2[j + 2] * c2 + r3[j + 2] * c3
        out[j + 3] = out[j + 3] + r3[j + 3] * c3
        j += 4
    for jj in range(j, na):
        cj = v[jj]
        for i in range(jj + 1):
            out[i] += rt_fac[jj, i] * cj


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _physics(matrix, p, theta):
    """theta = matrix @ p: the physics vector θ of the recipe's parameters p."""
    for r in range(matrix.shape[0]):
        theta[r] = 0.0
        for k in range(matrix.shape[1]):
            theta[r] += matrix[r, k] * p[k]


@numba.njit(cache=True, nogil=True)
def _solve(h, g, act, mu, x, idx, a):
    """x[act] = -(h + mu diag(h))[act, act]^-1 g[act] by Gaussian elimination; x = 0 elsewhere.

    idx (m,) and a (m, m + 1): work space.
    """
    m = 0
    for i in range(act.size):
        if act[i]:
            idx[m] = i
            m += 1
    for i in range(m):
        for j in range(m):
            a[i, j] = h[idx[i], idx[j]]
        a[i, i] = a[i, i] * (1.0 + mu) + 1e-300
        a[i, m] = -g[idx[i]]
    for col in range(m):
        piv = col
        for r in range(col + 1, m):
            if abs(a[r, col]) > abs(a[piv, col]):
                piv = r
        if piv != col:
            for k in range(m + 1):
                a[col, k], a[piv, k] = a[piv, k], a[col, k]
        for r in range(col + 1, m):
            fac = a[r, col] / a[col, col]
            for k in range(col, m + 1):
                a[r, k] -= fac * a[col, k]
    for i in range(x.size):
        x[i] = 0.0
    for i in range(m - 1, -1, -1):
        s = a[i, m]
        for k in range(i + 1, m):
            s -= a[i, k] * x[idx[k]]
        x[idx[i]] = s / a[i, i]


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _refine(mode, kd, ed, idx, params, matrix, lo, hi, free, step0, na, rt_fac, gq, g2, max_iter, ftol, out, carry):
    """Projected Levenberg–Marquardt on the free parameters of candidates idx; scale in closed form.

    params[c] holds the start and receives the optimum; out[c] receives (cost, scale), adds
    the evaluations made to out[c, 2] and gets the start's (cost, scale) in out[c, 3:5]; cost = |Gobs - scale*G|².
    lo[c], hi[c]: the candidate's bounds (fixed parameters: lo = hi). mode picks the evaluation path;
    the path's per-candidate arrays are indexed by c (kernel tables) or by n (everything else).
    ftol[c]: the relative cost decrease (predicted or achieved) that ends the candidate's refinement.
    carry (use, save, y, fj): where use[c], the start's R F and dF/dθ are y[c], fj[c] instead of an
    evaluation; with `save`, use[c] then tells whether y[c], fj[c] now hold those of the optimum.
    """
    use, save, ys, fjs = carry
    nfull, npar = matrix.shape
    fidx = np.flatnonzero(free)
    m = fidx.size
    f = np.empty(na)
    fj = np.empty((nfull, na))
    col = np.empty(na)
    y = np.empty(na)
    yt = np.empty(na)
    jy = np.empty((m, na))
    theta = np.empty(nfull)
    p = np.empty(npar)
    pn = np.empty(npar)
    hess = np.empty((m, m))
    sidx = np.empty(m, np.int64)
    sa = np.empty((m, m + 1))
    grad = np.empty(m)
    act = np.empty(m, np.bool_)
    step = np.empty(m)
    ag = np.empty(m)
    bg = np.empty(m)
    for n in range(idx.size):
        c = idx[n]
        for k in range(npar):
            p[k] = params[c, k]
        _physics(matrix, p, theta)
        if use[c]:
            nev = 0
            for i in range(na):
                y[i] = ys[c, i]
                for r in range(nfull):
                    fj[r, i] = fjs[c, r, i]
        else:
            _evaluate(mode, kd, ed, c, n, theta, f, fj, m > 0 and max_iter > 0)
            nev = 1
            _apply_r(rt_fac, f, y)
        at_p = m > 0 and max_iter > 0  # fj belongs to p
        a = 0.0
        b = 0.0
        for i in range(na):
            a += gq[i] * y[i]
            b += y[i] * y[i]
        out[c, 3] = g2 - a * a / b if b > 0.0 else math.nan  # the start's cost and scale on this state
        out[c, 4] = a / b if b > 0.0 else math.nan
        mu = 1e-3
        radius = 1.0  # trust radius in units of step0: stay in the start's basin, like trf
        for it in range(max_iter):
            if not (b > 0.0) or m == 0:
                break
            for k in range(m):  # Jacobian columns of the free parameters, through R
                for i in range(na):
                    col[i] = 0.0
                for r in range(nfull):
                    mk = matrix[r, fidx[k]]
                    if mk != 0.0:
                        for i in range(na):
                            col[i] += mk * fj[r, i]
                _apply_r(rt_fac, col, jy[k])
            scale = a / b
            cost = g2 - a * scale
            for k in range(m):
                s1 = 0.0
                s2 = 0.0
                for i in range(na):
                    s1 += gq[i] * jy[k, i]
                    s2 += y[i] * jy[k, i]
                ag[k] = s1
                bg[k] = s2
            ss = scale * scale
            for k in range(m):
                for l in range(k, m):
                    s = 0.0
                    for i in range(na):
                        s += jy[k, i] * jy[l, i]
                    # variable projection (Kaufman): J'J of the residual scale*T F - Gobs
                    hess[k, l] = ss * (s - bg[k] * bg[l] / b)
                    hess[l, k] = hess[k, l]
                grad[k] = -scale * ag[k] + ss * bg[k]  # half gradient of cost
            # parameters held at a bound by the gradient
            any_act = False
            for k in range(m):
                v = p[fidx[k]]
                act[k] = not ((v <= lo[c, fidx[k]] and grad[k] > 0) or (v >= hi[c, fidx[k]] and grad[k] < 0))
                any_act = any_act or act[k]
            if not any_act:
                break
            # converged when the Gauss-Newton model predicts a negligible decrease
            _solve(hess, grad, act, 0.0, step, sidx, sa)
            pred = 0.0
            for k in range(m):
                pred -= grad[k] * step[k]
            if pred >= 0.0 and pred <= ftol[c] * cost:
                break
            accepted = False
            an = a
            bn = b
            while mu < 1e12:
                _solve(hess, grad, act, mu, step, sidx, sa)
                shrink = 1.0
                for k in range(m):
                    shrink = max(shrink, abs(step[k]) / (radius * step0[fidx[k]]))
                for k in range(npar):
                    pn[k] = p[k]
                for k in range(m):
                    j = fidx[k]
                    pn[j] = min(max(p[j] + step[k] / shrink, lo[c, j]), hi[c, j])
                _physics(matrix, pn, theta)
                # the F-space Jacobian comes along (most trials are accepted); only its
                # product with R waits for acceptance
                _evaluate(mode, kd, ed, c, n, theta, f, fj, True)
                nev += 1
                at_p = False
                _apply_r(rt_fac, f, yt)
                an = 0.0
                bn = 0.0
                for i in range(na):
                    an += gq[i] * yt[i]
                    bn += yt[i] * yt[i]
                if bn > 0.0 and g2 - an * an / bn <= cost:
                    accepted = True
                    break
                mu *= 4.0
                radius *= 0.5
            if not accepted:  # no downhill step left: stay at the current point
                break
            at_p = True
            small = True
            for k in range(m):
                j = fidx[k]
                small = small and abs(pn[j] - p[j]) <= 1e-12 * abs(p[j])
            for k in range(npar):
                p[k] = pn[k]
            for i in range(na):
                y[i] = yt[i]
            a = an
            b = bn
            mu = max(mu / 3.0, 1e-9)
            radius = min(2.0 * radius, 1e6)
            if cost - (g2 - a * a / b) <= ftol[c] * cost or small:
                break
        for k in range(npar):
            params[c, k] = p[k]
        if save:
            use[c] = at_p and b > 0.0 and na <= ys.shape[1]
            if use[c]:
                for i in range(na):
                    ys[c, i] = y[i]
                    for r in range(nfull):
                        fjs[c, r, i] = fj[r, i]
        out[c, 0] = g2 - a * a / b if b > 0.0 else math.nan
        out[c, 1] = a / b if b > 0.0 else math.nan
        out[c, 2] += nev
