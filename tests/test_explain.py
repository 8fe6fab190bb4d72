"""Step 4: atom contributions from SHAP, reduced per block, checked against plain numpy and shap."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xgboost as xgb
import zarr
from conftest import PLANTED_SETTINGS

from motex_dask.explain import BEST_FITS_FRACTION, SHAP_TOLERANCE, _ranks, explain, shap_reference
from motex_dask.fit import Status


def ok_rows(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Features of every OK row of a (small) store, gathered here to check the distributed result."""
    g = zarr.open_group(path, mode="r")
    ok = g["status"][:] == Status.OK
    X = np.column_stack([g["mask"][:][ok], g["n_atoms"][:][ok]]).astype(np.float32)
    return np.flatnonzero(ok), X


def test_planted_atoms_get_the_lowest_contributions(learned, planted_store):
    _, _, c = learned
    planted = planted_store.model.permuted[planted_store.planted]
    best = c.atom_index[np.argsort(c.rank)[: len(planted)]]
    assert set(best.tolist()) == set(planted.tolist())
    is_planted = np.isin(c.atom_index, planted)
    assert (c.contribution[is_planted] < 0).all() and (c.contribution[~is_planted] > 0).all()
    # R_wp falls by 0.04 per planted atom kept: the model should say about as much.
    assert np.median(c.contribution[is_planted]) == pytest.approx(-0.04, abs=0.012)
    assert (c.confidence[is_planted] == 1.0).all() and (c.p_motif[is_planted] == 1.0).all()
    assert (c.p_motif[~is_planted] == 0.0).all()
    assert np.all(np.isfinite(c.uncertainty)) and (c.uncertainty > 0).all()
    assert sorted(c.rank.tolist()) == list(range(1, 41))
    assert (c.rank_low <= c.rank).all() and (c.rank <= c.rank_high).all()
    assert c.undefined == [] and c.bootstrap == PLANTED_SETTINGS.bootstrap


def test_shap_agrees_with_the_shap_package(learned):
    _, trained, c = learned
    assert c.shap_check["rows"] == 200
    assert c.shap_check["max_abs_diff"] <= SHAP_TOLERANCE and c.shap_check["agree"]
    # Independently of explain(): xgboost's pred_contribs against shap's own TreeSHAP.
    X = c.shap_sample["X"][:200]
    ours = trained.booster.predict(xgb.DMatrix(X), pred_contribs=True)
    assert np.abs(shap_reference(trained.booster, X) - ours[:, :-1]).max() <= SHAP_TOLERANCE
    # SHAP values add up to the prediction.
    assert np.allclose(ours.sum(1), trained.booster.inplace_predict(X), atol=1e-5)


def test_distributed_reduction_matches_a_direct_computation(learned, planted_store):
    features, trained, c = learned
    index, X = ok_rows(planted_store.path)
    phi = trained.booster.predict(xgb.DMatrix(X), pred_contribs=True).astype(np.float64)
    kept = X[:, :40] == 1
    mean_kept = np.array([phi[kept[:, j], j].mean() for j in range(40)])
    mean_removed = np.array([phi[~kept[:, j], j].mean() for j in range(40)])
    assert c.n_explained == len(index) == features.n_ok
    assert np.array_equal(c.n_kept, kept.sum(0))
    assert np.allclose(c.contribution, mean_kept - mean_removed, rtol=1e-6, atol=1e-9)
    assert np.allclose(c.shap_std_kept, [phi[kept[:, j], j].std() for j in range(40)], rtol=1e-5, atol=1e-9)
    assert np.allclose(c.mean_abs_shap, np.abs(phi[:, :40]).mean(0), rtol=1e-6)
    assert c.base_value == pytest.approx(phi[0, -1], rel=1e-6)
    size, size_shap = X[:, 40], phi[:, 40]
    assert c.size_effect["slope_per_atom"] == pytest.approx(np.polyfit(size, size_shap, 1)[0], rel=1e-6)
    by_size = c.size_effect["by_size"]
    assert sum(by_size["count"]) == len(index)
    k = len(by_size["size"]) // 2
    s = by_size["size"][k]
    assert by_size["mean_shap"][k] == pytest.approx(size_shap[size == s].mean(), rel=1e-6)
    # The beeswarm sample is made of real rows with their own SHAP values.
    rows = np.searchsorted(index, c.shap_sample["index"])
    assert np.array_equal(c.shap_sample["X"], X[rows])
    assert np.allclose(c.shap_sample["shap"], phi[rows], atol=1e-7)


def test_best_fits_share_counts_the_lowest_rwp_fits(dask_client, learned, planted_store):
    features, trained, c = learned
    g = zarr.open_group(planted_store.path, mode="r")
    ok = g["status"][:] == Status.OK
    rwp, mask = g["rwp"][:][ok], g["mask"][:][ok]
    n_best = int(np.ceil(BEST_FITS_FRACTION * ok.sum()))
    best = rwp <= np.sort(rwp)[n_best - 1]
    assert c.best_fits == {"fraction": BEST_FITS_FRACTION, "fits": int(best.sum()),
                           "rwp_max": pytest.approx(float(np.sort(rwp)[n_best - 1]))}
    assert np.allclose(c.best_fits_share, mask[best].mean(axis=0))
    # every fit is counted, not only the SHAP sample; the best fits keep the planted motif
    part = explain(dask_client, features, trained, replace(PLANTED_SETTINGS, bootstrap=0), max_rows=1000)
    assert np.array_equal(part.best_fits_share, c.best_fits_share)
    planted = np.isin(c.atom_index, planted_store.model.permuted[planted_store.planted])
    assert c.best_fits_share[planted].mean() > c.best_fits_share[~planted].mean() + 0.3


def test_bootstrap_is_reproducible_and_subsampling_keeps_the_motif(dask_client, learned, planted_store):
    features, trained, c = learned
    again = explain(dask_client, features, trained, PLANTED_SETTINGS)
    assert np.array_equal(again.uncertainty, c.uncertainty) and np.array_equal(again.rank_high, c.rank_high)
    part = explain(dask_client, features, trained, replace(PLANTED_SETTINGS, bootstrap=0), max_rows=1000)
    assert 850 < part.n_explained < 1150  # a hash-sample of about 1000 OK rows
    planted = planted_store.model.permuted[planted_store.planted]
    assert set(part.atom_index[part.rank <= len(planted)].tolist()) == set(planted.tolist())
    # No bootstrap: Welch standard error and a normal approximation.
    assert part.bootstrap == 0 and np.array_equal(part.uncertainty, part.standard_error)
    assert ((part.confidence >= 0.5) & (part.confidence <= 1)).all()
    assert np.array_equal(part.rank_low, part.rank)


def test_tied_contributions_share_their_rank():
    # atoms a model never uses all sit at exactly 0: one rank for all, their interval the whole tie
    values = np.array([[0.0, -1.0, 0.0, 2.0, 0.0], [0.5, -1.0, 0.0, 2.0, 0.0]])
    assert _ranks(values).tolist() == [[2, 1, 2, 5, 2], [4, 1, 2, 5, 2]]
    assert _ranks(values, "max").tolist() == [[4, 1, 4, 5, 4], [4, 1, 3, 5, 3]]
