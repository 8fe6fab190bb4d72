"""Reference engine: one diffpy.srfit refinement per candidate (slow, for validation).

The recipe follows the fixtures' ``debye_lsq`` variant: a FitContribution ``scale*G`` on the
fit grid (dy = 1), free scale (start 1, unbounded), zoom and Uiso with the FitSettings
bounds, ``scipy.optimize.least_squares(recipe.residual, x0, bounds=recipe.getBounds2(),
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

from motex_dask.settings import FitSettings
from motex_dask.fit.model import fit_window, model_pdf
from motex_dask.fit.result import FitResult, Status
from motex_dask.fit.window import MAX_ROUNDS, WindowState
from motex_dask.pdf.calculator import Instrument, PairTable, structure_function, transform_matrix
from motex_dask.pdf.formfactors import scattering_factors


def _srfit():
    """diffpy.srfit's fitbase classes (srfit 3.2 needs `six` at import time)."""
    from diffpy.srfit.fitbase import FitContribution, FitRecipe, Profile, ProfileGenerator

    return FitContribution, FitRecipe, Profile, ProfileGenerator


def _motex_generator(pairs: PairTable, inst: Instrument, r: np.ndarray, state: WindowState,
                     zoom: float, uiso: float):
    """A srfit ProfileGenerator "G" with parameters zoom and uiso over our calculator."""
    _, _, _, ProfileGenerator = _srfit()

    class MotexGenerator(ProfileGenerator):
        def __init__(self) -> None:
            ProfileGenerator.__init__(self, "G")
            self.newParameter("zoom", zoom)
            self.newParameter("uiso", uiso)
            self._tmat = transform_matrix(state.grid, r, inst.rstep, inst.qdamp)
            self._ff = scattering_factors(pairs.elements, state.grid.q, inst.radiation)

        def __call__(self, x: np.ndarray) -> np.ndarray:
            f = structure_function(pairs, state.grid, self.uiso.getValue(), inst.qbroad, inst.radiation,
                                   self.zoom.getValue(), window_zoom=state.zref, ff=self._ff)
            g = self._tmat @ f
            return g if x is r or np.array_equal(x, r) else np.interp(x, r, g)

    return MotexGenerator()


