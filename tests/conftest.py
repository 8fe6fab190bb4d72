"""Shared fixtures of the learn/explain/report tests: one small cluster and one planted campaign."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_learn import PlantedCampaign, write_planted_store  # noqa: E402

from motex_dask.settings import LearnSettings  # noqa: E402

#: Small but real: a 4-trial search with 3-fold CV and a 100-replicate bootstrap.
PLANTED_SETTINGS = replace(LearnSettings(), n_trials=4, max_rounds=300, early_stopping_rounds=15, bootstrap=100)


@pytest.fixture(scope="session")
def dask_client():
    """Two single-threaded worker processes (xgboost.dask needs a fixed set of workers)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      worker_dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory) -> PlantedCampaign:
    """3000 candidates over 40 permuted atoms; atoms 0–9 are the motif; 3 % failed fits; last chunk pending."""
    return write_planted_store(tmp_path_factory.mktemp("planted") / "store.zarr", size=3000, n_perm=40,
                               n_planted=10, chunk_size=500, pending_chunks=1)


@pytest.fixture(scope="session")
def learned(dask_client, planted_store):
    """(features, train result, contributions) of the planted campaign."""
    from motex_dask.explain import explain
    from motex_dask.learn import load_features, train

    features = load_features(planted_store.path)
    trained = train(dask_client, features, PLANTED_SETTINGS)
    return features, trained, explain(dask_client, features, trained, PLANTED_SETTINGS)
