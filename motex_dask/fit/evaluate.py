"""One candidate's model F(Q) and its derivatives dF/dθ (batched engine): the kernel path interpolates
the batch's shared tables, the exact path sums the candidate's pairs (see batched's docstring).
Internal to motex_dask.fit.
"""

from __future__ import annotations

import math

import numba

from motex_dask.fit.fastmath import FAST as _FAST
from motex_dask.fit.pairs import N_TAPS
from motex_dask.fit.recipe import ID1, ID2, IU

KERNEL, EXACT = 0, 1  # evaluation paths
# Chebyshev nodes in u for the qbroad factor exp(-u qbroad² x² d²): its exponent spans < 0.33
# over [0.001, 0.05] and is always < 2 % of the exactly applied exp(-u Q²); 4 nodes: < 3e-9 in R_wp
N_U_NODES = 4
PAIR_BLOCK = 64  # pairs advanced side by side along Q in the exact path (SIMD width x unroll)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _weights(t, offsets, bary, w, wd, tmp):
    """Lagrange weights w[i, a] and t-derivatives wd[i, a] at offsets t[a], division-free.

    Prefix/suffix products over the nodes, each step vectorised over the points a; the suffix
    products are stored, the prefix ones carried along in the last pass (1.5x faster than both stored).
    """
    n = bary.size
    na = t.size
    suf, dsuf, p, dp = tmp[0], tmp[1], tmp[2, 0], tmp[3, 0]
    for a in range(na):
        suf[n - 1, a] = 1.0
        dsuf[n - 1, a] = 0.0
    for i in range(n - 1, 0, -1):
        o = offsets[i]
        for a in range(na):
            e = t[a] - o
            dsuf[i - 1, a] = dsuf[i, a] * e + suf[i, a]
            suf[i - 1, a] = suf[i, a] * e
    for a in range(na):
        p[a] = 1.0
        dp[a] = 0.0
    for i in range(n):  # prefix products on the fly
        c = bary[i]
        o = offsets[i]
        for a in range(na):
            pa = p[a]
            dpa = dp[a]
            w[i, a] = c * pa * suf[i, a]
            wd[i, a] = c * (dpa * suf[i, a] + pa * dsuf[i, a])
            e = t[a] - o
            dp[a] = dpa * e + pa
            p[a] = pa * e


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _eval_kernel(kd, c, n, theta, f, fj, want_jac):
    """F (f) and dF/dθ (fj rows IZ and IU+e) on Q_k, k >= kmin, from candidate c's table."""
    tables, nx, prefs, q, kmin, x0, hx, bary, offsets, unodes, ka, kb, work, taps, j0, zcache = kd
    table = tables[c]
    pref = prefs[n]
    nk = table.shape[0]
    nl = unodes.size
    na = q.size - kmin
    ntap = bary.size
    lead = ntap // 2 - 1
    z = theta[0]
    gv, gu, lam, dlam, tq, sv, sx, su = work[0], work[1], work[2], work[3], work[4], work[5], work[6], work[7]
    w, wd = taps[0], taps[1]
    if zcache[0] != z:  # Lagrange weights depend on z only: reused while only U moves
        for a in range(na):  # where each x = z*Q_k falls on the x grid
            s = (z * q[kmin + a] - x0) / hx
            fl = math.floor(s)
            tq[a] = s - fl
            j0[a] = int(fl) - lead
        _weights(tq[:na], offsets, bary, w, wd, taps[2:])
        zcache[0] = z
    jlo = max(j0[0], 0)
    jhi = min(j0[na - 1] + ntap, nx)
    f[:na] = 0.0
    if want_jac:
        fj[:, :na] = 0.0
    for kk in range(nk):
        u = 0.5 * (theta[IU + ka[kk]] + theta[IU + kb[kk]])
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
        # contract the u nodes first: one table row (and its u-derivative) per kind
        row = table[kk]
        for j in range(jlo, jhi):
            v = 0.0
            dv = 0.0
            for l in range(N_U_NODES):  # a constant count: unrolled, and the j loop vectorises
                if l < nl:
                    t = row[l * nx + j]
                    v += lam[l] * t
                    dv += dlam[l] * t
            gv[j] = v
            gu[j] = dv
        # the taps' sums, taps innermost (unrolled: the Q loop vectorises, sums stay in registers)
        for a in range(na):
            j = j0[a]
            s = 0.0
            for i in range(N_TAPS):
                s += w[i, a] * gv[j + i]
            sv[a] = s
        if want_jac:
            for a in range(na):
                j = j0[a]
                s1 = 0.0
                s2 = 0.0
                for i in range(N_TAPS):
                    s1 += wd[i, a] * gv[j + i]
                    s2 += w[i, a] * gu[j + i]
                sx[a] = s1
                su[a] = s2
        # exp(-u Q_k²) along Q_k = k qs by its ratio recurrence (one exp per kind, not per Q)
        qs = q[1]
        ratio = math.exp(-u * qs * qs)
        r2 = ratio * ratio
        gk = math.exp(-u * q[kmin] * q[kmin])
        rk = math.exp(-u * qs * qs * (2 * kmin + 1))
        for a in range(na):
            qk = q[kmin + a]
            e = pref[kk, kmin + a] * gk / z
            gk *= rk
            rk *= r2
            f[a] += e * sv[a]
            if want_jac:
                fj[0, a] += e * (qk * sx[a] / hx - sv[a] / z)
                fu = 0.5 * e * (su[a] - qk * qk * sv[a])  # dF/dU_a = dF/dU_b = dF/du_t / 2
                fj[IU + ka[kk], a] += fu
                fj[IU + kb[kk], a] += fu


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _eval_exact(ed, c, n, theta, f, fj, want_jac):
    """F (f) and dF/dθ (fj, every row) on Q_k, k >= kmin, summed over candidate n's distinct pairs.

    Per pair: D = z d, J = 1 - δ1/D - δ2/D² + (qbroad D)², width s_t max(J, 0). sin(QD),
    cos(QD) and exp(-s J Q²/2) advance along k by rotation and ratio recurrences.
    """
    starts, dist, mult, prefs, q, kmin, qbroad, ka, kb, st, acc = ed
    pref = prefs[n]
    nk = ka.size
    na = q.size - kmin
    z = theta[0]
    d1 = theta[ID1]
    d2 = theta[ID2]
    qs = q[1] - q[0]
    sn, cs, cd, sd, gg, rr, r2, invd, jc, jp, dz, w4, w5 = (st[0], st[1], st[2], st[3], st[4], st[5], st[6],
                                                         st[7], st[8], st[9], st[10], st[11], st[12])
    f[:na] = 0.0
    if want_jac:
        fj[:, :na] = 0.0
    for kk in range(nk):
        s_t = theta[IU + ka[kk]] + theta[IU + kb[kk]]
        for r in range(6):
            for a in range(na):
                acc[r, a] = 0.0
        for p0 in range(starts[n, kk], starts[n, kk + 1], PAIR_BLOCK):
            nb = min(PAIR_BLOCK, starts[n, kk + 1] - p0)
            for i in range(nb):
                dd = z * dist[p0 + i]
                iv = 1.0 / dd
                j = 1.0 - d1 * iv - d2 * iv * iv + qbroad * qbroad * dd * dd
                if j > 0.0:
                    jc[i] = j
                    jp[i] = (d1 * iv * iv + 2.0 * d2 * iv * iv * iv + 2.0 * qbroad * qbroad * dd) * dist[p0 + i]
                else:  # the zero-width clamp: an undamped peak, no width derivative
                    jc[i] = 0.0
                    jp[i] = 0.0
                invd[i] = iv
                dz[i] = dd
                # one sin, cos and exp per pair: Q_k = k qs, so every factor is a power of these
                cd[i] = math.cos(qs * dd)
                sd[i] = math.sin(qs * dd)
                g1 = math.exp(-0.5 * s_t * jc[i] * qs * qs)  # exp(-s J Q²/2) at Q = qs
                r2[i] = g1 * g1
                sn[i] = 0.0
                cs[i] = 1.0
                gk = 1.0
                rk = g1
                for _ in range(kmin):  # advance to k = kmin
                    snew = sn[i] * cd[i] + cs[i] * sd[i]
                    cs[i] = cs[i] * cd[i] - sn[i] * sd[i]
                    sn[i] = snew
                    gk *= rk
                    rk *= r2[i]
                gg[i] = mult[p0 + i] * gk * iv
                rr[i] = rk
            for i in range(nb):  # width-derivative weights; zero for clamped pairs
                pos = 1.0 if jc[i] > 0.0 else 0.0
                w4[i] = invd[i] * pos
                w5[i] = invd[i] * invd[i] * pos
            for a in range(na):  # one pass per Q point: the sums, then every pair advances a step
                if want_jac:
                    t0 = 0.0
                    t1 = 0.0
                    t2 = 0.0
                    t3 = 0.0
                    t4 = 0.0
                    t5 = 0.0
                    for i in range(nb):
                        g = gg[i]
                        term = g * sn[i]
                        t0 += term
                        t1 += g * cs[i] * dz[i]
                        t2 += term * jp[i]
                        t3 += term * jc[i]
                        t4 += term * w4[i]
                        t5 += term * w5[i]
                    acc[1, a] += t1
                    acc[2, a] += t2
                    acc[3, a] += t3
                    acc[4, a] += t4
                    acc[5, a] += t5
                else:  # F alone (no Jacobian asked for): the same sum, 0.57x the time
                    t0 = 0.0
                    for i in range(nb):
                        t0 += gg[i] * sn[i]
                acc[0, a] += t0
                # kept apart from the sums: with no reduction in it this loop vectorises (17 % faster)
                for i in range(nb):
                    s0 = sn[i]
                    c0 = cs[i]
                    sn[i] = s0 * cd[i] + c0 * sd[i]
                    cs[i] = c0 * cd[i] - s0 * sd[i]
                    r = rr[i]
                    gg[i] = gg[i] * r
                    rr[i] = r * r2[i]
        for a in range(na):
            qk = q[kmin + a]
            pk = pref[kk, kmin + a]
            f[a] += pk * acc[0, a]
            if want_jac:
                # d/dz of sin(QD)/D is Q cos(QD)/z - sin(QD)/(z D); acc[1] sums G cos(QD)
                fj[0, a] += pk * ((qk * acc[1, a] - acc[0, a]) / z - 0.5 * s_t * qk * qk * acc[2, a])
                fs = -0.5 * pk * qk * qk * acc[3, a]
                fj[IU + ka[kk], a] += fs
                fj[IU + kb[kk], a] += fs
                fj[ID1, a] += 0.5 * s_t * pk * qk * qk * acc[4, a]
                fj[ID2, a] += 0.5 * s_t * pk * qk * qk * acc[5, a]


@numba.njit(cache=True, nogil=True)
def _evaluate(mode, kd, ed, c, n, theta, f, fj, want_jac):
    if mode == KERNEL:
        _eval_kernel(kd, c, n, theta, f, fj, want_jac)
    else:
        _eval_exact(ed, c, n, theta, f, fj, want_jac)