def _srreal_generator(symbols, positions, inst: Instrument, zoom: float, uiso: float):
    """srfit's DebyePDFGenerator on a unit-lattice, non-periodic diffpy Structure."""
    try:
        from diffpy.srfit.pdf import DebyePDFGenerator
        from diffpy.structure import Atom, Lattice, Structure
        import diffpy.srreal  # noqa: F401  (the generator's calculator)
    except ImportError as exc:
        raise ImportError("calculator 'srreal' needs diffpy.srreal and diffpy.structure "
                          "(conda-forge: diffpy.srreal); use calculator 'motex' without them") from exc
    stru = Structure([Atom(str(s), xyz=list(p), Uisoequiv=uiso) for s, p in zip(symbols, positions)],
                     lattice=Lattice(1, 1, 1, 90, 90, 90))
    gen = DebyePDFGenerator("G")
    gen.setStructure(stru, periodic=False)
    gen.setScatteringType("N" if inst.radiation == "neutron" else "X")
    gen.setQmax(inst.qmax)
    gen.setQmin(inst.qmin)
    gen.qdamp.setValue(inst.qdamp)
    gen.qbroad.setValue(inst.qbroad)
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
        self.g2 = float(self.gobs @ self.gobs)
        if fit.calculator == "srreal":
            _srreal_generator(self.symbols[:1], self.positions[:1], self.inst, 1.0, fit.uiso.start)

    def fit(self, keep: np.ndarray) -> FitResult:
        """Refine every row of `keep` (n, n_atoms) bool, one srfit recipe each."""
        keep = np.asarray(keep, dtype=bool)
        if keep.ndim != 2 or keep.shape[1] != self.symbols.size:
            raise ValueError(f"keep must be (n, {self.symbols.size}) bool, got {keep.shape}")
        result = FitResult.pending(keep.shape[0])
        for row, mask in enumerate(keep):
            sub = PairTable.build(self.symbols[mask], self.positions[mask])
            start = WindowState.fresh(self.inst, self.settings.zoom.start, self.settings.uiso.start)
            if not start.in_window(sub.d).any():
                result.mark(row, Status.EMPTY)
                continue
            try:
                if self.settings.calculator == "srreal":
                    values = self._fit_srreal(mask)
                else:
                    values = self._fit_motex(sub, start)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                result.mark(row, Status.OPTIMIZER)
                continue
            if values is None:
                result.mark(row, Status.OPTIMIZER)
            else:
                result.set_row(row, *values)
        return result

    def _recipe(self, gen):
        """FitRecipe scale*G on the fit grid with the debye_lsq variables."""
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
        return recipe, contrib

    def _add_params(self, recipe, zoom_par, uiso_pars, zoom: float, uiso: float) -> None:
        """zoomscale and Uiso variables (or fixed values) with the FitSettings bounds."""
        zs, us = self.settings.zoom, self.settings.uiso
        if zs.refine:
            var = recipe.newVar("zoomscale", zoom)
            var.boundRange(zs.lo, zs.hi)
            for par in zoom_par:
                recipe.constrain(par, var)
        if us.refine:
            var = recipe.newVar("Uiso", uiso)
            var.boundRange(us.lo, us.hi)
            for par in uiso_pars:
                recipe.constrain(par, var)

    @staticmethod
    def _least_squares(recipe):
        res = least_squares(recipe.residual, recipe.values, bounds=recipe.getBounds2(), method="trf")
        return res if res.status > 0 else None

    def _fit_motex(self, sub: PairTable, state: WindowState):
        """Rounds of frozen-state srfit refinements; (rwp, scale, zoom, uiso) or None."""
        zoom, uiso = self.settings.zoom.start, self.settings.uiso.start
        scale = 1.0
        for _ in range(MAX_ROUNDS):
            gen = _motex_generator(sub, self.inst, self.r, state, zoom, uiso)
            recipe, contrib = self._recipe(gen)
            self._add_params(recipe, [gen.zoom], [gen.uiso], zoom, uiso)
            res = self._least_squares(recipe)
            if res is None:
                return None
            scale = contrib.scale.getValue()
            zoom, uiso = gen.zoom.getValue(), gen.uiso.getValue()
            fresh = WindowState.fresh(self.inst, zoom, uiso)
            if fresh.same_as(state, sub.d):
                gcalc = model_pdf(sub, self.inst, self.r, np.ones(sub.species.size, bool), scale, zoom, uiso)
                return self._rwp(gcalc), scale, zoom, uiso
            state = fresh
        # still moving between states: report the fresh state at the last parameters
        g = model_pdf(sub, self.inst, self.r, np.ones(sub.species.size, bool), 1.0, zoom, uiso)
        scale = float(g @ self.gobs) / float(g @ g)
        return self._rwp(scale * g), scale, zoom, uiso

    def _fit_srreal(self, mask: np.ndarray):
        """One debye_lsq refinement with srreal's generator; (rwp, scale, zoom, uiso) or None."""
        zoom, uiso = self.settings.zoom.start, self.settings.uiso.start
        gen = _srreal_generator(self.symbols[mask], self.positions[mask], self.inst, zoom, uiso)
        recipe, contrib = self._recipe(gen)
        phase = gen.phase
        lat = phase.getLattice()
        self._add_params(recipe, [lat.a, lat.b, lat.c], [a.Uiso for a in phase.getScatterers()], zoom, uiso)
        if not self.settings.zoom.refine:
            for par in (lat.a, lat.b, lat.c):
                par.setValue(zoom)
        res = self._least_squares(recipe)
        if res is None:
            return None
        recipe.residual(res.x)  # re-apply the optimum (the last evaluation was a Jacobian step)
        gcalc = contrib.evaluate()
        scale = contrib.scale.getValue()
        return self._rwp(gcalc), scale, lat.a.getValue(), phase.getScatterers()[0].Uiso.getValue()

    def _rwp(self, gcalc: np.ndarray) -> float:
        return math.sqrt(float(((self.gobs - gcalc) ** 2).sum()) / self.g2)

    def model_pdf(self, keep_row, scale: float, zoom: float, uiso: float) -> np.ndarray:
        """scale * G on the fit grid from our calculator in the fresh state."""
        return model_pdf(self.pairs, self.inst, self.r, keep_row, scale, zoom, uiso)
