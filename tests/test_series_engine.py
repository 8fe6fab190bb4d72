"""The batched engine on a series of frames: shared tables, sequential starts, continuation."""

from __future__ import annotations

import numpy as np

from bench_engine import motex_masks  # scripts/ is on sys.path (tests/conftest.py)

from motex_dask.fit import Status, make_engine
from motex_dask.pdf import pdf_from_atoms
from motex_dask.settings import FitSettings

SETTINGS = FitSettings()
RNG = np.random.default_rng(13)
# a 20-atom cluster; frame f's truth keeps the first 12 + f atoms, a little expanded and hotter
POSITIONS = RNG.normal(0.0, 2.2, size=(20, 3))
SYMBOLS = np.array(["Au"] * 12 + ["Pt"] * 8)
N_FRAMES = 4


def _frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth = np.zeros((N_FRAMES, len(SYMBOLS)), bool)
    frames = []
    for f in range(N_FRAMES):
        truth[f, :12 + 2 * f] = True
        r, g = pdf_from_atoms(SYMBOLS[truth[f]], POSITIONS[truth[f]], qmin=SETTINGS.qmin, qmax=SETTINGS.qmax,
                              qdamp=SETTINGS.qdamp, qbroad=SETTINGS.qbroad, rmin=SETTINGS.rmin,
                              rmax=SETTINGS.rmax, rstep=0.01, uiso=0.005 + 0.0005 * f, zoom=1.0 + 0.002 * f)
        frames.append(0.8 * g)
    return r, np.array(frames), truth


def test_series_frames_match_single_fits_and_continue_exactly() -> None:
    r, frames, truth = _frames()
    keep = np.vstack([motex_masks(len(SYMBOLS), 150, seed=3), truth])
    series = make_engine(SYMBOLS, POSITIONS, r, frames, SETTINGS)
    res = series.fit(keep)
    assert res.rwp.shape == (keep.shape[0], N_FRAMES)
    # frame 0 starts where a one-frame fit starts: the same numbers, bit for bit
    single = make_engine(SYMBOLS, POSITIONS, r, frames[0], SETTINGS).fit(keep)
    for name in ("rwp", "scale", "zoom", "uiso"):
        np.testing.assert_array_equal(res[name][:, 0], single[name])
    np.testing.assert_array_equal(res.status[:, 0], single.status)
    # each frame's true motif fits its own frame (noise-free: zoom and Uiso recovered)
    for f in range(N_FRAMES):
        row = keep.shape[0] - N_FRAMES + f
        assert res.status[row, f] == Status.OK
        assert res.rwp[row, f] < 5e-3
        np.testing.assert_allclose(res["zoom"][row, f], 1.0 + 0.002 * f, rtol=2e-4)
        np.testing.assert_allclose(res["uiso"][row, f], 0.005 + 0.0005 * f, rtol=5e-2)
    # continuing from any stored frame k - 1 (a series that grew) gives frames k.. exactly as in one
    # run, which carried tables and evaluations from frame to frame
    for k in range(1, N_FRAMES):
        start = np.column_stack([res["zoom"][:, k - 1], res["uiso"][:, k - 1]])
        rest = make_engine(SYMBOLS, POSITIONS, r, frames[k:], SETTINGS).fit(keep, start=start)
        for name in ("rwp", "scale", "zoom", "uiso"):
            np.testing.assert_array_equal(rest[name], res[name][:, k:])
        np.testing.assert_array_equal(rest.status, res.status[:, k:])
