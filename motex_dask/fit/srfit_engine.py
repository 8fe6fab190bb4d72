"""Reference engine: one diffpy.srfit refinement per candidate (slow, for validation).

The recipe follows the fixtures' ``debye_lsq`` / ``debye_U_d2free`` variants: a FitContribution
``scale*G`` on the fit grid (dy = 1), free scale (start 1, unbounded), and the recipe's zoom,
Uiso (one or per element), delta1 and delta2 with the FitSettings bounds, ``scipy.optimize.least_squares(recipe.residual, x0, bounds=recipe.getBounds2(),
method='trf')`` with default tolerances.

``calculator="motex"``: G comes from our srreal-faithful calculator, refined in rounds of
frozen Q grid and pair window exactly as the batched engine does (`motex_dask.fit.window`),
so both engines optimise the same objective. ``calculator="srreal"``: G comes from
diffpy.srreal's DebyePDFGenerator (its own calculator state, one least_squares run).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from motex_dask.fit.model import fit_window, model_pdf
from motex_dask.fit.recipe import ID1, ID2, IU, IZ, Recipe
from motex_dask.fit.result import FitResult, Status
from motex_dask.fit.window import MAX_ROUNDS, WindowState
from motex_dask.pdf.calculator import Instrument, PairTable, structure_function, transform_matrix
from motex_dask.pdf.formfactors import scattering_factors
from motex_dask.settings import FitSettings


def _srfit():
    """diffpy.srfit's fitbase classes (srfit 3.2 needs `six` at import time)."""
    from diffpy.srfit.fitbase import FitContribution, FitRecipe, Profile, ProfileGenerator

    return FitContribution, FitRecipe, Profile, ProfileGenerator


def _motex_generator(pairs: PairTable, inst: Instrument, r: np.ndarray, state: WindowState, theta: np.ndarray):
    """A srfit ProfileGenerator "G" over our calculator; one parameter per physics entry.

    Parameters: zoom, delta1, delta2 and u_<El> for each element of the model (recipe.IU order).
    """
    _, _, _, ProfileGenerator = _srfit()
    names = ["zoom", "delta1", "delta2"] + [f"u_{e}" for e in pairs.elements]

    class MotexGenerator(ProfileGenerator):
        def __init__(self) -> None:
            ProfileGenerator.__init__(self, "G")
            self.physics = [self.newParameter(n, float(v)) for n, v in zip(names, theta)]
            self._tmat = transform_matrix(state.grid, r, inst.rstep, inst.qdamp)
            self._ff = scattering_factors(pairs.elements, state.grid.q, inst.radiation)

        def __call__(self, x: np.ndarray) -> np.ndarray:
            th = np.array([p.getValue() for p in self.physics])
            f = structure_function(pairs, state.grid, th[IU:][pairs.species], inst.qbroad, inst.radiation,
                                   th[IZ], window_zoom=state.zref, ff=self._ff, delta1=th[ID1], delta2=th[ID2])
            g = self._tmat @ f
            return g if x is r or np.array_equal(x, r) else np.interp(x, r, g)

    return MotexGenerator()


def _srreal_generator(symbols, positions, inst: Instrument, theta: np.ndarray, elements: tuple[str, ...]):
    """srfit's DebyePDFGenerator on a unit-lattice, non-periodic diffpy Structure."""
    try:
        from diffpy.srfit.pdf import DebyePDFGenerator
        from diffpy.structure import Atom, Lattice, Structure
        import diffpy.srreal  # noqa: F401  (the generator's calculator)
    except ImportError as exc:
        raise ImportError("calculator 'srreal' needs diffpy.srreal and diffpy.structure "
                          "(conda-forge: diffpy.srreal); use calculator 'motex' without them") from exc
    u = dict(zip(elements, theta[IU:]))
    stru = Structure([Atom(str(s), xyz=list(p), Uisoequiv=u[str(s)]) for s, p in zip(symbols, positions)],
                     lattice=Lattice(1, 1, 1, 90, 90, 90))
    gen = DebyePDFGenerator("G")
    gen.setStructure(stru, periodic=False)
    gen.setScatteringType("N" if inst.radiation == "neutron" else "X")
    gen.setQmax(inst.qmax)
    gen.setQmin(inst.qmin)
    gen.qdamp.setValue(inst.qdamp)
    gen.qbroad.setValue(inst.qbroad)
    gen.delta1.setValue(theta[ID1])
    gen.delta2.setValue(theta[ID2])
    return gen


