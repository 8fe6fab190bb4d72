"""Per-element Uiso, delta1/delta2 (with the zero-width clamp) and neutrons against srreal-v2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_pdf_calculator import assert_grid_matches

from motex_dask.pdf import (
    Instrument,
    PairTable,
    pdf_from_atoms,
    scattering_factors,
    structure_function,
)
from motex_dask.pdf.calculator import transform_matrix

FIXTURES = Path(__file__).resolve().parent / "data" / "srreal-v2"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = MANIFEST["calculator_cases"]


def _rwp(model: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(((model - ref) ** 2).sum() / (ref**2).sum()))


def _kinds(case: dict) -> list[str]:
    """Which of the issue's feature kinds a case exercises."""
    kinds = []
    if len(case["uiso_per_element"]) > 1:
        kinds.append("per-element ADP")
    if case["delta1"]:
        kinds.append("delta1")
    if case["delta2"]:
        kinds.append("delta2")
    if case["radiation"] == "neutron":
        kinds.append("neutron")
    return kinds


def _case_g(case: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(our G, fixture data, our grid) of one calculator case."""
    data = np.load(FIXTURES / case["file"], allow_pickle=False)
    s = case["settings_requested"]
    inst = Instrument(qmin=s["qmin"], qmax=s["qmax"], qdamp=s["qdamp"], qbroad=s["qbroad"], rmin=s["rmin"],
                      rmax=s["rmax"], rstep=s["rstep"], radiation=case["radiation"])
    uiso = data["uiso"]
    grid = inst.qgrid(float(uiso.max()), case["delta1"], case["delta2"])
    pairs = PairTable.build(data["symbols"], data["xyz"])
    f = structure_function(pairs, grid, uiso, inst.qbroad, inst.radiation, delta1=case["delta1"],
                           delta2=case["delta2"])
    g = transform_matrix(grid, inst.r(), inst.rstep, inst.qdamp) @ f
    return g, data, {"grid": grid, "inst": inst, "f": f}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_v2_case_matches_srreal(case: dict) -> None:
    """Grid, pair window, F and G of every v2 case; X-ray cases exact, neutron within the bound."""
    g, data, ours = _case_g(case)
    grid, inst = ours["grid"], ours["inst"]
    assert_grid_matches(case, grid, inst, data)
    limit = 2e-3 if len(case["composition_used"]) == 1 else 5e-3
    assert _rwp(g, data["G"]) <= limit
    if case["radiation"] == "xray" or len(case["composition_used"]) == 1:
        # exact emulation; multi-element neutron cases differ only through periodictable's
        # newer b_c (C 6.6472 vs srreal's 6.6484, O 5.8037 vs 5.805 fm)
        np.testing.assert_allclose(ours["f"], data["F"], rtol=0, atol=1e-9 * np.abs(data["F"]).max())
        assert _rwp(g, data["G"]) < 1e-10


def test_v2_worst_rwp_per_kind() -> None:
    """The issue's report: worst R_wp(ours vs srreal) per feature kind, all within bounds."""
    worst: dict[str, float] = {}
    worst_xray = 0.0
    for case in CASES:
        g, data, _ = _case_g(case)
        for kind in _kinds(case):
            worst[kind] = max(worst.get(kind, 0.0), _rwp(g, data["G"]))
        if case["radiation"] == "xray":
            worst_xray = max(worst_xray, _rwp(g, data["G"]))
    print("worst R_wp per kind:", {k: f"{v:.2e}" for k, v in worst.items()}, f"X-ray cases {worst_xray:.1e}")
    assert set(worst) == {"per-element ADP", "delta1", "delta2", "neutron"}
    assert max(worst.values()) <= 5e-3
    assert worst_xray < 1e-10


def test_zero_width_clamp_is_exercised() -> None:
    """delta2 = 4 leaves the nearest neighbours unbroadened (J < 0): srreal counted them."""
    for case in CASES:
        if case["delta2"] == 4.0:
            data = np.load(FIXTURES / case["file"], allow_pickle=False)
            pairs = PairTable.build(data["symbols"], data["xyz"])
            j = 1 - case["delta2"] / pairs.d**2 + (0.01 * pairs.d) ** 2
            grid = Instrument(qmin=0.7, qmax=20, qdamp=0.05, qbroad=0.01, rmin=1.6, rmax=10,
                              rstep=0.01).qgrid(float(data["uiso"].max()), 0.0, 4.0)
            inside = (pairs.d >= grid.rlo) & (pairs.d <= grid.rhi)
            assert int(((j <= 0) & inside).sum()) == case["derived_not_read_back"]["n_pairs_zero_width_clamped"]


def test_neutron_lengths_close_to_srreal_table() -> None:
    """periodictable's b_c agree with srreal's table to 0.03 % (newer C and O measurements)."""
    table = MANIFEST["scattering_factors"]["neutron"]["b_c_fm"]
    ours = scattering_factors(list(table), [0.0, 10.0], "neutron")
    np.testing.assert_allclose(ours[:, 0], list(table.values()), rtol=3e-4)
    np.testing.assert_array_equal(ours[:, 0], ours[:, 1])


def test_targets_and_fresh_rescores_are_reproduced() -> None:
    """Each refinement target and the fresh re-score of every _freshcalc optimum, from pdf_from_atoms."""
    for ref in MANIFEST["refinements"]:
        data = np.load(FIXTURES / ref["file"], allow_pickle=False)
        t = ref["target"]
        r, g = pdf_from_atoms(data["symbols"], data["xyz"], qmin=0.7, qmax=20.0, qdamp=0.05, qbroad=0.01,
                              rmin=1.6, rmax=10.0, rstep=0.01, uiso=t["uiso_per_element"], zoom=t["expansion"],
                              delta1=t["delta1"], delta2=t["delta2"])
        np.testing.assert_allclose(r, data["r_target"], rtol=0, atol=1e-12)
        assert _rwp(t["scale"] * g, data["G_target"]) < 1e-10
        for k, fit in enumerate(ref["fits"][:3]):
            keep = np.asarray(fit["mask"], bool)
            for variant in ("debye_U_d2fixed_freshcalc", "debye_U_d2free_freshcalc"):
                v = fit["variants"][variant]
                p = {**v.get("fixed", {}), **v["params"]}
                uiso = {el: p[f"U_{el}"] for el in set(map(str, data["symbols"]))}
                _, gf = pdf_from_atoms(data["symbols"][keep], data["xyz"][keep], qmin=0.7, qmax=20.0, qdamp=0.05,
                                       qbroad=0.01, rmin=1.6, rmax=10.0, rstep=0.01, uiso=uiso,
                                       zoom=p["zoomscale"], delta1=p.get("delta1", 0.0), delta2=p["delta2"])
                np.testing.assert_allclose(p["scale"] * gf, data[f"Gfresh_{variant}"][k], rtol=0, atol=1e-9)
