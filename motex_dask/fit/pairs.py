"""Pair work of a batch of candidates (batched engine): kept pairs spread onto the d grid as histograms
(pair by pair, or as the complement of the dropped atoms' rows), window shifts between rounds and
frames, and the exact path's pair lists. Internal to motex_dask.fit; weights are fixed-point, so every
histogram sum is exact in any order (see HIST_BITS).
"""

from __future__ import annotations

import numba
import numpy as np

from motex_dask.fit.fastmath import FAST as _FAST

N_TAPS = 12  # Lagrange nodes per interpolation (even; _spread spells out 12)
# contiguous adds of an atom row (`_histograms`' complement path) that cost about as much as one
# pair's 12 scattered ones (measured on C60)
COMPLEMENT_ROW = 128
_OFFSETS = np.arange(N_TAPS, dtype=float) - (N_TAPS // 2 - 1)  # nodes around floor(s)
_BARY = np.array([1.0 / np.prod(o - np.delete(_OFFSETS, i)) for i, o in enumerate(_OFFSETS)])
# histogram weights are rounded to multiples of 2**-HIST_BITS (1.5e-8, below the float32 tables'
# rounding): their float64 sums are then exact in any order (while a bin holds less than 2**27), so a
# histogram moved pair by pair from the previous frame's window equals one built afresh (a series'
# later frames need not rebuild it), and one built as a complement (`_histograms`) one built pair by pair
HIST_BITS = 26


def _spread_weights(x: np.ndarray, step: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First node index and N_TAPS Lagrange weights (multiples of 2**-HIST_BITS) placing each x on the grid m*step."""
    s = x / step
    first = np.clip(np.floor(s).astype(np.int64) - (N_TAPS // 2 - 1), 0, n - N_TAPS)
    e = (s - first)[:, None] - (_OFFSETS + (N_TAPS // 2 - 1))[None, :]  # s - node
    w = np.empty_like(e)
    for i in range(N_TAPS):
        w[:, i] = _BARY[i] * np.prod(np.delete(e, i, axis=1), axis=1)
    return first, np.ldexp(np.round(np.ldexp(w, HIST_BITS)), -HIST_BITS)


@numba.njit(cache=True, nogil=True)
def _atoms_where(keep_row, value, out):
    """Indices of the atoms with keep_row[i] == value into out; returns how many."""
    m = 0
    for i in range(keep_row.size):
        if keep_row[i] == value:
            out[m] = i
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _in_window(d, z, lo, hi):
    dz = d * z
    return dz >= lo and dz <= hi


@numba.njit(cache=True, nogil=True)
def _window_pairs(atoms, m, pair_index, pd, z, lo, hi, plist):
    """Pairs among atoms[:m] (ascending) whose zoomed distance lies in [lo, hi] into plist; returns how many."""
    npair = 0
    for a in range(m):
        row = pair_index[atoms[a]]
        for b in range(a + 1, m):
            p = row[atoms[b]]
            if p >= 0 and _in_window(pd[p], z, lo, hi):
                plist[npair] = p
                npair += 1
    return npair


@numba.njit(cache=True, nogil=True)
def _spread(h, m0, w):
    """h[m0:m0 + 12] += w: written out, the 12 weights loaded before any is added (vector adds, 1.7x faster)."""
    w0, w1, w2, w3, w4, w5 = w[0], w[1], w[2], w[3], w[4], w[5]
    w6, w7, w8, w9, w10, w11 = w[6], w[7], w[8], w[9], w[10], w[11]
    h[m0] += w0
    h[m0 + 1] += w1
    h[m0 + 2] += w2
    h[m0 + 3] += w3
    h[m0 + 4] += w4
    h[m0 + 5] += w5
    h[m0 + 6] += w6
    h[m0 + 7] += w7
    h[m0 + 8] += w8
    h[m0 + 9] += w9
    h[m0 + 10] += w10
    h[m0 + 11] += w11


@numba.njit(cache=True, nogil=True)
def _atom_rows(pi, pj, pkind, pd, pm0, pw, z, lo, hi, n_atoms, n_kinds, nd):
    """Spread pairs of one window per atom: rows[i, kind] sums the pairs of atom i, rows[n_atoms, kind]
    all pairs; counts[i] likewise (the start of `_histograms`' complement path)."""
    rows = np.zeros((n_atoms + 1, n_kinds, nd))
    counts = np.zeros(n_atoms + 1, np.int64)
    for p in range(pd.size):
        if _in_window(pd[p], z, lo, hi):
            for a in (pi[p], pj[p], n_atoms):
                _spread(rows[a, pkind[p]], pm0[p], pw[p])
                counts[a] += 1
    return rows, counts


@numba.njit(cache=True, nogil=True)
def _complement_gain(kept, n_atoms, row_cost):
    """Half pair spreads that `_histograms`' complement path saves for candidates keeping `kept` of n_atoms
    atoms (negative: it costs more): ~kept²/2 spreads direct, against a row of row_cost spreads per
    dropped atom plus ~dropped²/2."""
    dropped = n_atoms - kept
    return kept * kept - dropped * (2 * row_cost + dropped)


@numba.njit(cache=True, nogil=True)
def _histograms(keep, pair_index, pkind, pd, pm0, pw, zref, rlo, rhi, hist, shared, rows, row_counts):
    """Spread every kept pair inside the window onto hist[c, kind, :]; return pair counts.

    Loops over pairs of kept atoms only (pair_index[i, j] = row in the pair arrays, or -1),
    listing those in the window first, then spreads them. Candidates with shared[c] (window
    of `_atom_rows`' rows) and more kept than dropped atoms take the complement instead:
    all pairs, minus each dropped atom's row, plus the pairs of two dropped atoms (counted
    twice): k kept atoms of N cost ~(N - k)² pair spreads, not ~k². Weights are multiples
    of 2**-HIST_BITS, so both ways give the same bits.
    """
    nc, n_atoms = keep.shape
    nk, nd = hist.shape[1], hist.shape[2]
    count = np.zeros(nc, np.int64)
    atoms = np.empty(n_atoms, np.int64)
    plist = np.empty(pd.size, np.int64)
    for c in range(nc):
        z, lo, hi = zref[c], rlo[c], rhi[c]
        m = _atoms_where(keep[c], True, atoms)
        if shared[c] and _complement_gain(m, n_atoms, nk * nd // COMPLEMENT_ROW) > 0:
            m = _atoms_where(keep[c], False, atoms)
            count[c] = row_counts[n_atoms]
            for t in range(nk):
                hist[c, t] = rows[n_atoms, t]
            for a in range(m):
                count[c] -= row_counts[atoms[a]]
                for t in range(nk):
                    h = hist[c, t]
                    r = rows[atoms[a], t]
                    for i in range(nd):
                        h[i] -= r[i]
        npair = _window_pairs(atoms, m, pair_index, pd, z, lo, hi, plist)
        count[c] += npair
        for k in range(npair):
            p = plist[k]
            _spread(hist[c, pkind[p]], pm0[p], pw[p])
    return count


NONE, TABLES, HISTOGRAMS = 0, 1, 2  # what `_shift_windows` updates


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _shift_windows(keep, cand, by_d, pi, pj, pkind, pd, pm0, pw, z0, lo0, hi0, z1, lo1, hi1, kernel,
                   tables, hist, count, update):
    """Move candidate cand[n]'s pair window from (z0, lo0, hi0)[n] to (z1, lo1, hi1)[n].

    Only pairs whose distance lies between an edge's old and new position can enter or leave;
    by_d lists the pairs by increasing distance, so just those bands are visited. With `update`
    TABLES, tables[c] changes in place by the kernel rows of those pairs; with HISTOGRAMS, hist[c]
    by their weights (exactly, see HIST_BITS); either way count[c] follows. Returns which candidates changed.
    """
    ncol = kernel.shape[1]
    ntap = pw.shape[1]
    dsorted = pd[by_d]
    changed = np.zeros(cand.size, np.bool_)
    for n in range(cand.size):
        c = cand[n]
        for edge in range(2):
            e0 = (lo0[n] if edge == 0 else hi0[n]) / z0[n]
            e1 = (lo1[n] if edge == 0 else hi1[n]) / z1[n]
            a = min(e0, e1) * (1.0 - 1e-12) - 1e-12
            b = max(e0, e1) * (1.0 + 1e-12) + 1e-12
            first = np.searchsorted(dsorted, a)
            last = np.searchsorted(dsorted, b, side="right")
            for s in range(first, last):
                p = by_d[s]
                if not (keep[c, pi[p]] and keep[c, pj[p]]):
                    continue
                was = _in_window(pd[p], z0[n], lo0[n], hi0[n])
                now = _in_window(pd[p], z1[n], lo1[n], hi1[n])
                if was == now:
                    continue
                changed[n] = True
                if update == NONE:
                    continue
                count[c] += 1 if now else -1
                if update == HISTOGRAMS:
                    h = hist[c, pkind[p]]
                    for i in range(ntap):
                        h[pm0[p] + i] += pw[p, i] if now else -pw[p, i]
                    continue
                tab = tables[c, pkind[p]]
                for i in range(ntap):
                    # in the tables' float32 (float64 would convert every entry twice: 2x slower)
                    wgt = np.float32(pw[p, i] if now else -pw[p, i])
                    krow = kernel[pm0[p] + i]
                    for col in range(ncol):
                        tab[col] += wgt * krow[col]
    return changed


@numba.njit(cache=True, nogil=True)
def _pair_lists(keep, cand, pair_index, pd, pid, ud, ukind, n_kinds, z, lo, hi):
    """Distinct distances of the kept pairs inside each candidate's window, grouped by kind.

    Pairs of equal (kind, distance) (pid: their distinct index) are summed once with their
    multiplicity; a crystal cut has few distinct distances. Returns (starts (n, n_kinds+1),
    distance, multiplicity).
    """
    kept = np.empty(keep.shape[1], np.int64)
    plist = np.empty(pd.size, np.int64)
    mult = np.zeros(ud.size, np.int64)
    touched = np.empty(ud.size, np.int64)
    starts = np.empty((cand.size, n_kinds + 1), np.int64)
    d_out = np.empty(0)
    m_out = np.empty(0)
    pos = 0
    for n in range(cand.size):
        nt = 0
        m = _atoms_where(keep[cand[n]], True, kept)
        for k in range(_window_pairs(kept, m, pair_index, pd, z[n], lo[n], hi[n], plist)):
            u = pid[plist[k]]
            if mult[u] == 0:
                touched[nt] = u
                nt += 1
            mult[u] += 1
        if pos + nt > d_out.size:  # grow the outputs geometrically
            size = max(2 * d_out.size, pos + nt, 1024)
            d_new = np.empty(size)
            m_new = np.empty(size)
            d_new[:pos] = d_out[:pos]
            m_new[:pos] = m_out[:pos]
            d_out, m_out = d_new, m_new
        for t in range(n_kinds):
            starts[n, t] = pos
            for i in range(nt):
                u = touched[i]
                if ukind[u] == t:
                    d_out[pos] = ud[u]
                    m_out[pos] = mult[u]
                    pos += 1
        starts[n, n_kinds] = pos
        for i in range(nt):
            mult[touched[i]] = 0
    return starts, d_out[:pos], m_out[:pos]
