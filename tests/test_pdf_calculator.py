"""The Debye PDF calculator against diffpy.srreal's golden fixtures.

Only the DebyePDFCalculator cases are compared: the `realspace` fixtures come from srreal's
other calculator (PDFCalculator, real-space peak sums with f(0) weights), which motex_dask
does not implement.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from motex_dask.pdf import Instrument, PairTable, pdf_from_atoms, scattering_factors, structure_function, write_gr
from motex_dask.pdf.calculator import fft_length, transform_matrix

FIXTURES = Path(__file__).resolve().parent / "data" / "srreal"


def _manifest() -> dict:
    return json.loads((FIXTURES / "manifest.json").read_text())


def _debye_cases() -> list[dict]:
    return [c for c in _manifest()["calculator_cases"] if c["calculator"] == "DebyePDFCalculator"]


def _rwp(model: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(((model - ref) ** 2).sum() / (ref**2).sum()))


def _instrument(case: dict) -> Instrument:
    s = case["settings_requested"]
    return Instrument(qmin=s["qmin"], qmax=s["qmax"], qdamp=s["qdamp"], qbroad=s["qbroad"], rmin=s["rmin"],
                      rmax=s["rmax"], rstep=s["rstep"])


def assert_grid_matches(case: dict, grid, inst: Instrument, data) -> None:
    """Our Q grid, FFT length and r grid are srreal's for this fixture case (also used by the v2 tests)."""
    applied, derived = case["settings_applied"], case["derived_not_read_back"]
    assert grid.rhi == pytest.approx(applied["extendedrmax"], abs=1e-12)
    assert grid.rlo == pytest.approx(applied["extendedrmin"], abs=1e-12)
    assert grid.qstep == pytest.approx(applied["qstep"], rel=1e-14)
    assert grid.nq == applied["n_qgrid"] == derived["kmax_exclusive"]
    assert grid.kmin == derived["kmin_zeroed_below"]
    assert fft_length(grid, inst.rstep) == derived["fft_Npad2"]
    np.testing.assert_allclose(inst.r(), data["r"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", _debye_cases(), ids=lambda c: c["name"])
def test_debye_case_matches_srreal(case: dict) -> None:
    """Grid, F(Q) and G(r) of every Debye fixture; G within the issue's R_wp bounds."""
    data = np.load(FIXTURES / case["file"], allow_pickle=False)
    inst = _instrument(case)
    uiso = next(iter(case["uiso_per_element"].values()))
    grid = inst.qgrid(uiso)
    assert_grid_matches(case, grid, inst, data)
    r = inst.r()

    pairs = PairTable.build(data["symbols"], data["xyz"])
    f = structure_function(pairs, grid, uiso, inst.qbroad)
    np.testing.assert_allclose(f, data["F"], rtol=0, atol=1e-9 * np.abs(data["F"]).max())
    g = transform_matrix(grid, r, inst.rstep, inst.qdamp) @ f
    limit = 2e-3 if len(case["composition_used"]) == 1 else 5e-3
    assert _rwp(g, data["G"]) <= limit
    assert _rwp(g, data["G"]) < 1e-10  # exact emulation, not just within tolerance


def test_pdf_from_atoms_reproduces_expanded_case() -> None:
    """The CLI helper applies zoom (S3: coordinates × 1.008, Uiso 0.008) like srreal."""
    case = next(c for c in _debye_cases() if c["name"] == "c_W19O60_ReO3__S3__debye")
    data = np.load(FIXTURES / case["file"], allow_pickle=False)
    xyz = np.loadtxt(FIXTURES / case["structure_file"], skiprows=2, usecols=(1, 2, 3))
    symbols = np.loadtxt(FIXTURES / case["structure_file"], skiprows=2, usecols=0, dtype=str)
    s = case["settings_requested"]
    r, g = pdf_from_atoms(symbols, xyz, qmin=s["qmin"], qmax=s["qmax"], qdamp=s["qdamp"], qbroad=s["qbroad"],
                          rmin=s["rmin"], rmax=s["rmax"], rstep=s["rstep"], uiso=0.008,
                          zoom=case["expansion_factor"])
    np.testing.assert_allclose(r, data["r"], rtol=0, atol=1e-12)
    assert _rwp(g, data["G"]) < 1e-10


def test_refinement_targets_are_reproduced() -> None:
    """fits/*.npz targets: 0.7 × G(xyz × 1.006, Uiso 0.006) under S1."""
    for ref in _manifest()["refinements"]:
        data = np.load(FIXTURES / ref["file"], allow_pickle=False)
        target = ref["target"]
        r, g = pdf_from_atoms(data["symbols"], data["xyz"], qmin=0.7, qmax=20.0, qdamp=0.05, qbroad=0.01,
                              rmin=1.6, rmax=10.0, rstep=0.01, uiso=target["uiso"], zoom=target["expansion"])
        np.testing.assert_allclose(r, data["r_target"], rtol=0, atol=1e-12)
        assert _rwp(target["scale"] * g, data["G_target"]) < 1e-10


def test_xray_form_factors_match_srreal_table() -> None:
    """xraydb's Waasmaier–Kirfel f0 equals srreal's coefficients and looked-up values."""
    sf = _manifest()["scattering_factors"]
    q = np.linspace(0.0, 30.0, 301)
    for element, c in sf["coefficients"].items():
        s2 = (q / (4 * np.pi)) ** 2
        expected = c["c"] + sum(a * np.exp(-b * s2) for a, b in zip(c["a"], c["b"]))
        np.testing.assert_allclose(scattering_factors([element], q)[0], expected, rtol=1e-12, atol=1e-12)
        assert scattering_factors([element], [0.0])[0, 0] == pytest.approx(sf["f_at_Q0"][element], abs=1e-9)
    for case in _debye_cases():
        data = np.load(FIXTURES / case["file"], allow_pickle=False)
        ours = scattering_factors([str(e) for e in data["sf_elements"]], data["Q"])
        np.testing.assert_allclose(ours, data["sf_values"], rtol=1e-12, atol=1e-12)


def test_neutron_weights() -> None:
    """Neutron b_c are Q-independent: single-element F equals the X-ray one, W–O differs."""
    assert scattering_factors(["O"], [0.0, 10.0], "neutron")[0] == pytest.approx([5.803, 5.803], abs=1e-3)
    inst = Instrument(qmin=0.7, qmax=20.0, qdamp=0.05, qbroad=0.01, rmin=1.6, rmax=10.0, rstep=0.01)
    grid = inst.qgrid(0.005)
    for name, same in (("a_C60", True), ("c_W19O60_ReO3", False)):
        data = np.load(FIXTURES / "fits" / f"{name}.npz", allow_pickle=False)
        pairs = PairTable.build(data["symbols"], data["xyz"])
        fx = structure_function(pairs, grid, 0.005, 0.01, "xray")
        fn = structure_function(pairs, grid, 0.005, 0.01, "neutron")
        assert np.allclose(fx, fn, rtol=0, atol=1e-12) == same
    with pytest.raises(ValueError, match="radiation"):
        scattering_factors(["O"], [1.0], "electron")
    with pytest.raises(ValueError, match="Xx"):
        scattering_factors(["Xx"], [1.0])


def test_qmin_zero_and_subset_normalisation() -> None:
    """qmin 0 keeps every Q point; a subset is normalised by its own N <f>²."""
    inst = Instrument(qmin=0.0, qmax=20.0, qdamp=0.0, qbroad=0.0, rmin=1.0, rmax=8.0, rstep=0.01)
    assert inst.qgrid(0.005).kmin == 0
    data = np.load(FIXTURES / "fits" / "c_W19O60_ReO3.npz", allow_pickle=False)
    keep = data["masks"][0]
    full = PairTable.build(data["symbols"], data["xyz"])
    sub = PairTable.build(data["symbols"][keep], data["xyz"][keep])
    grid = inst.qgrid(0.005)
    np.testing.assert_allclose(structure_function(full, grid, 0.005, 0.0, keep=keep),
                               structure_function(sub, grid, 0.005, 0.0), rtol=1e-12, atol=1e-12)


def test_write_gr_round_trip(tmp_path: Path) -> None:
    r = np.arange(100, 200) * 0.01
    g = np.sin(r)
    path = tmp_path / "model.gr"
    write_gr(path, r, g, {"structure": "test.xyz", "qmax": 20.0})
    text = path.read_text().splitlines()
    assert text[0] == "# structure: test.xyz" and text[1] == "# qmax: 20.0"
    back = np.loadtxt(path)
    np.testing.assert_allclose(back[:, 0], r, atol=1e-9)
    np.testing.assert_allclose(back[:, 1], g, rtol=1e-9)
