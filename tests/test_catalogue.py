"""Step 1: masks are reproducible per chunk, follow their strategy, and duplicates are exact."""

import numpy as np
import pytest

from motex_dask.catalogue import (catalogue_size, check_catalogue, chunk_bounds, chunk_masks, mask_keys,
                                  n_chunks)
from motex_dask.settings import CatalogueSettings
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
