"""Duplicate detection as a hash-partitioned reduction on the cluster, against np.unique on the
whole catalogue at once (what the client did before)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from motex_dask import duplicates
from motex_dask.catalogue import catalogue_size, chunk_bounds, chunk_masks, mask_keys, n_chunks
from motex_dask.settings import CatalogueSettings
from motex_dask.duplicates import chunk_duplicates, find_duplicates, plan, reduce_partition


def first_rows(keys: np.ndarray) -> np.ndarray:
    """For every row, the first row with the same key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def test_reduce_points_every_duplicate_to_the_earliest_identical_row():
    masks = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1], [1, 0, 1]], dtype=bool)
    keys, rows = mask_keys(masks), np.arange(6)
    # Two parts in row order, as two groups of three rows deliver them.
    (got_rows, got_first), = reduce_partition(6, 1, (keys[:3], rows[:3]), (keys[3:], rows[3:]))
    assert got_rows.tolist() == [2, 3, 5] and got_first.tolist() == [0, 1, 0]


def test_keys_are_exact_beyond_64_atoms():
    a = np.zeros((2, 130), dtype=bool)
    a[1, 129] = True  # differs only in the last bit
    (rows, _), = reduce_partition(2, 1, (mask_keys(a), np.arange(2)))
    assert rows.size == 0


@pytest.mark.parametrize("strategy,n_perm,max_groups,n_groups,max_parts",
                         [("uniform-size", 7, 256, 6, 16), ("bernoulli", 70, 256, 6, 16), ("uniform-size", 7, 4, 4, 3)])
def test_reduction_over_groups_and_partitions_equals_np_unique(dask_client, monkeypatch, strategy, n_perm,
                                                               max_groups, n_groups, max_parts):
    # Small groups and partitions: 3 chunks per group (or more, for at most max_groups groups),
    # 4 partitions (or max_parts), a short last chunk.
    monkeypatch.setattr(duplicates, "GROUP_ROWS", 900)
    monkeypatch.setattr(duplicates, "MAX_GROUPS", max_groups)
    monkeypatch.setattr(duplicates, "PARTITION_ROWS", 1500)
    monkeypatch.setattr(duplicates, "MAX_PARTITIONS", max_parts)
    cat = CatalogueSettings(size=5000, chunk_size=300, strategy=strategy, seed=3, keep_probability=0.02)
    positions = np.random.default_rng(0).uniform(-5, 5, (n_perm, 3))
    size, chunks = catalogue_size(cat, n_perm), n_chunks(cat.size, cat.chunk_size)
    first = first_rows(np.concatenate([mask_keys(chunk_masks(cat, positions, c)) for c in range(chunks)]))
    assert (first != np.arange(size)).sum() > 50  # enough duplicates to test (many, for 7 atoms)
    found = find_duplicates(dask_client, cat, positions, chunks)
    assert len(found.groups) == n_groups
    assert plan(cat, n_perm, chunks)[1:] == (n_groups, min(4, max_parts))
    for c in range(chunks):
        start, stop = chunk_bounds(c, size, cat.chunk_size)
        rows, firsts = chunk_duplicates(found.of_chunk(c).result(), start, stop)
        expected = np.flatnonzero(first[start:stop] != np.arange(start, stop))
        assert rows.tolist() == expected.tolist()
        assert firsts.tolist() == first[start + expected].tolist()


def test_task_count_is_bounded_whatever_the_catalogue_size():
    """The scheduler's memory in the client's process grows with the reduction's tasks: bounded."""
    for size in (10**6, 10**8, 10**9, 10**10):
        per_group, groups, parts = plan(CatalogueSettings(size=size, chunk_size=2000), 60, math.ceil(size / 2000))
        assert groups <= duplicates.MAX_GROUPS and parts <= duplicates.MAX_PARTITIONS
        assert per_group * 2000 * groups >= size