class SrfitEngine:
    """One srfit FitRecipe per candidate; see the module docstring."""

    name = "srfit"

    def __init__(self, symbols, positions, r, gobs, fit: FitSettings) -> None:
        self.r, self.gobs = fit_window(r, gobs, fit)
        if self.gobs.ndim != 1:
            raise ValueError("the srfit engine fits one PDF; fit a series of frames with the batched engine")
        self.settings = fit
        self.symbols = np.asarray([str(s) for s in symbols])
        self.positions = np.asarray(positions, dtype=float)
        self.inst = Instrument.for_profile(self.r, qmin=fit.qmin, qmax=fit.qmax, qdamp=fit.qdamp,
                                           qbroad=fit.qbroad, radiation=fit.radiation)
        self.pairs = PairTable.build(self.symbols, self.positions)
        self.recipe = Recipe.from_settings(fit, self.pairs.elements)
        self.g2 = float(self.gobs @ self.gobs)
        if fit.calculator == "srreal":
            _srreal_generator(self.symbols[:1], self.positions[:1], self.inst,
                              self.recipe.physics(self.recipe.start), self.pairs.elements[:1])

    def fit(self, keep: np.ndarray) -> FitResult:
        """Refine every row of `keep` (n, n_atoms) bool, one srfit recipe each."""
        keep = np.asarray(keep, dtype=bool)
        if keep.ndim != 2 or keep.shape[1] != self.symbols.size:
            raise ValueError(f"keep must be (n, {self.symbols.size}) bool, got {keep.shape}")
        result = FitResult.pending(keep.shape[0], self.recipe.columns)
        theta0 = self.recipe.physics(self.recipe.start)
        for row, mask in enumerate(keep):
            sub = PairTable.build(self.symbols[mask], self.positions[mask])
            present = np.bincount(self.pairs.species[mask], minlength=len(self.pairs.elements)) > 0
            start = WindowState.fresh(self.inst, theta0, present)
            if not start.in_window(sub.d).any():
                result.mark(row, Status.EMPTY)
                continue
            try:
                if self.settings.calculator == "srreal":
                    out = self._fit_srreal(mask)
                else:
                    out = self._fit_motex(sub, mask, present, start)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                result.mark(row, Status.OPTIMIZER)
                continue
            if out is None:
                result.mark(row, Status.OPTIMIZER)
            else:
                rwp, scale, p = out
                result.set_row(row, rwp, scale, self.recipe.values(p))
        return result

    def _recipe(self, gen, physics_pars, p: np.ndarray):
        """FitRecipe scale*G on the fit grid: free scale, and every recipe parameter constrained
        to the generator parameters it sets (physics_pars[k]: those of physics entry k)."""
        FitContribution, FitRecipe, Profile, _ = _srfit()
        profile = Profile()
        profile.setObservedProfile(self.r, self.gobs)
        contrib = FitContribution("pdf")
        contrib.setProfile(profile, xname="r")
        contrib.addProfileGenerator(gen)
        contrib.setEquation("scale*G")
        recipe = FitRecipe()
        recipe.clearFitHooks()
        recipe.addContribution(contrib)
        recipe.addVar(contrib.scale, 1.0, name="scale")
        rc = self.recipe
        variables = []
        for k, name in enumerate(rc.names):
            rows = np.flatnonzero(rc.matrix[:, k])
            if rc.free[k]:
                var = recipe.newVar(name, float(p[k]))
                var.boundRange(rc.lo[k], rc.hi[k])
                variables.append(var)
                for row in rows:
                    for par in physics_pars[row]:
                        recipe.constrain(par, var)
            else:
                for row in rows:
                    for par in physics_pars[row]:
                        par.setValue(float(p[k]))
        return recipe, contrib, variables

    def _free_values(self, variables, p: np.ndarray) -> np.ndarray:
        """Parameter vector with the refined variables' values."""
        p = p.copy()
        p[self.recipe.free] = [v.getValue() for v in variables]
        return p

    @staticmethod
    def _least_squares(recipe):
        res = least_squares(recipe.residual, recipe.values, bounds=recipe.getBounds2(), method="trf")
        return res if res.status > 0 else None

    def _fit_motex(self, sub: PairTable, mask: np.ndarray, present: np.ndarray, state: WindowState):
        """Rounds of frozen-state srfit refinements; (rwp, scale, parameter vector) or None."""
        rc = self.recipe
        p = rc.start.copy()
        full = np.ones(sub.species.size, bool)
        sub_theta = lambda th: np.concatenate([th[:IU], th[IU:][present]])  # noqa: E731  sub's elements
        for _ in range(MAX_ROUNDS):
            theta = rc.physics(p)
            gen = _motex_generator(sub, self.inst, self.r, state, sub_theta(theta))
            pars = [[gen.physics[k]] for k in range(IU)] + [[] for _ in self.pairs.elements]
            for k, e in zip(range(IU, IU + int(present.sum())), np.flatnonzero(present)):
                pars[IU + e] = [gen.physics[k]]
            recipe, contrib, variables = self._recipe(gen, pars, p)
            if self._least_squares(recipe) is None:
                return None
            p = self._free_values(variables, p)
            fresh = WindowState.fresh(self.inst, rc.physics(p), present)
            if fresh.same_as(state, sub.d):
                scale = contrib.scale.getValue()
                gcalc = model_pdf(sub, self.inst, self.r, full, scale, sub_theta(rc.physics(p)))
                return self._rwp(gcalc), scale, p
            state = fresh
        # still moving between states: report the fresh state at the last parameters
        g = model_pdf(self.pairs, self.inst, self.r, mask, 1.0, rc.physics(p))
        scale = float(g @ self.gobs) / float(g @ g)
        return self._rwp(scale * g), scale, p

    def _fit_srreal(self, mask: np.ndarray):
        """One refinement with srreal's generator; (rwp, scale, parameter vector) or None."""
        rc = self.recipe
        p = rc.start.copy()
        gen = _srreal_generator(self.symbols[mask], self.positions[mask], self.inst, rc.physics(p),
                                self.pairs.elements)
        phase = gen.phase
        lat = phase.getLattice()
        atoms = phase.getScatterers()
        pars = [[lat.a, lat.b, lat.c], [gen.delta1], [gen.delta2]]
        pars += [[a.Uiso for a, s in zip(atoms, self.symbols[mask]) if s == e] for e in self.pairs.elements]
        recipe, contrib, variables = self._recipe(gen, pars, p)
        res = self._least_squares(recipe)
        if res is None:
            return None
        recipe.residual(res.x)  # re-apply the optimum (the last evaluation was a Jacobian step)
        gcalc = contrib.evaluate()
        return self._rwp(gcalc), contrib.scale.getValue(), self._free_values(variables, p)

    def _rwp(self, gcalc: np.ndarray) -> float:
        return math.sqrt(float(((self.gobs - gcalc) ** 2).sum()) / self.g2)

    def model_pdf(self, keep_row, scale: float, values: dict[str, float]) -> np.ndarray:
        """scale * G on the fit grid from our calculator in the fresh state at these parameter values."""
        return model_pdf(self.pairs, self.inst, self.r, keep_row, scale, self.recipe.physics(self.recipe.vector(values)))
