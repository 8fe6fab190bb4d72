"""Fit recipes end to end: per-element Uiso and delta2 from the campaign file to store, status and CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from campaign_fixtures import client, run_fit_stage, store_arrays, write_campaign  # noqa: F401 (fixture)
from motex_dask.inputs import prepare
from motex_dask.campaign_file import load_campaign
from motex_dask.cli import main
from motex_dask.errors import InputError
from motex_dask.fit import Status
from motex_dask.store import format_status, status_report

V2 = Path(__file__).resolve().parent / "data" / "srreal-v2"


def test_per_element_delta2_campaign_stores_every_refined_value(tmp_path: Path, client) -> None:  # noqa: F811
    path = write_campaign(tmp_path, size=40, chunk_size=20, n_oxygen=6,
                          fit={"uiso": {"C": {"start": 0.005}, "O": {"refine": False, "start": 0.012}},
                               "delta2": {"refine": True, "start": 1.0, "max": 4.0}})
    run_fit_stage(path, client)
    url = load_campaign(path).store_path
    a = store_arrays(url)
    assert {"zoom", "uiso_C", "uiso_O", "delta2"} <= set(a) and "uiso" not in a and "delta1" not in a
    ok = a["status"] == Status.OK
    assert ok.sum() > 20
    np.testing.assert_array_equal(a["uiso_O"][ok], 0.012)
    assert np.all((a["delta2"][ok] >= 0) & (a["delta2"][ok] <= 4.0))
    assert np.isnan(a["delta2"][~ok]).all()
    report = status_report(url)
    assert set(report["best"]) == {"row", "rwp", "scale", "zoom", "uiso_C", "uiso_O", "delta2"}
    assert "uiso_C" in format_status(report) and "delta2" in format_status(report)


def test_a_model_element_missing_from_uiso_is_named(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, n_oxygen=6, fit={"uiso": {"C": {"start": 0.005}}})
    with pytest.raises(InputError, match=r"field 'fit.uiso': no Uiso for element\(s\) O"):
        prepare(load_campaign(path))
    path = write_campaign(tmp_path, name="c2.yaml", fit={"uiso": {"C": {"start": 0.005}, "W": {"start": 0.005}}})
    with pytest.raises(InputError, match="element.*W.*not in the model"):
        prepare(load_campaign(path))


@pytest.mark.parametrize("name", ["c_W19O60_ReO3__S1__debye__X_U_d2_4.0", "c_W19O60_ReO3__S1__debye__N_U_d2_1.5",
                                  "b_Au87_fcc__S1__debye__X_U_d1_0.6_d2_1.5"])
def test_motex_pdf_reproduces_srreal_v2(tmp_path: Path, name: str) -> None:
    """`motex pdf --uiso EL=VALUE ... --delta1 --delta2 --radiation` writes srreal's G."""
    case = next(c for c in json.loads((V2 / "manifest.json").read_text())["calculator_cases"] if c["name"] == name)
    data = np.load(V2 / case["file"], allow_pickle=False)
    out = tmp_path / "g.gr"
    args = ["pdf", str(V2 / case["structure_file"]), "-o", str(out), "--rmin", "1.6", "--rmax", "10",
            "--radiation", case["radiation"], "--delta1", str(case["delta1"]), "--delta2", str(case["delta2"])]
    for element, u in case["uiso_per_element"].items():
        args += ["--uiso", f"{element}={u}"]
    assert main(args) == 0
    r, g = np.loadtxt(out, unpack=True)
    np.testing.assert_allclose(r, data["r"], atol=1e-9)
    rwp = np.sqrt(((g - data["G"]) ** 2).sum() / (data["G"] ** 2).sum())
    assert rwp < (1e-8 if case["radiation"] == "xray" else 5e-3)


@pytest.mark.parametrize("options, message", [
    (["--uiso", "W=0.003"], "no Uiso for element.*O"),
    (["--uiso", "W=0.003", "--uiso", "O=0.01", "--uiso", "Au=0.01"], "no 'Au'"),
    (["--uiso", "nan"], "--uiso: must be a finite number"),
    (["--uiso", "O=-0.01", "--uiso", "W=0.003"], r"--uiso: must lie in \(0, 1\] .*for O"),
    (["--uiso", "0.01", "--uiso", "W=0.003"], "not both"),
    (["--delta1", "inf"], "--delta1: must be a finite number"),
    (["--delta2", "nan"], "--delta2: must be a finite number"),
    (["--delta2", "-1"], r"--delta2: must lie in \[0, 100\]"),
])
def test_motex_pdf_rejects_bad_recipe_options(tmp_path: Path, capsys, options: list[str], message: str) -> None:
    out = tmp_path / "g.gr"
    assert main(["pdf", str(V2 / "structures" / "c_W19O60_ReO3.xyz"), "-o", str(out), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0])
    assert not out.exists()
