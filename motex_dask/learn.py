"""Step 3: learn R_wp from the candidate masks with xgboost.dask, straight from the campaign store.

Features are the mask bits (uint8, one column per permuted atom) plus the motif size `n_atoms`;
the target is R_wp. Rows whose fit is not OK are left out. Every row's role (train, validation,
test, cross-validation fold, samples) comes from a hash of its candidate index and the seed, so it
does not depend on chunking, worker count or row order, and a resumed or extended store keeps the
roles of the rows it already had.

The data stay in the cluster: training goes through `xgboost.dask`; every other pass over the store
is a per-block function whose small results are combined in a tree of tasks (`tree_reduce`). Only
bounded samples (a cross-validation set of at most `LearnSettings.tune_rows` rows, plot samples) leave the blocks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import optuna
import xgboost as xgb
from distributed import Client, get_worker
from distributed.comm import get_address_host
from xgboost import dask as dxgb
from xgboost.collective import Config as CollConfig

from .settings import LearnSettings
from .errors import InputError, LearnError
from .fit.result import Status
from .store import CampaignStore

log = logging.getLogger("motex_dask")

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLITS = ("train", "validation", "test")
#: Test rows kept for the predicted-vs-true plot, OK rows kept for the R_wp-vs-size plot.
TEST_SAMPLE_ROWS = 5_000
STORE_SAMPLE_ROWS = 20_000
#: Hyper-parameters used when the search is off (xgboost's usual starting point).
DEFAULT_PARAMS: dict[str, Any] = {"learning_rate": 0.1, "max_depth": 6, "subsample": 0.8,
                                  "colsample_bytree": 1.0, "min_child_weight": 1.0, "reg_lambda": 1.0}
#: Search ranges (low, high); the number of trees is searched in [50, max_rounds] (log scale).
#: Depth is capped at 6: the cost of exact tree SHAP grows as 2^depth·depth² per tree.
SEARCH_SPACE: dict[str, tuple[float, float]] = {
    "learning_rate": (0.02, 0.3), "max_depth": (2, 6), "subsample": (0.5, 1.0),
    "colsample_bytree": (0.5, 1.0), "min_child_weight": (1.0, 50.0), "reg_lambda": (1e-3, 10.0)}
LOG_SCALE = ("learning_rate", "min_child_weight", "reg_lambda")
#: Fixed xgboost settings of every model.
BASE_PARAMS: dict[str, Any] = {"objective": "reg:squarederror", "eval_metric": "rmse", "tree_method": "hist"}

# Independent hash streams: one per use of a row's pseudo-random number.
STREAM_SPLIT, STREAM_TUNE, STREAM_TEST_SAMPLE, STREAM_STORE_SAMPLE = 1, 2, 3, 4
STREAM_EXPLAIN, STREAM_SHAP_SAMPLE, STREAM_BOOTSTRAP = 5, 6, 7

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wraps modulo 2**64 by design)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hash_uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform number in (0, 1) per key, a pure function of (key, seed, stream)."""
    salt = _splitmix(np.array([seed], dtype=np.uint64) * np.uint64(1_000_003) + np.uint64(stream))
    h = _splitmix(np.asarray(keys).astype(np.uint64) ^ salt)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def split_codes(index: np.ndarray, settings: LearnSettings) -> np.ndarray:
    """TRAIN / VALIDATION / TEST (int8) of each candidate index."""
    u = hash_uniform(index, settings.seed, STREAM_SPLIT)
    code = np.full(u.shape, TRAIN, dtype=np.int8)
    code[u < settings.test_fraction + settings.validation_fraction] = VALIDATION
    code[u < settings.test_fraction] = TEST
    return code


def cv_folds(index: np.ndarray, settings: LearnSettings) -> np.ndarray:
    """Cross-validation fold (0..cv_folds-1) of training rows: the split's uniform, rescaled."""
    held = settings.test_fraction + settings.validation_fraction
    u = (hash_uniform(index, settings.seed, STREAM_SPLIT) - held) / (1.0 - held)
    return np.clip((u * settings.cv_folds).astype(np.int64), 0, settings.cv_folds - 1)


def task_threads() -> int:
    """Threads a task may give xgboost: the worker's share when each worker runs one task at a time."""
    try:
        worker = get_worker()
    except ValueError:  # not on a distributed worker (local scheduler): tasks already run in parallel
        return 1
    return max(1, worker.state.nthreads)


def _load_booster(raw: bytearray) -> xgb.Booster:
    booster = xgb.Booster(model_file=raw)
    booster.set_param({"nthread": 1})  # block tasks run side by side
    return booster


