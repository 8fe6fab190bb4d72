"""Exact duplicates in the catalogue, found on the cluster by a hash-partitioned reduction.

A row is a duplicate when its mask equals an earlier row's. Gathering one key per candidate to
the client costs O(catalogue) client memory (about 17 GB at 10^9 candidates); here nothing of
that size leaves the workers, so the client's memory stays flat (docs/scale_model.md):

1. ``keys-G``: the masks of group G (consecutive chunks, GROUP_ROWS rows or more) regenerated
   from (seed, chunk); their keys and row numbers split into P partitions by a hash of the key;
2. ``part-G-P``: partition P of group G (a getitem, so that each reduce task fetches its part only);
3. ``reduce-P``: among the keys of partition P from every group, the first row of each key: the
   (row, first row) pairs of its duplicates, split again by group;
4. ``back-P-G`` (getitem) and ``dups-G``: group G's duplicates from every partition, sorted by
   row. The fit task of a chunk takes its group's ``dups-G`` and picks its own rows.

Every task has an explicit key; the client keeps only the ``dups-G`` futures, and the scheduler
can recompute any of them from (seed, chunk) if the workers holding it leave.
"""

from __future__ import annotations

import math
import operator
import uuid
from dataclasses import dataclass

import numpy as np
from distributed import Client, Future

from .catalogue import catalogue_size, chunk_bounds, chunk_masks, mask_keys
from .proposal import RoundPlan
from .settings import CatalogueSettings

#: Rows per group task (keys and row numbers: ~16 MB for masks of up to 64 atoms)...
GROUP_ROWS = 2**20
#: ...or more, so that there are at most this many groups.
MAX_GROUPS = 32
#: Rows per partition: the reduce task sorts this many keys...
PARTITION_ROWS = 2**22
#: ...or more, for at most this many partitions. The task count (2 x groups x partitions getitems
#: dominate) is then bounded whatever the catalogue's size, and so is the scheduler's memory in the
#: client's process (~8 KB per task): tasks grow instead (10^9 rows: ~31 M per group, ~62 M per
#: partition, a few GB of worker memory each).
MAX_PARTITIONS = 16

_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)

Pairs = tuple[np.ndarray, np.ndarray]  # (rows, first rows), int64, sorted by row


def key_hash(keys: np.ndarray) -> np.ndarray:
    """FNV-1a over the bytes of each key, vectorised over the rows (a loop over the key's bytes:
    a few per atom / 8, unlike a per-row Python hash)."""
    raw = keys.view(np.uint8).reshape(len(keys), -1)
    h = np.full(len(keys), _FNV_OFFSET, dtype=np.uint64)
    for column in raw.T:
        h ^= column
        h *= _FNV_PRIME
    return h


def group_keys(chunks: range, cat: CatalogueSettings, positions: np.ndarray,
               parts: int, plans: tuple[RoundPlan, ...] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Keys and row numbers of a group of chunks, split into `parts` by hash (rows ascending);
    `positions`: the permuted atoms' (what the catalogue draws from); `plans`: adaptive rounds."""
    keys = np.concatenate([mask_keys(chunk_masks(cat, positions, c, plans)) for c in chunks])
    start = chunk_bounds(chunks[0], catalogue_size(cat, len(positions)), cat.chunk_size)[0]
    rows = np.arange(start, start + len(keys), dtype=np.int64)
    part = key_hash(keys) % np.uint64(parts)
    order = np.argsort(part, kind="stable")  # stable: rows stay ascending within each part
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    keys, rows = keys[order], rows[order]
    return [(keys[a:b], rows[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def reduce_partition(group_rows: int, n_groups: int, *parts: tuple[np.ndarray, np.ndarray]) -> list[Pairs]:
    """(row, first row) of every duplicate among the given parts (in group order), split by group."""
    keys = np.concatenate([k for k, _ in parts])
    rows = np.concatenate([r for _, r in parts])  # ascending: groups in order, rows in order within
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    firsts = rows[first[inverse.ravel()]]
    dup = np.flatnonzero(firsts != rows)
    rows, firsts = rows[dup], firsts[dup]
    bounds = np.searchsorted(rows, np.arange(n_groups + 1, dtype=np.int64) * group_rows)
    return [(rows[a:b], firsts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def merge_pairs(*pairs: Pairs) -> Pairs:
    """One group's duplicates from every partition, sorted by row."""
    rows = np.concatenate([r for r, _ in pairs])
    firsts = np.concatenate([f for _, f in pairs])
    order = np.argsort(rows, kind="stable")
    return rows[order], firsts[order]


def chunk_duplicates(pairs: Pairs, start: int, stop: int) -> Pairs:
    """The duplicates among rows [start, stop): (rows within the chunk, first rows)."""
    rows, firsts = pairs
    a, b = np.searchsorted(rows, [start, stop])
    return rows[a:b] - start, firsts[a:b]


@dataclass(frozen=True)
class Duplicates:
    """Futures of each group's duplicate pairs, on the cluster."""

    groups: dict[int, Future]
    chunks_per_group: int

    def of_chunk(self, c: int) -> Future:
        """The future a fit task of chunk c takes (its group's pairs)."""
        return self.groups[c // self.chunks_per_group]


def plan(cat: CatalogueSettings, n_perm: int, stop_chunk: int) -> tuple[int, int, int]:
    """(chunks per group, groups, partitions) of the reduction over chunks [0, stop_chunk)."""
    per_group = max(1, GROUP_ROWS // cat.chunk_size, math.ceil(stop_chunk / MAX_GROUPS))
    rows = min(stop_chunk * cat.chunk_size, catalogue_size(cat, n_perm))
    parts = min(MAX_PARTITIONS, max(1, math.ceil(rows / PARTITION_ROWS)))
    return per_group, math.ceil(stop_chunk / per_group), parts


def find_duplicates(client: Client, cat: CatalogueSettings, positions: np.ndarray, stop_chunk: int,
                    plans: tuple[RoundPlan, ...] = ()) -> Duplicates:
    """Submit the reduction for chunks [0, stop_chunk) of the catalogue over the permuted atoms at
    `positions`; returns without waiting for it."""
    per_group, n_groups, parts = plan(cat, len(positions), stop_chunk)
    run = uuid.uuid4().hex[:8]
    groups = [range(g * per_group, min((g + 1) * per_group, stop_chunk)) for g in range(n_groups)]
    keyed = [client.submit(group_keys, chunks, cat, positions, parts, plans, key=f"motex-keys-{run}-{g}")
             for g, chunks in enumerate(groups)]
    split = [[client.submit(operator.getitem, keyed[g], p, key=f"motex-part-{run}-{g}-{p}") for p in range(parts)]
             for g in range(n_groups)]
    reduced = [client.submit(reduce_partition, per_group * cat.chunk_size, n_groups,
                             *(split[g][p] for g in range(n_groups)), key=f"motex-reduce-{run}-{p}")
               for p in range(parts)]
    back = [[client.submit(operator.getitem, reduced[p], g, key=f"motex-back-{run}-{p}-{g}") for p in range(parts)]
            for g in range(n_groups)]
    merged = {g: client.submit(merge_pairs, *back[g], key=f"motex-dups-{run}-{g}") for g in range(n_groups)}
    return Duplicates(merged, per_group)
