"""Step 4's files: CSV, extended XYZ, VESTA, refined motif and best candidates, plots, summary.json."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pandas as pd
import pytest

from motex_dask.settings import FitSettings
from motex_dask.data import PDFData
from motex_dask.fit import make_engine
from motex_dask.pdf import pdf_from_atoms
from motex_dask.report import model_values, write_outputs

PNGS = ("shap_beeswarm", "rwp_vs_size", "predicted_vs_true", "learning_curve", "structure_contributions",
        "atom_contributions")


@pytest.fixture(scope="module")
def planted_data(planted_store) -> PDFData:
    """The PDF of the planted motif (permuted atoms 0–9 and their ligands): what the fits should find."""
    model = planted_store.model
    mask = np.zeros((1, model.n_perm), dtype=bool)
    mask[0, planted_store.planted] = True
    keep = model.keep_atoms(mask)[0]
    r, g = pdf_from_atoms(model.symbols[keep], model.positions[keep], qmin=0.7, qmax=20.0, qdamp=0.04,
                          qbroad=0.01, rmin=1.0, rmax=10.0, rstep=0.01)
    return PDFData(r=r, g=g, dg=None, path="planted motif")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, learned, planted_store, planted_data):
    _, trained, contributions = learned
    model = planted_store.model
    engine = make_engine(model.symbols, model.positions, planted_data.r, planted_data.g,
                         FitSettings(rmin=1.0, rmax=10.0))
    out = tmp_path_factory.mktemp("report")
    files = write_outputs(out, model, planted_data, None, contributions, trained, planted_store.path, engine=engine)
    return out, files


def test_atom_contributions_csv(outputs, learned, planted_store):
    out, files = outputs
    _, _, c = learned
    table = pd.read_csv(out / "atom_contributions.csv")
    for col in ("index", "element", "x", "y", "z", "contribution", "uncertainty", "rank", "confidence"):
        assert col in table.columns
    model = planted_store.model
    assert len(table) == model.n_perm and sorted(table["index"]) == sorted(model.permuted.tolist())
    assert table["rank"].tolist() == list(range(1, model.n_perm + 1))  # best first
    assert np.allclose(table[["x", "y", "z"]].to_numpy(), model.positions[table["index"]])
    assert set(table["element"]) == {"Ga"} and not table.isna().any().any()
    assert set(table["index"][:10]) == set(model.permuted[planted_store.planted].tolist())


def test_extended_xyz_carries_contributions_for_every_atom(outputs, planted_store, learned):
    out, _ = outputs
    _, _, c = learned
    model = planted_store.model
    atoms = ase.io.read(out / "atom_contributions.xyz")
    assert atoms.get_chemical_symbols() == model.symbols.tolist()
    assert np.allclose(atoms.positions, model.positions)
    contribution, permuted = atoms.arrays["contribution"], atoms.arrays["permuted"]
    assert np.array_equal(permuted, np.isin(np.arange(len(atoms)), model.permuted))
    assert np.allclose(contribution[model.permuted], c.contribution, rtol=1e-6)
    assert np.all(np.isfinite(contribution)) and np.all(np.isfinite(atoms.arrays["uncertainty"]))
    # A ligand inherits the mean of the permuted atoms it belongs to.
    o = int(np.flatnonzero(~permuted)[0])
    parents = np.flatnonzero(model.ligand_of[o])
    assert contribution[o] == pytest.approx(c.contribution[parents].mean(), rel=1e-6)


def test_model_values_rule_for_atoms_without_parents(learned, planted_store):
    _, _, c = learned
    model = planted_store.model
    lone = type(model)(symbols=model.symbols, positions=model.positions, permuted=model.permuted,
                       ligand_of=np.zeros_like(model.ligand_of))
    values = model_values(lone, c)
    others = ~values["permuted"]
    assert (values["contribution"][others] == 0).all() and (values["source"][others] == "none").all()


def test_vesta_file_colours_every_site(outputs, planted_store):
    out, _ = outputs
    text = (out / "atom_contributions.vesta").read_text().splitlines()
    n = len(planted_store.model.symbols)
    assert text[0].startswith("#VESTA_FORMAT_VERSION")
    struc, sitet = text.index("STRUC"), text.index("SITET")
    assert text[struc + 2 * n + 1].strip() == "0 0 0 0 0 0 0"
    sites = text[sitet + 1: sitet + 1 + n]
    rgb = np.array([[int(v) for v in line.split()[3:6]] for line in sites])
    assert len({tuple(v) for v in rgb}) > 2 and rgb.min() >= 0 and rgb.max() <= 255
    frac = np.array([[float(v) for v in text[struc + 1 + 2 * i].split()[4:7]] for i in range(n)])
    assert (frac > 0).all() and (frac < 1).all()


def test_motif_and_best_candidates_are_refined_and_written(outputs, learned, planted_store, planted_data):
    out, files = outputs
    _, trained, _ = learned
    model = planted_store.model
    cands = pd.read_csv(out / "best_candidates.csv")
    assert cands["name"].tolist() == ["motif"] + [f"best_candidate_{k:02d}" for k in range(1, 6)]
    assert cands["candidate"][1:].tolist() == trained.best_candidates["index"].tolist()
    assert cands["refined"].all() and (cands["status"] == "OK").all()
    motif = cands.iloc[0]
    assert sorted(map(int, motif["kept_permuted"].split())) == sorted(model.permuted[planted_store.planted])
    assert motif["rwp"] < 0.05  # the planted motif is the structure behind the data
    assert (cands["rwp"][1:] > motif["rwp"]).all()
    atoms = ase.io.read(out / "motif.xyz")
    assert len(atoms) == motif["n_atoms"] and atoms.info["rwp"] == pytest.approx(motif["rwp"])
    assert np.allclose(atoms.positions, model.positions[atoms.arrays["model_index"]] * motif["zoom"])
    fits = pd.read_csv(out / "fits.csv")
    assert np.allclose(fits["r"], planted_data.r) and "gcalc_motif" in fits
    gobs, gcalc = fits["gobs"].to_numpy(), fits["gcalc_motif"].to_numpy()
    assert np.sqrt(np.sum((gobs - gcalc) ** 2) / np.sum(gobs ** 2)) == pytest.approx(motif["rwp"], rel=1e-3)


def test_plots_search_history_and_summary(outputs, learned):
    out, files = outputs
    _, trained, c = learned
    for name in PNGS + ("motif_fit",):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    search = pd.read_csv(out / "hyperparameter_search.csv")
    assert len(search) == len(trained.search) and {"learning_rate", "max_depth", "cv_rmse"} <= set(search)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert summary["metrics"]["test"]["r2"] == pytest.approx(trained.metrics["test"]["r2"])
    assert summary["counts"]["ok"] == c.n_explained and summary["counts"]["status"]["PENDING"] == 500
    assert summary["model"]["best_params"]["n_rounds"] == trained.best_params["n_rounds"]
    assert summary["shap_check"]["agree"] and summary["size_effect"]["slope_per_atom"] is not None
    assert summary["motif"]["status"] == "OK" and len(summary["best_candidates"]) == 5
    assert all((out / name).is_file() for name in summary["files"].values())
    assert {p.name for p in files.values()} == set(summary["files"].values())


def test_without_data_the_stored_values_are_kept(tmp_path, learned, planted_store):
    _, trained, c = learned
    files = write_outputs(tmp_path, planted_store.model, None, None, c, trained, planted_store.path)
    cands = pd.read_csv(files["best_candidates"])
    assert not cands["refined"].any() and "fits" not in files
    assert np.allclose(cands["rwp"][1:], trained.best_candidates["rwp"])
    assert cands["status"][0] == "PENDING" and np.isnan(cands["rwp"][0])  # the motif was never fitted