def booster_task(booster: xgb.Booster) -> Any:
    """The booster as one graph task that every block task depends on.

    A task rather than scattered data: Dask recomputes it if its worker's copy is lost, and no
    Client.replicate (broadcast scatter) is involved, which hung here with two workers spinning
    in a transfer.
    """
    return dask.delayed(_load_booster, pure=True)(booster.save_raw("ubj"))


def tree_reduce(parts: list, combine: Callable[[list], Any], split_every: int = 8) -> Any:
    """Combine per-block results in a tree of delayed tasks; no task sees more than split_every parts."""
    while len(parts) > 1:
        parts = [dask.delayed(combine, pure=True)(parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


# -------------------------------------------------------------------------------------- features

@dataclass(frozen=True)
class Features:
    """The store as lazy Dask arrays (chunks = store chunks) plus a census of its rows."""

    X: da.Array               # (n, n_perm + 1) uint8 (uint16 past 255 atoms): mask bits, then the motif size
    y: da.Array               # (n,) float64: R_wp (NaN unless OK)
    index: da.Array           # (n,) int64: candidate index
    ok: da.Array              # (n,) bool: status OK and finite R_wp
    atom_index: np.ndarray    # (n_perm,) int64: index of each permuted atom in the starting model
    symbols: tuple[str, ...]  # element of each permuted atom
    store_path: str
    n_total: int
    n_ok: int
    status_counts: dict[str, int]
    size_range: tuple[int, int]  # smallest and largest motif size among OK rows

    @property
    def n_perm(self) -> int:
        return len(self.atom_index)

    @property
    def feature_names(self) -> list[str]:
        return [f"{s}{i}" for s, i in zip(self.symbols, self.atom_index)] + ["motif_size"]

    def row_blocks(self) -> list[tuple]:
        """Delayed (X, y, index, ok) of each row block."""
        parts = (self.X.to_delayed().ravel(), self.y.to_delayed(), self.index.to_delayed(),
                 self.ok.to_delayed())
        return list(zip(*parts))


def _feature_block(mask: np.ndarray, size: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    out = np.empty((mask.shape[0], mask.shape[1] + 1), dtype=out_dtype)
    out[:, :-1] = mask
    out[:, -1] = size[:, 0]
    return out


def load_features(store: CampaignStore | str, block_rows: int | None = None, frame: int | None = None) -> Features:
    """A (finished or partial) campaign store as Dask arrays, its rows counted.

    The census reads only the status, R_wp and size columns, on the active Dask scheduler.
    `block_rows`: rows per Dask block (default: the store's chunks); one block for the whole store
    makes training independent of where Dask places the blocks, hence bit-reproducible. A series
    store: the target is frame `frame`'s R_wp (default: the last frame).
    """
    store = CampaignStore.readonly(store)
    rows = block_rows or store.chunk_size
    mask = da.from_zarr(store.array("mask"), chunks=(rows, store.n_perm))
    size = da.from_zarr(store.array("n_atoms"), chunks=(rows,))
    if store.n_frames is None:
        rwp, status = (da.from_zarr(store.array(name), chunks=(rows,)) for name in ("rwp", "status"))
    else:  # (candidate, frame) arrays: one frame's column
        column = store.n_frames - 1 if frame is None else frame
        rwp, status = (da.from_zarr(store.array(name), chunks=(rows, store.frames_per_task))[:, column]
                       for name in ("rwp", "status"))
    n_perm = mask.shape[1]
    mask = mask.rechunk({1: -1})
    index = da.arange(mask.shape[0], chunks=mask.chunks[0], dtype=np.int64)
    ok = (status == int(Status.OK)) & da.isfinite(rwp)
    n_codes = max(int(s) for s in Status) + 1
    code = status.astype(np.int64)
    counts, n_ok, smin, smax, size_max = dask.compute(
        da.bincount(da.where((code >= 0) & (code < n_codes), code, n_codes), minlength=n_codes + 1),
        ok.sum(), da.where(ok, size, np.iinfo(np.int32).max).min(), da.where(ok, size, -1).max(), size.max())
    status_counts = {s.name: int(counts[int(s)]) for s in Status}
    if counts[n_codes]:
        status_counts["UNKNOWN"] = int(counts[n_codes])
    n_ok = int(n_ok)
    atom_index = np.asarray(store.array("atom_index")[:], dtype=np.int64)
    symbols = tuple(store.attrs.get("permuted_symbols") or ["X"] * n_perm)
    size_range = (int(smin), int(smax)) if n_ok else (0, 0)
    # Small integers, stored small: xgboost.dask keeps the training features in worker memory, so
    # uint8 (sizes up to 255 atoms) takes a quarter of float32's memory there, for the same model.
    dtype = np.dtype(np.uint8 if int(size_max) <= np.iinfo(np.uint8).max else np.uint16)
    X = da.map_blocks(_feature_block, mask, size[:, None], out_dtype=dtype, dtype=dtype,
                      chunks=(mask.chunks[0], (n_perm + 1,)))
    return Features(X=X, y=rwp, index=index, ok=ok, atom_index=atom_index, symbols=symbols,
                    store_path=store.url, n_total=int(mask.shape[0]), n_ok=n_ok,
                    status_counts=status_counts, size_range=size_range)


# ---------------------------------------------------------------------------------------- result

@dataclass
class TrainResult:
    """The trained model and everything the report needs about it."""

    booster: xgb.Booster          # sliced to the best iteration
    params: dict[str, Any]        # the full xgboost parameters of the final model
    best_params: dict[str, Any]   # searched hyper-parameters (or the defaults) and n_rounds
    n_trees: int
    metrics: dict[str, dict[str, float]]  # per split: n, mse, rmse, mae, r2
    history: dict[str, dict[str, list[float]]]  # eval history: train/validation rmse per round
    search: list[dict[str, Any]]  # one row per trial
    split: dict[str, Any]         # store census, rows per split and the split settings
    test_sample: dict[str, np.ndarray]   # index, rwp, predicted, motif_size of sampled test rows
    store_sample: dict[str, np.ndarray]  # index, rwp, motif_size of sampled OK rows
    best_candidates: dict[str, np.ndarray]  # index, rwp of the lowest-R_wp OK rows, best first
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- training

def _split_counts(features: Features, settings: LearnSettings) -> dict[str, int]:
    codes = features.index.map_blocks(split_codes, settings, dtype=np.int8)
    counts = da.bincount(da.where(features.ok, codes, 3).astype(np.int64), minlength=4).compute()
    return {name: int(counts[k]) for k, name in enumerate(SPLITS)}


def _suggest(trial: optuna.Trial, settings: LearnSettings,
             space: dict[str, tuple[float, float]]) -> tuple[dict[str, Any], int]:
    """One point of the search space: hyper-parameters and the number of trees."""
    params = {}
    for name, (low, high) in space.items():
        if name == "max_depth":
            params[name] = trial.suggest_int(name, int(low), int(high))
        else:
            params[name] = trial.suggest_float(name, low, high, log=name in LOG_SCALE)
    n_rounds = trial.suggest_int("n_rounds", min(50, settings.max_rounds), settings.max_rounds, log=True)
    return params, n_rounds


def _cv_trial(params: dict[str, Any], n_rounds: int, X: np.ndarray, y: np.ndarray, fold: np.ndarray,
              n_folds: int, early_stopping_rounds: int, seed: int) -> dict[str, Any]:
    """k-fold cross-validation of one parameter set on one worker (all its threads)."""
    start = time.perf_counter()
    nthread = task_threads()
    dtrain = xgb.DMatrix(X, y, nthread=nthread)
    folds = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]
    hist = xgb.cv({**BASE_PARAMS, **params, "nthread": nthread, "seed": seed}, dtrain,
                  num_boost_round=n_rounds, folds=folds, early_stopping_rounds=early_stopping_rounds,
                  as_pandas=False)
    best = int(np.argmin(hist["test-rmse-mean"]))  # early stopping keeps the best round last
    return {"cv_rmse": float(hist["test-rmse-mean"][best]), "cv_rmse_std": float(hist["test-rmse-std"][best]),
            "cv_rounds": best + 1, "seconds": time.perf_counter() - start}


def _tune_sample(client: Client, features: Features, settings: LearnSettings, n_train: int) -> list:
    """Futures of (X, y, fold) of a hash-sample of training rows, built and kept on a worker."""
    p = min(1.0, settings.tune_rows / max(n_train, 1))

    def select(index: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return ok & (split_codes(index, settings) == TRAIN) & (hash_uniform(index, settings.seed, STREAM_TUNE) < p)

    m = da.map_blocks(select, features.index, features.ok, dtype=bool)
    idx = features.index[m]
    folds = idx.map_blocks(cv_folds, settings, dtype=np.int64)
    return client.compute([features.X[m], features.y[m], folds])


def _search(client: Client, features: Features, settings: LearnSettings, n_train: int,
            space: dict[str, tuple[float, float]]) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """Bayesian (TPE) search with k-fold CV; each batch runs one trial per worker."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y, fold = _tune_sample(client, features, settings, n_train)
    workers = sorted(client.nthreads())
    sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, constant_liar=True,
                                         n_startup_trials=min(10, max(2, settings.n_trials // 3)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    rows: list[dict[str, Any]] = []
    # Batches are told in ask order, so a search is reproducible for a given number of workers.
    while len(rows) < settings.n_trials:
        batch = [study.ask() for _ in range(min(len(workers), settings.n_trials - len(rows)))]
        suggested = [_suggest(t, settings, space) for t in batch]
        futures = [client.submit(_cv_trial, params, n_rounds, X, y, fold, settings.cv_folds,
                                 settings.early_stopping_rounds, settings.seed, workers=[w], pure=False)
                   for (params, n_rounds), w in zip(suggested, workers)]
        for trial, (params, n_rounds), fut, w in zip(batch, suggested, futures, workers):
            row = {"trial": trial.number, **params, "n_rounds": n_rounds, "worker": w}
            try:
                res = fut.result()
            except Exception as err:  # a failed trial (e.g. out of memory) is recorded, not fatal
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                rows.append({**row, "state": "FAIL", "error": f"{type(err).__name__}: {err}"})
                log.warning("hyper-parameter trial %d failed: %s", trial.number, err)
                continue
            study.tell(trial, res["cv_rmse"])
            rows.append({**row, "state": "COMPLETE", **res, "error": ""})
    done = [r for r in rows if r["state"] == "COMPLETE"]
    if not done:
        raise LearnError(f"every hyper-parameter trial failed (first error: {rows[0]['error']}); give the "
                         "learn workers more memory (learn.processes fewer per job, or local.memory-limit), or "
                         "set learn.tune: false to train with fixed settings; the fits are kept")
    best = min(done, key=lambda r: r["cv_rmse"])
    params = {k: best[k] for k in space}
    return params, int(best["n_rounds"]), rows


def _predict_block(X: np.ndarray, y: np.ndarray, index: np.ndarray, ok: np.ndarray, booster: xgb.Booster,
                   settings: LearnSettings, p_test: float, p_store: float, k_best: int) -> dict[str, Any]:
    """Per-split error sums, plot samples and the k lowest-R_wp rows of one block."""
    X, y, index = X[ok], y[ok], index[ok]
    code = split_codes(index, settings)
    pred = booster.inplace_predict(X).astype(np.float64) if len(X) else np.zeros(0)
    err = pred - y
    sums = np.zeros((len(SPLITS), 5))
    for k in range(len(SPLITS)):
        sel = code == k
        sums[k] = (sel.sum(), (err[sel] ** 2).sum(), np.abs(err[sel]).sum(), y[sel].sum(), (y[sel] ** 2).sum())
    t = (code == TEST) & (hash_uniform(index, settings.seed, STREAM_TEST_SAMPLE) < p_test)
    s = hash_uniform(index, settings.seed, STREAM_STORE_SAMPLE) < p_store
    best = np.argsort(y, kind="stable")[:k_best]
    return {"sums": sums,
            "test": np.column_stack([index[t], y[t], pred[t], X[t, -1]]),
            "store": np.column_stack([index[s], y[s], X[s, -1]]),
            "best": np.column_stack([y[best], index[best]])}


def _combine_predict(parts: list[dict[str, Any]], k_best: int) -> dict[str, Any]:
    best = np.concatenate([p["best"] for p in parts])
    best = best[np.lexsort((best[:, 1], best[:, 0]))][:k_best]
    return {"sums": sum(p["sums"] for p in parts), "best": best,
            "test": np.concatenate([p["test"] for p in parts]),
            "store": np.concatenate([p["store"] for p in parts])}


def _metrics(sums: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for k, name in enumerate(SPLITS):
        n, sse, sae, sy, syy = sums[k]
        sst = syy - sy * sy / n if n else 0.0
        out[name] = {"n": int(n), "mse": float(sse / n) if n else math.nan,
                     "rmse": math.sqrt(sse / n) if n else math.nan, "mae": float(sae / n) if n else math.nan,
                     "r2": float(1.0 - sse / sst) if sst > 0 else math.nan}
    return out


def evaluate(client: Client, features: Features, booster: xgb.Booster, settings: LearnSettings,
             counts: dict[str, int], k_best: int) -> tuple[dict, dict, dict, dict]:
    """One distributed pass: metrics per split, plot samples, lowest-R_wp candidates."""
    booster_f = booster_task(booster)
    p_test = min(1.0, TEST_SAMPLE_ROWS / max(counts["test"], 1))
    p_store = min(1.0, STORE_SAMPLE_ROWS / max(features.n_ok, 1))
    parts = [dask.delayed(_predict_block, pure=True)(*blocks, booster=booster_f, settings=settings, p_test=p_test,
                                                     p_store=p_store, k_best=k_best)
             for blocks in features.row_blocks()]
    res = client.compute(tree_reduce(parts, partial(_combine_predict, k_best=k_best))).result()
    test = dict(zip(("index", "rwp", "predicted", "motif_size"), res["test"].T))
    test["index"] = test["index"].astype(np.int64)
    store = dict(zip(("index", "rwp", "motif_size"), res["store"].T))
    store["index"] = store["index"].astype(np.int64)
    best = {"rwp": res["best"][:, 0], "index": res["best"][:, 1].astype(np.int64)}
    return _metrics(res["sums"]), test, store, best


def train(client: Client, features: Features, settings: LearnSettings, k_best: int | None = None,
          search_space: dict[str, tuple[float, float]] | None = None,
          searched: dict[str, Any] | None = None) -> TrainResult:
    """Search hyper-parameters (optional), train on the train split with early stopping on validation,
    and score every split; `k_best` lowest-R_wp candidates are listed (default settings.best_candidates).
    `search_space` replaces ranges of SEARCH_SPACE; `searched` (another TrainResult's best_params)
    skips the search and uses those (the frames of a series share one search)."""
    t0 = time.perf_counter()
    counts = _split_counts(features, settings)
    need = {"train": max(10, settings.cv_folds), "validation": 1, "test": 1}
    short = [f"{k} {counts[k]} (need {v})" for k, v in need.items() if counts[k] < v]
    if short:
        raise InputError(f"{features.store_path}: too few successful fits to learn from: {', '.join(short)}; "
                         "run more of the catalogue first")
    seconds = {"split": time.perf_counter() - t0}

    t0 = time.perf_counter()
    if searched is not None:
        params = {k: v for k, v in searched.items() if k != "n_rounds"}
        n_rounds, search = int(searched["n_rounds"]), []
    elif settings.tune:
        space = {**SEARCH_SPACE, **(search_space or {})}
        params, n_rounds, search = _search(client, features, settings, counts["train"], space)
    else:
        params, n_rounds, search = dict(DEFAULT_PARAMS), settings.max_rounds, []
    seconds["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    codes = features.index.map_blocks(split_codes, settings, dtype=np.int8)
    m_train = features.ok & (codes == TRAIN)
    m_valid = features.ok & (codes == VALIDATION)
    dtrain = dxgb.DaskQuantileDMatrix(client, features.X[m_train], features.y[m_train])
    dvalid = dxgb.DaskQuantileDMatrix(client, features.X[m_valid], features.y[m_valid], ref=dtrain)
    full = {**BASE_PARAMS, **params, "seed": settings.seed}
    # The xgboost tracker runs in the scheduler's process; left alone it binds to the address of
    # the default route, which workers on another network (a cluster's ib0, a namespace) may not
    # reach: give it the scheduler's own address, the one every worker already reaches (unless the
    # user set xgboost's own dask key, which xgboost then reads itself).
    coll_cfg = None if dask.config.get("xgboost.scheduler_address", None) else CollConfig(
        tracker_host_ip=get_address_host(client.scheduler.address))
    out = dxgb.train(client, full, dtrain, num_boost_round=n_rounds,
                     evals=[(dtrain, "train"), (dvalid, "validation")],
                     early_stopping_rounds=settings.early_stopping_rounds, verbose_eval=False,
                     coll_cfg=coll_cfg)
    booster = out["booster"]
    n_trees = booster.best_iteration + 1 if "best_iteration" in booster.attributes() else booster.num_boosted_rounds()
    booster = booster[:n_trees]  # the model of the best validation round, for every later use
    history = {name: {k: [float(v) for v in vals] for k, vals in metrics.items()}
               for name, metrics in out["history"].items()}
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    k = settings.best_candidates if k_best is None else k_best
    metrics, test_sample, store_sample, best = evaluate(client, features, booster, settings, counts, k)
    seconds["evaluate"] = time.perf_counter() - t0
    log.info("trained %d trees; test R² %.4f, RMSE %.4g", n_trees, metrics["test"]["r2"], metrics["test"]["rmse"])
    split = {"candidates": features.n_total, "ok": features.n_ok, "status": features.status_counts,
             "size_range": list(features.size_range), **counts, "test_fraction": settings.test_fraction,
             "validation_fraction": settings.validation_fraction, "seed": settings.seed}
    return TrainResult(booster=booster, params=full, best_params={**params, "n_rounds": n_rounds},
                       n_trees=n_trees, metrics=metrics, history=history, search=search, split=split,
                       test_sample=test_sample, store_sample=store_sample, best_candidates=best, seconds=seconds)

