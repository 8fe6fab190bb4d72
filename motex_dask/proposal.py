"""Model-guided rounds of an adaptive catalogue: what the next round draws, from what is known.

A round's plan is a pure function of the settings, the round number and the previous results (the
atoms' motif probabilities from the explanation and the lowest-R_wp candidates so far), and it is
kept in the store before the round is fitted. Each row of a round is then one of:

* blind: the row the first-round strategy draws at that position (so nothing is ever excluded);
* model: each atom kept with its keep probability (cross-entropy method: the probability moves
  towards the atoms' motif probability and their frequency among the best candidates, smoothed with
  the previous round's, and clipped away from 0 and 1);
* mutation: one of the best candidates with a few atoms flipped (at least one): any atoms
  (`mutate: anywhere`), or only atoms on its boundary (`mutate: boundary`: a kept atom with a
  removed neighbour, or a removed atom with a kept neighbour), so a compact candidate stays compact;
* shape: a sphere cut around one of the best candidates (`shape_share`): centred on its kept atoms'
  centroid moved by up to one nearest-neighbour distance, radius its equivalent radius (the uniform
  ball with the same mean square distance from the centroid) times a factor in [0.9, 1.1], each
  atom inside then kept with probability SHAPE_KEEP. The thinning is what lets the model rank the
  motif's inner atoms: a cut that always keeps them says nothing about any one of them (measured on
  the au_aggregate demo without it: the atoms within 6 Å of the grain's centre had contributions
  ≈ 0, only its outer shell was ranked as motif).

The last two are for compact motifs in large models: a per-atom draw or an anywhere-flip in a
particle of hundreds of atoms scatters single atoms far from the motif, which fit badly and teach
the model little about the atoms on the motif's boundary, where its ranking is decided.
The elite's centres and radii are kept in the plan (they are a function of its masks and the
model's positions), so the ledger says where the shape rows were cut.

Rows regenerate from (seed, chunk) and the stored plan, like every other chunk. Each stream is drawn
for every row; the streams of shape rows and boundary mutations come after the older ones, so a
plan without them draws exactly the rows it drew before they existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from .structure import nearest_neighbour_distance

BLIND, MODEL, MUTATION, SHAPE = 0, 1, 2, 3
ORIGINS = ("blind", "model", "mutation", "shape")
#: The rng stream of the adaptive draws, apart from the blind strategy's own stream of a chunk.
STREAM = 7
#: Share of the keep probabilities replaced by the new target each round (cross-entropy smoothing),
#: and their distance from 0 and 1 (no atom's probability collapses for good).
SMOOTHING = 0.7
FLOOR = 0.02
#: Mean atoms flipped per mutation.
FLIPS = 2.0
#: Neighbours (for boundary mutations): atoms closer than this many nearest-neighbour distances
#: (fcc: the 12 nearest, not the 6 second-nearest at √2).
NEIGHBOUR_CUTOFF = 1.2
#: Shape rows: the centre moves by up to this many nearest-neighbour distances, the radius by this factor.
SHAPE_SHIFT = 1.0
SHAPE_SCALE = (0.9, 1.1)
SHAPE_KEEP = 0.8


@dataclass(frozen=True)
class RoundPlan:
    """How round `round` (candidate rows [start, stop)) is drawn."""

    round: int
    start: int
    stop: int
    blind_share: float = 1.0
    mutation_share: float = 0.0
    keep: tuple[float, ...] = ()              # per-atom keep probability of model draws
    elites: tuple[tuple[int, ...], ...] = ()  # kept atoms (permuted-atom order) of the candidates to mutate
    flips: float = FLIPS                      # mean atoms flipped per mutation
    mutate: str = "anywhere"                  # which atoms a mutation flips: anywhere | boundary
    shape_share: float = 0.0
    centres: tuple[tuple[float, float, float], ...] = ()  # the elites' centroids (Å) ...
    radii: tuple[float, ...] = ()                          # ... and equivalent radii: the shape rows' cuts
    shape_keep: float = 1.0                                # each atom inside a shape row's cut kept with this

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "start": self.start, "stop": self.stop, "blind_share": self.blind_share,
                "mutation_share": self.mutation_share, "keep": list(self.keep),
                "elites": [list(e) for e in self.elites], "flips": self.flips, "mutate": self.mutate,
                "shape_share": self.shape_share, "centres": [list(c) for c in self.centres],
                "radii": list(self.radii), "shape_keep": self.shape_keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RoundPlan":
        # ledgers written before shape rows and boundary mutations have none of their keys
        return cls(round=int(d["round"]), start=int(d["start"]), stop=int(d["stop"]),
                   blind_share=float(d["blind_share"]), mutation_share=float(d["mutation_share"]),
                   keep=tuple(float(p) for p in d["keep"]), elites=tuple(tuple(int(i) for i in e) for e in d["elites"]),
                   flips=float(d["flips"]), mutate=str(d.get("mutate", "anywhere")),
                   shape_share=float(d.get("shape_share", 0.0)),
                   centres=tuple(tuple(float(x) for x in c) for c in d.get("centres", ())),  # type: ignore[misc]
                   radii=tuple(float(r) for r in d.get("radii", ())), shape_keep=float(d.get("shape_keep", 1.0)))


def next_keep(p_motif: np.ndarray, elite_masks: np.ndarray, previous: np.ndarray | None,
              smoothing: float, floor: float, combine: str = "mean") -> np.ndarray:
    """Keep probabilities of the next round's model draws (cross-entropy update).

    The target combines each atom's motif probability (NaN, undefined: 0.5) with its frequency among
    the best candidates: `mean`, their mean; `product`, their odds multiplied (log-odds add, the
    frequency Laplace-smoothed so neither opinion is certain), so a motif probability of 0.5 (an atom
    the model does not use: most atoms far from a compact motif in a large model) leaves the elite
    frequency as it is instead of pulling the atom towards 0.5. The target replaces `smoothing` of
    the previous probabilities.
    """
    target = np.nan_to_num(np.asarray(p_motif, dtype=np.float64), nan=0.5)
    if len(elite_masks):
        elite = np.asarray(elite_masks, dtype=np.float64)
        if combine == "product":
            freq = (elite.sum(axis=0) + 1.0) / (len(elite) + 2.0)
            p = np.clip(target, floor, 1.0 - floor)
            odds = p / (1.0 - p) * freq / (1.0 - freq)
            target = odds / (1.0 + odds)
        else:
            target = 0.5 * (target + elite.mean(axis=0))
    keep = target if previous is None else smoothing * target + (1.0 - smoothing) * np.asarray(previous)
    return np.clip(keep, floor, 1.0 - floor)


def elite_spheres(elite_masks: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (k, 3) and equivalent radius (k,) of each mask's kept atoms: the radius of the
    uniform ball with the same mean square distance from the centroid (<r²> = 3/5 R²)."""
    masks = np.asarray(elite_masks, dtype=bool)
    count = np.maximum(masks.sum(axis=1), 1)[:, None]
    centres = masks.astype(np.float64) @ positions / count
    msd = np.array([((positions[m] - c) ** 2).sum(axis=1).mean() if m.any() else 0.0
                    for m, c in zip(masks, centres)])
    return centres, np.sqrt(5.0 / 3.0 * msd)


