"""Adaptive catalogues: each row's round, and the rows of a round drawn from its stored plan.

A chunk belongs to the round whose rows it starts in (rounds are whole chunks). Its blind rows are
the rows the first-round strategy (`catalogue.adaptive.first`, any random strategy or a mix) draws
at the same positions; the others are drawn by `proposal.draw` from ``default_rng([seed, c, STREAM])``.
Both are drawn for a full chunk and then cut, so a round cut short by `catalogue.size` keeps its
rows when it grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..proposal import BLIND, SHAPE, STREAM, RoundPlan, draw
from ..settings import CatalogueSettings
from .candidates import SHAPE_SPHERE, Candidates


def plan_of_chunk(cat: CatalogueSettings, c: int, plans: tuple[RoundPlan, ...]) -> RoundPlan:
    """The plan of the round chunk c belongs to (round 0, all blind, when none is recorded yet)."""
    start = c * cat.chunk_size
    return next((p for p in plans if p.start <= start < p.stop),
                None) or RoundPlan(0, 0, min(cat.size, cat.adaptive.round_size))


def draw_adaptive(cat: CatalogueSettings, positions: np.ndarray, c: int, plans: tuple[RoundPlan, ...],
                  blind_draw: Callable[[CatalogueSettings, np.ndarray, int], Candidates]
                  ) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """Chunk c's candidates, round and origin; `blind_draw` draws a chunk of the first-round strategy."""
    plan = plan_of_chunk(cat, c, plans)
    start = c * cat.chunk_size
    rows = min(start + cat.chunk_size, plan.stop) - start
    first = replace(cat, strategy=cat.adaptive.first, size=start + cat.chunk_size)
    blind = blind_draw(first, positions, c)
    masks, origin, centre, radius = draw(plan, blind.masks, np.random.default_rng([cat.seed, c, STREAM]), positions)
    out = Candidates(masks, blind.centre.copy(), blind.axes.copy(), blind.shape.copy())
    guided = np.flatnonzero((origin != BLIND) & (origin != SHAPE))
    out.put(guided, Candidates.masks_only(masks))  # model rows and mutations: no shape cut made them
    out.put(np.flatnonzero(origin == SHAPE), Candidates(masks, centre, np.repeat(radius[:, None], 3, axis=1),
                                                        np.full(len(masks), SHAPE_SPHERE, dtype=np.int8)))
    return out.take(slice(0, rows)), np.full(rows, plan.round, dtype=np.int16), origin[:rows]
