"""What a catalogue draw returns: masks over the permuted atoms and, for shape cuts, the shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: `Candidates.shape` codes. Rows that no shape cut out (uniform-size, bernoulli, exhaustive) are
#: SHAPE_NONE and carry the fill SHAPE_FILL in centre and axes: NaN is never stored.
SHAPE_NONE, SHAPE_SPHERE, SHAPE_ELLIPSOID = 0, 1, 2
SHAPE_NAMES = {SHAPE_NONE: "none", SHAPE_SPHERE: "sphere", SHAPE_ELLIPSOID: "ellipsoid"}
SHAPE_FILL = 0.0


@dataclass(frozen=True)
class Candidates:
    """Rows of one draw: masks (rows, n_perm) bool, centre (rows, 3) Å, semi-axes (rows, 3) Å, shape (rows,) int8.

    A sphere has three equal semi-axes (its radius); an ellipsoid's semi-axes are in its own
    (randomly oriented) frame, so their order says nothing about a direction in the model.
    """

    masks: np.ndarray
    centre: np.ndarray
    axes: np.ndarray
    shape: np.ndarray

    @classmethod
    def masks_only(cls, masks: np.ndarray) -> "Candidates":
        rows = masks.shape[0]
        return cls(masks=masks, centre=np.full((rows, 3), SHAPE_FILL), axes=np.full((rows, 3), SHAPE_FILL),
                   shape=np.full(rows, SHAPE_NONE, dtype=np.int8))

    def __len__(self) -> int:
        return self.masks.shape[0]

    def take(self, rows: np.ndarray | slice) -> "Candidates":
        return Candidates(self.masks[rows], self.centre[rows], self.axes[rows], self.shape[rows])

    def put(self, rows: np.ndarray, other: "Candidates") -> None:
        """Overwrite `rows` with the same rows of `other` (used to interleave the parts of a mix)."""
        self.masks[rows], self.centre[rows] = other.masks[rows], other.centre[rows]
        self.axes[rows], self.shape[rows] = other.axes[rows], other.shape[rows]
