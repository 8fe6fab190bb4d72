"""Step 1: masks are reproducible per chunk, follow their strategy, and duplicates are exact."""

import re
from dataclasses import replace

import numpy as np
import pytest

from motex_dask.catalogue import (SHAPE_ELLIPSOID, SHAPE_FILL, SHAPE_NONE, SHAPE_SPHERE, catalogue_size,
                                  check_catalogue, chunk_bounds, chunk_candidates, chunk_masks, mask_keys,
                                  n_chunks)
from motex_dask.settings import CatalogueSettings, CataloguePart, SettingError
from motex_dask.errors import InputError


def _atoms(n: int) -> np.ndarray:
    """Positions of n permuted atoms on a line (uniform-size, bernoulli and exhaustive ignore them)."""
    return np.arange(3 * n, dtype=float).reshape(n, 3)


def test_chunks_are_bit_identical_and_independent_of_order():
    cat = CatalogueSettings(size=1000, chunk_size=300, seed=5)
    forward = [chunk_masks(cat, _atoms(40), c) for c in range(n_chunks(1000, 300))]
    backward = [chunk_masks(cat, _atoms(40), c) for c in reversed(range(n_chunks(1000, 300)))][::-1]
    for a, b in zip(forward, backward):
        assert np.array_equal(a, b)
    assert [len(m) for m in forward] == [300, 300, 300, 100]
    assert not np.array_equal(forward[0], forward[1])


def test_raising_the_size_keeps_every_existing_row():
    small = CatalogueSettings(size=450, chunk_size=200, seed=1)
    large = CatalogueSettings(size=900, chunk_size=200, seed=1)
    old = np.concatenate([chunk_masks(small, _atoms(30), c) for c in range(n_chunks(450, 200))])
    new = np.concatenate([chunk_masks(large, _atoms(30), c) for c in range(n_chunks(900, 200))])
    assert np.array_equal(new[:450], old)


def test_uniform_size_draws_every_size_from_one_to_n():
    cat = CatalogueSettings(size=20000, chunk_size=20000, seed=3)
    masks = chunk_masks(cat, _atoms(10), 0)
    sizes = masks.sum(axis=1)
    assert sizes.min() == 1 and sizes.max() == 10
    counts = np.bincount(sizes, minlength=11)[1:]
    assert np.all(np.abs(counts - 2000) < 200)  # uniform over 1..10 (±4.5 sigma)
    # every atom is equally likely to be kept (no positional bias in the random permutation)
    assert np.all(np.abs(masks.mean(axis=0) - 0.55) < 0.03)


def test_bernoulli_has_no_empty_mask():
    cat = CatalogueSettings(size=5000, chunk_size=1000, seed=0, strategy="bernoulli", keep_probability=0.1)
    masks = np.concatenate([chunk_masks(cat, _atoms(6), c) for c in range(5)])
    assert masks.any(axis=1).all()
    expected = 0.1 + 0.9**6 / 6  # empty draws get exactly one atom
    assert abs(masks.mean() - expected) < 0.01


def test_exhaustive_lists_every_non_empty_mask_once():
    cat = CatalogueSettings(size=10**6, chunk_size=7, strategy="exhaustive")
    size = catalogue_size(cat, 5)
    assert size == 31
    masks = np.concatenate([chunk_masks(cat, _atoms(5), c) for c in range(n_chunks(size, 7))])
    assert masks.shape == (31, 5)
    assert len(np.unique(mask_keys(masks))) == 31 and masks.any(axis=1).all()


def test_exhaustive_refuses_large_models():
    with pytest.raises(InputError, match="catalogue.strategy"):
        check_catalogue(CatalogueSettings(strategy="exhaustive"), 30, "c.yaml")


def test_chunk_bounds():
    assert chunk_bounds(0, 10, 4) == (0, 4)
    assert chunk_bounds(2, 10, 4) == (8, 10)


# ------------------------------------------------------------------------------ cookie-cutter, mixed

def _fcc(n_cells: int = 4, a: float = 4.0) -> np.ndarray:
    """Sites of an fcc block (n_cells³ cubic cells), as positions of permuted atoms."""
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    return ((grid + cell[None]) * a).reshape(-1, 3)


COOKIE = CatalogueSettings(size=900, chunk_size=400, seed=3, strategy="cookie-cutter", radius=(3.0, 6.0))


