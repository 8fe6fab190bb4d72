"""What a fit refines: the parameters of `FitSettings` mapped onto the model's physics.

Every candidate's model is fixed by one *physics vector*
    θ = (zoom, delta1, delta2, U_el0, U_el1, ...)   (U in the starting model's element order)
and each fit parameter (``zoom``, ``uiso`` or ``uiso_<El>``, ``delta1``, ``delta2``) sets one or
more of its entries: θ = M p. One ``uiso`` block sets every element's U (the classic recipe);
a per-element mapping gives each element its own parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from motex_dask.settings import FitSettings, ParamSpec

IZ, ID1, ID2, IU = 0, 1, 2, 3  # positions in the physics vector θ
#: First trust-region step of each kind of parameter (see the trust radii in fit/lm.py).
_STEP0 = {"zoom": 0.005, "uiso": 0.002, "delta1": 0.1, "delta2": 0.5}


@dataclass(frozen=True)
class Recipe:
    """The parameters of one fit set-up, over the elements of one starting model."""

    elements: tuple[str, ...]
    names: tuple[str, ...]  # parameter names, in parameter order
    start: np.ndarray  # (n_params,)
    lo: np.ndarray  # bounds; a fixed parameter has lo = hi = start
    hi: np.ndarray
    free: np.ndarray  # (n_params,) bool
    step0: np.ndarray  # (n_params,) first trust-region step
    matrix: np.ndarray  # (n_physics, n_params): θ = matrix @ p

    @classmethod
    def from_settings(cls, fit: FitSettings, elements) -> "Recipe":
        """The recipe of `fit` for a model with these elements; a missing per-element Uiso is an error."""
        elements = tuple(str(e) for e in elements)
        specs: list[tuple[str, ParamSpec, tuple[int, ...]]] = [("zoom", fit.zoom, (IZ,))]
        if isinstance(fit.uiso, Mapping):
            missing = [e for e in elements if e not in fit.uiso]
            if missing:
                raise ValueError(f"no Uiso for element(s) {', '.join(missing)} of the model; add "
                                 f"{', '.join(f'{e}: {{start: 0.005}}' for e in missing)} to fit.uiso")
            extra = sorted(set(fit.uiso) - set(elements))
            if extra:
                raise ValueError(f"element(s) {', '.join(extra)} are not in the model (it holds "
                                 f"{', '.join(elements)}); remove them from fit.uiso")
            specs += [(f"uiso_{e}", fit.uiso[e], (IU + k,)) for k, e in enumerate(elements)]
        else:
            specs.append(("uiso", fit.uiso, tuple(IU + k for k in range(len(elements)))))
        specs += [("delta1", fit.delta1, (ID1,)), ("delta2", fit.delta2, (ID2,))]
        matrix = np.zeros((IU + len(elements), len(specs)))
        for col, (_, _, rows) in enumerate(specs):
            matrix[list(rows), col] = 1.0
        start = np.array([s.start for _, s, _ in specs])
        free = np.array([s.refine for _, s, _ in specs])
        return cls(elements=elements, names=tuple(n for n, _, _ in specs), start=start,
                   lo=np.where(free, [s.lo for _, s, _ in specs], start),
                   hi=np.where(free, [s.hi for _, s, _ in specs], start), free=free,
                   step0=np.array([_STEP0[n.split("_")[0]] for n, _, _ in specs]), matrix=matrix)

    @property
    def columns(self) -> tuple[str, ...]:
        """Parameters reported per candidate: zoom, the Uiso(s), and the deltas when refined."""
        return tuple(n for n, f in zip(self.names, self.free) if f or not n.startswith("delta"))

    @property
    def has_delta(self) -> bool:
        """Whether delta1/delta2 can be non-zero (the batched engine then sums pairs exactly)."""
        k = [self.names.index("delta1"), self.names.index("delta2")]
        return bool(np.any(self.free[k]) or np.any(self.start[k] != 0))

    def physics(self, p: np.ndarray) -> np.ndarray:
        """θ = (zoom, delta1, delta2, U per element) of parameter vector(s) p (..., n_params)."""
        return np.asarray(p, dtype=float) @ self.matrix.T

    def values(self, p: np.ndarray) -> dict[str, float]:
        """{name: value} of every parameter of one parameter vector."""
        return {n: float(v) for n, v in zip(self.names, p)}

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """Parameter vector from reported values (fixed parameters at their start)."""
        return np.array([float(values[n]) if n in values else s for n, s in zip(self.names, self.start)])
