"""Model-guided rounds of an adaptive catalogue: what the next round draws, from what is known.

A round's plan is a pure function of the settings, the round number and the previous results (the
atoms' motif probabilities from the explanation and the lowest-R_wp candidates so far), and it is
kept in the store before the round is fitted. Each row of a round is then one of:

* blind: the row the first-round strategy draws at that position (so nothing is ever excluded);
* model: each atom kept with its keep probability (cross-entropy method: the probability moves
  towards the atoms' motif probability and their frequency among the best candidates, smoothed with
  the previous round's, and clipped away from 0 and 1);
* mutation: one of the best candidates with a few atoms flipped (at least one).

Rows regenerate from (seed, chunk) and the stored plan, like every other chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BLIND, MODEL, MUTATION = 0, 1, 2
ORIGINS = ("blind", "model", "mutation")
#: The rng stream of the adaptive draws, apart from the blind strategy's own stream of a chunk.
STREAM = 7
#: Share of the keep probabilities replaced by the new target each round (cross-entropy smoothing),
#: and their distance from 0 and 1 (no atom's probability collapses for good).
SMOOTHING = 0.7
FLOOR = 0.02
#: Mean atoms flipped per mutation.
FLIPS = 2.0


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

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "start": self.start, "stop": self.stop, "blind_share": self.blind_share,
                "mutation_share": self.mutation_share, "keep": list(self.keep),
                "elites": [list(e) for e in self.elites], "flips": self.flips}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RoundPlan":
        return cls(round=int(d["round"]), start=int(d["start"]), stop=int(d["stop"]),
                   blind_share=float(d["blind_share"]), mutation_share=float(d["mutation_share"]),
                   keep=tuple(float(p) for p in d["keep"]), elites=tuple(tuple(int(i) for i in e) for e in d["elites"]),
                   flips=float(d["flips"]))


def next_keep(p_motif: np.ndarray, elite_masks: np.ndarray, previous: np.ndarray | None,
              smoothing: float, floor: float) -> np.ndarray:
    """Keep probabilities of the next round's model draws (cross-entropy update).

    The target is the mean of each atom's motif probability (NaN, undefined: 0.5) and its frequency
    among the best candidates; it replaces `smoothing` of the previous probabilities.
    """
    target = np.nan_to_num(np.asarray(p_motif, dtype=np.float64), nan=0.5)
    if len(elite_masks):
        target = 0.5 * (target + np.asarray(elite_masks, dtype=np.float64).mean(axis=0))
    keep = target if previous is None else smoothing * target + (1.0 - smoothing) * np.asarray(previous)
    return np.clip(keep, floor, 1.0 - floor)


def plan_round(settings: Any, round_: int, start: int, stop: int, p_motif: np.ndarray | None,
               elite_masks: np.ndarray, previous: RoundPlan | None) -> RoundPlan:
    """The plan of round `round_` (rows [start, stop)); round 0, or no results yet: all blind.

    `settings` is the campaign's `AdaptiveSettings`; `elite_masks` the masks of the lowest-R_wp
    candidates so far, best first.
    """
    if round_ == 0 or p_motif is None:
        return RoundPlan(round_, start, stop)
    prev_keep = np.asarray(previous.keep) if previous is not None and previous.keep else None
    keep = next_keep(p_motif, elite_masks, prev_keep, SMOOTHING, FLOOR)
    elites = tuple(tuple(np.flatnonzero(m).tolist()) for m in elite_masks)
    return RoundPlan(round_, start, stop, blind_share=settings.blind_share,
                     mutation_share=settings.mutation_share if elites else 0.0,
                     keep=tuple(float(p) for p in keep), elites=elites, flips=FLIPS)


def draw(plan: RoundPlan, blind: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masks and origins of rows drawn under `plan`; `blind` holds the first-round strategy's rows
    at the same positions (kept where a row is blind). Every stream is drawn for every row, so a
    row's draw does not depend on the others."""
    rows, n = blind.shape
    u = rng.random(rows)
    model = rng.random((rows, n)) < (np.asarray(plan.keep) if plan.keep else 0.5)
    pick = rng.integers(0, max(len(plan.elites), 1), size=rows)
    flip = rng.random((rows, n)) < plan.flips / n
    forced = rng.integers(0, n, size=rows)  # the atom flipped when the draw flips none
    fallback = rng.integers(0, n, size=rows)  # the atom kept when a draw keeps none
    origin = np.full(rows, BLIND, dtype=np.int8)
    origin[u >= plan.blind_share] = MODEL
    origin[u >= 1.0 - plan.mutation_share] = MUTATION
    masks = blind.copy()
    masks[origin == MODEL] = model[origin == MODEL]
    if plan.elites:
        elite = np.zeros((len(plan.elites), n), dtype=bool)
        for k, atoms in enumerate(plan.elites):
            elite[k, list(atoms)] = True
        flip[np.arange(rows), forced] |= ~flip.any(axis=1)
        mut = origin == MUTATION
        masks[mut] = elite[pick[mut]] ^ flip[mut]
    empty = ~masks.any(axis=1)
    masks[np.flatnonzero(empty), fallback[empty]] = True
    return masks, origin