@pytest.mark.parametrize("cat", [
    COOKIE,
    replace(COOKIE, shape="ellipsoid", keep_probability=0.7, centre="bounding-sphere"),
    replace(COOKIE, strategy="mixed", parts=(CataloguePart("cookie-cutter", 0.3, radius=(3.0, 5.0)),
                                             CataloguePart("uniform-size", 0.7))),
], ids=["sphere", "thinned-ellipsoid", "mixed"])
def test_shape_chunks_are_bit_identical_and_extension_keeps_rows(cat):
    pos = _fcc()
    chunks = [chunk_candidates(cat, pos, c) for c in range(3)]
    again = [chunk_candidates(cat, pos, c) for c in (2, 1, 0)][::-1]
    for a, b in zip(chunks, again):
        for name in ("masks", "centre", "axes", "shape"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    bigger = replace(cat, size=1300)
    assert np.array_equal(chunk_candidates(bigger, pos, 2).masks[:100], chunks[2].masks)
    assert not np.array_equal(chunks[0].masks[:100], chunks[1].masks[:100])
    assert np.all(np.isfinite(np.concatenate([c.centre for c in chunks])))
    assert all(c.masks.any(axis=1).all() for c in chunks)  # no empty candidate


def test_sphere_masks_are_exactly_the_atoms_inside_the_recorded_sphere():
    pos = _fcc()
    drawn = chunk_candidates(COOKIE, pos, 0)
    assert (drawn.shape == SHAPE_SPHERE).all()
    radius = drawn.axes[:, 0]
    assert np.array_equal(drawn.axes, np.repeat(radius[:, None], 3, axis=1))
    assert radius.min() >= 3.0 and radius.max() <= 6.0
    inside = np.linalg.norm(pos[None] - drawn.centre[:, None], axis=2) <= radius[:, None]
    has_atom = inside.any(axis=1)
    assert np.array_equal(drawn.masks[has_atom], inside[has_atom])
    # centres lie near atoms: within half the nearest-neighbour distance (4/√2/2 Å) of one
    nearest = np.linalg.norm(pos[None] - drawn.centre[:, None], axis=2).min(axis=1)
    assert nearest.max() <= 4 / np.sqrt(2) / 2 + 1e-9


def test_ellipsoids_and_thinning():
    pos = _fcc()
    cat = replace(COOKIE, size=2000, chunk_size=2000, shape="ellipsoid")
    full = chunk_candidates(cat, pos, 0)
    assert (full.shape == SHAPE_ELLIPSOID).all()
    dist = np.linalg.norm(pos[None] - full.centre[:, None], axis=2)
    # inside the ball of the shortest semi-axis ⊂ the ellipsoid ⊂ the ball of the longest one
    assert not (full.masks & (dist > full.axes.max(axis=1)[:, None])).any()
    assert not (~full.masks & (dist <= full.axes.min(axis=1)[:, None] - 1e-9)).any()
    assert (full.axes.max(axis=1) - full.axes.min(axis=1) > 0.5).mean() > 0.5  # really elongated
    thinned = chunk_candidates(replace(cat, keep_probability=0.6), pos, 0)
    assert np.array_equal(thinned.centre, full.centre)  # same cuts, then thinned
    big = full.masks.sum(axis=1) >= 20
    share = thinned.masks[big].sum() / full.masks[big].sum()
    assert abs(share - 0.6) < 0.02 and not (thinned.masks & ~full.masks).any()


def test_mixed_parts_keep_their_shares_in_any_prefix_and_flag_shapes():
    pos = _fcc()
    cat = CatalogueSettings(size=5000, chunk_size=700, seed=1, strategy="mixed",
                            parts=(CataloguePart("cookie-cutter", 0.25), CataloguePart("bernoulli", 0.75)))
    drawn = [chunk_candidates(cat, pos, c) for c in range(n_chunks(5000, 700))]
    kind = np.concatenate([d.shape for d in drawn])
    for prefix in (100, 1000, 5000):  # a low-discrepancy sequence: off by a few rows at most, at any length
        assert abs((kind[:prefix] == SHAPE_SPHERE).sum() - 0.25 * prefix) <= 3
    plain = np.concatenate([d.shape == SHAPE_NONE for d in drawn])
    centre = np.concatenate([d.centre for d in drawn])
    axes = np.concatenate([d.axes for d in drawn])
    assert (centre[plain] == SHAPE_FILL).all() and (axes[plain] == SHAPE_FILL).all()
    assert (axes[~plain] > 0).all()


@pytest.mark.parametrize("kwargs, field, text", [
    ({"strategy": "uniform-size", "parts": (CataloguePart("uniform-size", 1.0),)}, "parts", "only with strategy: mixed"),
    ({"strategy": "mixed"}, "parts", "needs a list of parts"),
    ({"strategy": "mixed", "parts": (CataloguePart("uniform-size", 0.5), CataloguePart("bernoulli", 0.4))},
     "parts", "add up to 1"),
    ({"strategy": "cookie-cutter", "radius": (5.0, 4.0)}, "radius", "0 < min <= max"),
    ({"strategy": "cookie-cutter", "shape": "cube"}, "shape", "sphere, ellipsoid"),
    ({"strategy": "bernoulli", "keep_probability": 1.0}, "keep_probability", "(0, 1)"),
])
def test_catalogue_settings_name_the_bad_field(kwargs, field, text):
    with pytest.raises(SettingError, match=re.escape(text)) as err:
        CatalogueSettings(**kwargs)
    assert err.value.field_name == field
    with pytest.raises(SettingError, match="exhaustive and mixed cannot be a part"):
        CataloguePart("exhaustive", 1.0)
    assert CatalogueSettings(strategy="cookie-cutter", keep_probability=1.0).effective_keep_probability == 1.0
    assert CatalogueSettings(strategy="bernoulli").effective_keep_probability == 0.5