def plan_round(settings: Any, round_: int, start: int, stop: int, p_motif: np.ndarray | None,
               elite_masks: np.ndarray, previous: RoundPlan | None,
               positions: np.ndarray | None = None) -> RoundPlan:
    """The plan of round `round_` (rows [start, stop)); round 0, or no results yet: all blind.

    `settings` is the campaign's `AdaptiveSettings`; `elite_masks` the masks of the lowest-R_wp
    candidates so far, best first; `positions` the (n_perm, 3) permuted atoms (for shape rows).
    """
    if round_ == 0 or p_motif is None:
        return RoundPlan(round_, start, stop)
    prev_keep = np.asarray(previous.keep) if previous is not None and previous.keep else None
    keep = next_keep(p_motif, elite_masks, prev_keep, SMOOTHING, FLOOR, settings.combine)
    elites = tuple(tuple(np.flatnonzero(m).tolist()) for m in elite_masks)
    shape_share = settings.shape_share if elites else 0.0
    centres, radii = elite_spheres(elite_masks, np.asarray(positions, dtype=np.float64)) if shape_share \
        else (np.zeros((0, 3)), np.zeros(0))
    return RoundPlan(round_, start, stop, blind_share=settings.blind_share,
                     mutation_share=settings.mutation_share if elites else 0.0,
                     keep=tuple(float(p) for p in keep), elites=elites, flips=FLIPS, mutate=settings.mutate,
                     shape_share=shape_share, centres=tuple(tuple(float(x) for x in c) for c in centres),
                     radii=tuple(float(r) for r in radii), shape_keep=SHAPE_KEEP if shape_share else 1.0)


