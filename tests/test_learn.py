"""Step 3: features straight from the store, hash splits, the search, training and test metrics."""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import zarr
from bench_learn import write_planted_store
from conftest import PLANTED_SETTINGS

from motex_dask.errors import InputError
from motex_dask.fit import Status
from motex_dask.learn import (DEFAULT_PARAMS, SPLITS, TEST, TRAIN, VALIDATION, cv_folds, load_features,
                              split_codes, train)


def store_rows(path: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(path, mode="r")
    return {k: g[k][:] for k in ("mask", "n_atoms", "rwp", "status")}


def test_features_follow_the_store(planted_store):
    f = load_features(planted_store.path)
    rows = store_rows(planted_store.path)
    ok = rows["status"] == Status.OK
    assert f.n_total == 3000 and f.n_perm == 40 and f.X.shape == (3000, 41)
    assert f.X.chunks[0] == (500,) * 6 and f.X.dtype == np.uint8  # the store's chunks, small integers
    assert f.n_ok == ok.sum() and f.status_counts["PENDING"] == 500
    assert f.status_counts["NONFINITE"] == 2500 - ok.sum()
    assert f.size_range == (rows["n_atoms"][ok].min(), rows["n_atoms"][ok].max())
    X = f.X[1000:1500].compute()
    assert np.array_equal(X[:, :40], rows["mask"][1000:1500]) and np.array_equal(X[:, 40], rows["n_atoms"][1000:1500])
    assert np.array_equal(f.ok.compute(), ok)
    assert list(f.atom_index) == planted_store.model.permuted.tolist()
    assert f.feature_names[0] == f"Ga{planted_store.model.permuted[0]}" and f.feature_names[-1] == "motif_size"


def test_split_depends_on_index_only():
    index = np.arange(200_000)
    codes = split_codes(index, PLANTED_SETTINGS)
    rechunked = da.from_array(index, chunks=7_919).map_blocks(split_codes, PLANTED_SETTINGS, dtype=np.int8)
    assert np.array_equal(codes, rechunked.compute())
    assert np.array_equal(split_codes(index[::-1], PLANTED_SETTINGS), codes[::-1])  # not row order
    share = np.bincount(codes, minlength=3) / len(index)
    assert share[TEST] == pytest.approx(0.2, abs=0.005) and share[VALIDATION] == pytest.approx(0.1, abs=0.005)
    assert not np.array_equal(split_codes(index, replace(PLANTED_SETTINGS, seed=1)), codes)
    folds = cv_folds(index[codes == TRAIN], PLANTED_SETTINGS)
    assert np.bincount(folds).min() > 0.32 * len(folds) and folds.max() == PLANTED_SETTINGS.cv_folds - 1


def test_training_result_and_metrics_on_untouched_test_set(learned, planted_store):
    features, trained, _ = learned
    rows = store_rows(planted_store.path)
    ok = rows["status"] == Status.OK
    index = np.flatnonzero(ok)
    codes = split_codes(index, PLANTED_SETTINGS)
    # Failed and pending fits are left out; every OK row is in exactly one split.
    assert [trained.split[s] for s in SPLITS] == [int((codes == k).sum()) for k in range(3)]
    assert sum(trained.split[s] for s in SPLITS) == ok.sum()
    # Test metrics, recomputed here from the test rows alone.
    test = index[codes == TEST]
    X = np.column_stack([rows["mask"][test], rows["n_atoms"][test]]).astype(np.float32)
    y = rows["rwp"][test]
    err = trained.booster.inplace_predict(X).astype(np.float64) - y
    m = trained.metrics["test"]
    assert m["n"] == len(test)
    assert m["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-9)
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-9)
    assert m["r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-9)
    assert m["r2"] > 0.9
    # Early stopping on validation: the booster is cut at the best validation round.
    val = trained.history["validation"]["rmse"]
    assert trained.n_trees == trained.booster.num_boosted_rounds() == int(np.argmin(val)) + 1
    assert trained.n_trees <= trained.best_params["n_rounds"] <= PLANTED_SETTINGS.max_rounds
    # Plot samples hold only the rows they say.
    assert set(trained.test_sample["index"]) <= set(test.tolist())
    assert np.allclose(trained.store_sample["rwp"], rows["rwp"][trained.store_sample["index"]])


def test_search_history_and_best_parameters(learned):
    _, trained, _ = learned
    search = trained.search
    assert [r["trial"] for r in search] == list(range(PLANTED_SETTINGS.n_trials))
    assert all(r["state"] == "COMPLETE" and r["cv_rmse"] > 0 for r in search)
    assert len({r["worker"] for r in search}) == 2  # trials ran on both workers
    best = min(search, key=lambda r: r["cv_rmse"])
    assert trained.best_params == {**{k: best[k] for k in DEFAULT_PARAMS}, "n_rounds": best["n_rounds"]}
    assert 0.02 <= best["learning_rate"] <= 0.3 and 2 <= best["max_depth"] <= 6 and 0.5 <= best["subsample"] <= 1
    assert trained.params["learning_rate"] == best["learning_rate"]


def test_best_candidates_are_the_lowest_rwp_ok_rows(learned, planted_store):
    _, trained, _ = learned
    rows = store_rows(planted_store.path)
    rwp = np.where(rows["status"] == Status.OK, rows["rwp"], np.inf)
    expected = np.argsort(rwp, kind="stable")[: PLANTED_SETTINGS.best_candidates]
    assert trained.best_candidates["index"].tolist() == expected.tolist()
    assert np.array_equal(trained.best_candidates["rwp"], rows["rwp"][expected])


def test_without_search_uses_default_parameters(dask_client, planted_store):
    settings = replace(PLANTED_SETTINGS, tune=False, max_rounds=40)
    trained = train(dask_client, load_features(planted_store.path), settings)
    assert trained.search == [] and trained.best_params == {**DEFAULT_PARAMS, "n_rounds": 40}
    assert trained.n_trees <= 40 and trained.metrics["test"]["r2"] > 0.5


def test_too_few_fits_is_an_input_error(dask_client, tmp_path):
    camp = write_planted_store(tmp_path / "empty.zarr", size=600, chunk_size=300, pending_chunks=2)
    features = load_features(camp.path)
    assert features.n_ok == 0
    with pytest.raises(InputError, match="too few successful fits"):
        train(dask_client, features, PLANTED_SETTINGS)