def neighbours(positions: np.ndarray, nn: float | None = None) -> csr_matrix:
    """(n, n) adjacency of atoms closer than NEIGHBOUR_CUTOFF nearest-neighbour distances (nn: that
    distance, when the caller has it)."""
    n = len(positions)
    nn = nearest_neighbour_distance(positions) if nn is None else nn
    pairs = cKDTree(positions).query_pairs(NEIGHBOUR_CUTOFF * nn,
                                           output_type="ndarray") if n > 1 else np.zeros((0, 2), dtype=np.int64)
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    return csr_matrix((np.ones(len(i), dtype=np.int32), (i, j)), shape=(n, n))


def boundary(masks: np.ndarray, adjacency: csr_matrix) -> np.ndarray:
    """Atoms on each mask's boundary: kept with a removed neighbour, or removed with a kept one."""
    kept = np.asarray(masks, dtype=bool)
    has_kept = (adjacency @ kept.T.astype(np.int32)).T > 0
    has_removed = (adjacency @ (~kept).T.astype(np.int32)).T > 0
    return (kept & has_removed) | (~kept & has_kept)


def draw(plan: RoundPlan, blind: np.ndarray, rng: np.random.Generator, positions: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Masks, origins, and sphere centres (rows, 3) and radii (rows,) of rows drawn under `plan`
    (centre and radius only meaningful for shape rows); `blind` holds the first-round strategy's rows
    at the same positions (kept where a row is blind), `positions` the (n, 3) permuted atoms. Every
    stream is drawn for every row, so a row's draw does not depend on the others."""
    rows, n = blind.shape
    u = rng.random(rows)
    model = rng.random((rows, n)) < (np.asarray(plan.keep) if plan.keep else 0.5)
    pick = rng.integers(0, max(len(plan.elites), 1), size=rows)
    flip = rng.random((rows, n)) < plan.flips / n
    forced = rng.integers(0, n, size=rows)  # the atom flipped when the draw flips none
    fallback = rng.integers(0, n, size=rows)  # the atom kept when a draw keeps none
    origin = np.full(rows, BLIND, dtype=np.int8)
    origin[u >= plan.blind_share] = MODEL
    origin[u >= 1.0 - plan.mutation_share - plan.shape_share] = SHAPE
    origin[u >= 1.0 - plan.mutation_share] = MUTATION
    masks = blind.copy()
    masks[origin == MODEL] = model[origin == MODEL]
    centre, radius = np.zeros((rows, 3)), np.zeros(rows)
    if plan.shape_share or plan.mutate != "anywhere":  # the newer streams (see the module docstring)
        nn = nearest_neighbour_distance(positions)
        spick = rng.integers(0, max(len(plan.centres), 1), size=rows)
        direction = rng.normal(size=(rows, 3))
        reach = rng.random(rows) ** (1 / 3)
        scale = rng.uniform(*SHAPE_SCALE, size=rows)
        bflip = rng.random((rows, n))
        bforced = rng.random(rows)
        thin = rng.random((rows, n)) < plan.shape_keep
    if plan.elites:
        elite = np.zeros((len(plan.elites), n), dtype=bool)
        for k, atoms in enumerate(plan.elites):
            elite[k, list(atoms)] = True
        mut = origin == MUTATION
        if plan.mutate == "boundary":
            edge = boundary(elite, neighbours(positions, nn))[pick]
            edge[~edge.any(axis=1)] = True  # an elite without a boundary (every atom kept): any atom
            count = edge.sum(axis=1)
            flip = edge & (bflip < (plan.flips / count)[:, None])
            nth = np.minimum((bforced * count).astype(np.int64), count - 1)  # the nth boundary atom
            forced = np.argmax(np.cumsum(edge, axis=1) > nth[:, None], axis=1)
        flip[np.arange(rows), forced] |= ~flip.any(axis=1)
        masks[mut] = elite[pick[mut]] ^ flip[mut]
    cut = np.flatnonzero(origin == SHAPE)
    if len(cut):
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        shift = SHAPE_SHIFT * nn * reach
        centre[cut] = np.asarray(plan.centres)[spick[cut]] + direction[cut] * shift[cut, None]
        radius[cut] = np.asarray(plan.radii)[spick[cut]] * scale[cut]
        inside = ((positions[None, :, :] - centre[cut, None, :]) ** 2).sum(axis=2) <= radius[cut, None] ** 2
        masks[cut] = inside & thin[cut]
    empty = ~masks.any(axis=1)
    masks[np.flatnonzero(empty), fallback[empty]] = True
    return masks, origin, centre, radius
