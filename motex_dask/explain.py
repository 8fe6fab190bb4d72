"""Step 4: explain the model: atom contribution values from SHAP, reduced block by block.

For each OK candidate, xgboost's exact tree SHAP (`pred_contribs=True`) splits the predicted R_wp
into one value per feature. An atom's contribution is the mean SHAP value of its bit over the
candidates that keep it minus the mean over those that remove it: negative means that keeping the
atom lowers R_wp, i.e. the atom belongs to the motif (Anker et al. 2022).

Every block of the store sends back only sums and counts (and a bounded sample of rows for plots
and the check against the shap package); they are added in a tree of tasks. The uncertainty is a
Bayesian bootstrap over candidates: each candidate gets an Exp(1) weight per replicate, drawn from a
hash of its index, so the replicates are sums too and need no second pass. It measures how well the
explained candidates pin the contribution down for this model, not the spread between models.

Beside the model's view, the same pass counts, with no ML, how often each atom is kept among the best
BEST_FITS_FRACTION (lowest R_wp) of the OK fits the contributions average over, every one of them and
not only the SHAP sample (`best_fits_share`): for a compact motif in a large model the fits
can locate the motif as a set while no per-atom explanation can rank its atoms (README, "Demos with a
known truth"), and this column shows what the fits say.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import shap
import xgboost as xgb
from distributed import Client
from scipy.special import ndtr
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from .settings import LearnSettings
from .errors import InputError
from .learn import (STREAM_BOOTSTRAP, STREAM_EXPLAIN, STREAM_SHAP_SAMPLE, Features, TrainResult,
                    booster_task, hash_uniform, tree_reduce)

log = logging.getLogger("motex_dask")

#: Rows of SHAP values brought back for the beeswarm plot; the first SHAP_CHECK_ROWS of them are
#: recomputed with the shap package's own tree algorithm.
SHAP_SAMPLE_ROWS = 2_000
SHAP_CHECK_ROWS = 200
SHAP_TOLERANCE = 1e-5
#: Share of the OK fits (those with the lowest R_wp) whose kept atoms `best_fits_share` counts.
BEST_FITS_FRACTION = 0.01


@dataclass
class Contributions:
    """Per permuted atom (arrays in permuted-atom order) and the motif-size effect."""

    atom_index: np.ndarray       # index in the starting model
    symbols: np.ndarray
    contribution: np.ndarray     # mean SHAP kept − mean SHAP removed (R_wp units); < 0: motif atom
    uncertainty: np.ndarray      # bootstrap standard deviation (standard_error when bootstrap < 2)
    standard_error: np.ndarray   # Welch standard error from the spread of the SHAP values
    rank: np.ndarray             # 1 = most negative contribution; tied atoms share the lowest rank of their tie
    rank_low: np.ndarray         # 5th / 95th percentile of the rank over bootstrap replicates (a tie: its whole span)
    rank_high: np.ndarray
    confidence: np.ndarray       # share of replicates agreeing with the sign of the contribution
    p_motif: np.ndarray          # share of replicates with a negative contribution
    mean_shap_kept: np.ndarray
    mean_shap_removed: np.ndarray
    shap_std_kept: np.ndarray
    shap_std_removed: np.ndarray
    n_kept: np.ndarray
    n_removed: np.ndarray
    mean_abs_shap: np.ndarray    # global importance of each atom's bit
    best_fits_share: np.ndarray  # no ML: share of the best fits (BEST_FITS_FRACTION of the OK ones) keeping the atom
    best_fits: dict[str, Any]    # how many fits that is and their largest R_wp
    size_effect: dict[str, Any]
    base_value: float            # the model's expected R_wp (SHAP bias term)
    n_explained: int
    bootstrap: int
    feature_names: list[str]
    shap_sample: dict[str, np.ndarray]  # index, X (features), shap (features + bias) of sampled rows
    shap_check: dict[str, Any]
    undefined: list[int] = field(default_factory=list)  # atoms never (or always) kept: no contribution
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per permuted atom, in permuted-atom order."""
        cols = ("contribution", "uncertainty", "standard_error", "rank", "rank_low", "rank_high", "confidence",
                "p_motif", "mean_shap_kept", "mean_shap_removed", "shap_std_kept", "shap_std_removed",
                "n_kept", "n_removed", "mean_abs_shap", "best_fits_share")
        return pd.DataFrame({"index": self.atom_index, "element": self.symbols,
                             **{c: getattr(self, c) for c in cols}})


def _shap_block(X: np.ndarray, y: np.ndarray, index: np.ndarray, ok: np.ndarray, booster: xgb.Booster,
                seed: int, n_boot: int, n_sizes: int, p_explain: float, p_sample: float,
                best_rwp: float) -> dict[str, Any]:
    """SHAP values of one block's explained rows, reduced to sums, counts and a small sample; and the
    kept atoms of its best fits (OK, R_wp <= best_rwp), every one, explained or not."""
    n_perm = X.shape[1] - 1
    best = ok & (y <= best_rwp)
    best_kept = X[best, :n_perm].sum(axis=0, dtype=np.float64)
    sel = ok & (hash_uniform(index, seed, STREAM_EXPLAIN) < p_explain)
    X, index = X[sel], index[sel]
    if len(X):
        phi = booster.predict(xgb.DMatrix(X, nthread=1), pred_contribs=True)
    else:
        phi = np.zeros((0, X.shape[1] + 1), dtype=np.float32)
    x = X[:, :n_perm].astype(np.float64)
    a = phi[:, :n_perm].astype(np.float64)
    ax = a * x
    s, fs = X[:, n_perm].astype(np.float64), phi[:, n_perm].astype(np.float64)
    # Sizes above the census maximum only appear if fits were added since; they share the last bin.
    size_bin = np.minimum(s.astype(np.int64), n_sizes - 1)
    out: dict[str, Any] = {
        "best_n": int(best.sum()), "best_kept": best_kept,
        "n": len(X), "kept_n": x.sum(0), "kept_sum": ax.sum(0), "all_sum": a.sum(0),
        "kept_sq": (ax * a).sum(0), "all_sq": (a * a).sum(0),
        "abs_sum": np.abs(phi[:, :-1].astype(np.float64)).sum(0),
        "bias_sum": float(phi[:, -1].astype(np.float64).sum()),
        "size_moments": np.array([fs.sum(), (fs * fs).sum(), s.sum(), (s * s).sum(), (s * fs).sum()]),
        "size_count": np.bincount(size_bin, minlength=n_sizes).astype(np.float64),
        "size_shap": np.bincount(size_bin, weights=fs, minlength=n_sizes),
    }
    if n_boot:
        keys = index[:, None].astype(np.uint64) * np.uint64(n_boot) + np.arange(n_boot, dtype=np.uint64)
        w = -np.log(hash_uniform(keys, seed, STREAM_BOOTSTRAP))  # (rows, B) Exp(1) weights
        with threadpool_limits(limits=1, user_api="blas"):  # one core per task, like xgboost here
            out.update(boot_n=w.sum(0), boot_kept_n=w.T @ x, boot_kept_sum=w.T @ ax, boot_all_sum=w.T @ a)
    pick = hash_uniform(index, seed, STREAM_SHAP_SAMPLE) < p_sample
    out.update(sample_index=index[pick], sample_x=X[pick], sample_shap=phi[pick])
    return out


def _combine_shap(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: np.concatenate([p[k] for p in parts]) if k.startswith("sample_") else sum(p[k] for p in parts)
            for k in parts[0]}


def shap_reference(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """SHAP values from the shap package's own tree algorithm (its C++ TreeSHAP on its parse of the trees).

    `shap.TreeExplainer(booster)` would hand the work back to xgboost's pred_contribs; passing the
    parsed trees as a plain model makes shap run its own algorithm.
    """
    parsed = shap.TreeExplainer(booster).model
    trees = [{"children_left": t.children_left, "children_right": t.children_right,
              "children_default": t.children_default, "features": t.features, "thresholds": t.thresholds,
              "values": t.values, "node_sample_weight": t.node_sample_weight} for t in parsed.trees]
    explainer = shap.TreeExplainer({"trees": trees, "base_offset": parsed.base_offset})
    return np.asarray(explainer.shap_values(np.asarray(X, dtype=np.float64), check_additivity=False))


def _ranks(values: np.ndarray, ties: str = "min") -> np.ndarray:
    """1-based ranks along the last axis; tied values all get the lowest (`min`) or highest (`max`)
    rank of their tie: atoms the model never uses all sit at exactly 0, and atom order says nothing."""
    return rankdata(values, method=ties, axis=-1).astype(np.int64)


def _size_effect(r: dict[str, Any], n_perm: int) -> dict[str, Any]:
    """How the model uses the motif size: slope of its SHAP value per atom and its mean per size."""
    n = r["n"]
    sf, sff, ss, sss, ssf = r["size_moments"] / n
    var_s = sss - ss * ss
    seen = r["size_count"] > 0
    by_size = r["size_shap"][seen] / r["size_count"][seen]
    return {"mean_abs_shap": float(r["abs_sum"][n_perm] / n),
            "shap_std": math.sqrt(max(sff - sf * sf, 0.0)),
            # None when every explained candidate has the same size: no slope to speak of.
            "slope_per_atom": float((ssf - ss * sf) / var_s) if var_s > 0 else None,
            "range": float(by_size.max() - by_size.min()),
            "by_size": {"size": np.flatnonzero(seen).tolist(),
                        "count": r["size_count"][seen].astype(int).tolist(),
                        "mean_shap": by_size.tolist()}}


def explain(client: Client, features: Features, train_result: TrainResult, settings: LearnSettings,
            max_rows: int | None = None) -> Contributions:
    """Atom contribution values with bootstrap uncertainty, rank and confidence, over the OK candidates.

    At most `max_rows` (default `settings.explain_rows`; 0: all) are explained, a hash-sample when
    there are more: tree SHAP costs O(trees·leaves·depth²) per row, and the bootstrap error reports
    what the sample size buys.
    """
    max_rows = settings.explain_rows if max_rows is None else max_rows
    t0 = time.perf_counter()
    n_perm, booster = features.n_perm, train_result.booster
    p_explain = 1.0 if max_rows == 0 else min(1.0, max_rows / max(features.n_ok, 1))
    p_sample = SHAP_SAMPLE_ROWS / max(features.n_ok * p_explain, 1.0)
    n_boot = settings.bootstrap if settings.bootstrap >= 2 else 0
    # the largest R_wp among the best fits: the k-th lowest (k-th largest of -R_wp, failed fits at -inf)
    n_best = max(1, math.ceil(BEST_FITS_FRACTION * features.n_ok))
    best_rwp = -float(client.compute(da.topk(da.where(features.ok, -features.y, -np.inf), n_best).min()).result())
    booster_f = booster_task(booster)
    parts = [dask.delayed(_shap_block, pure=True)(*blocks, booster=booster_f, seed=settings.seed, n_boot=n_boot,
                                                  n_sizes=features.size_range[1] + 1, p_explain=p_explain,
                                                  p_sample=p_sample, best_rwp=best_rwp)
             for blocks in features.row_blocks()]
    r = client.compute(tree_reduce(parts, _combine_shap)).result()
    seconds = {"shap": time.perf_counter() - t0}
    n = int(r["n"])
    if n == 0:
        raise InputError(f"{features.store_path}: no successful fit to explain; run the fits first")

    n_kept, n_removed = r["kept_n"], n - r["kept_n"]
    undefined = (n_kept == 0) | (n_removed == 0)
    if undefined.any():
        log.warning("atoms %s are kept in all or in none of the %d explained candidates: their contribution "
                    "is undefined (NaN)", features.atom_index[undefined].tolist(), n)
    with np.errstate(invalid="ignore", divide="ignore"):  # undefined atoms: set to NaN below on purpose
        mean_kept = r["kept_sum"] / n_kept
        mean_removed = (r["all_sum"] - r["kept_sum"]) / n_removed
        var_kept = np.maximum(r["kept_sq"] / n_kept - mean_kept ** 2, 0.0)
        var_removed = np.maximum((r["all_sq"] - r["kept_sq"]) / n_removed - mean_removed ** 2, 0.0)
        contribution = mean_kept - mean_removed
        se = np.sqrt(var_kept / n_kept + var_removed / n_removed)
    for arr in (mean_kept, mean_removed, var_kept, var_removed, contribution, se):
        arr[undefined] = np.nan
    defined = ~undefined
    ordered = np.where(defined, contribution, np.inf)  # undefined atoms last
    rank = _ranks(ordered)

    uncertainty, confidence, p_motif = (np.full(n_perm, np.nan) for _ in range(3))
    rank_low, rank_high = rank.copy(), _ranks(ordered, "max")
    c = contribution[defined]
    if n_boot:
        kept = r["boot_kept_sum"] / r["boot_kept_n"]
        removed = (r["boot_all_sum"] - r["boot_kept_sum"]) / (r["boot_n"][:, None] - r["boot_kept_n"])
        cb = (kept - removed)[:, defined]  # (B, defined atoms); Exp(1) weights are > 0: no 0/0 here
        uncertainty[defined] = cb.std(axis=0, ddof=1)
        p_motif[defined] = (cb < 0).mean(axis=0)
        confidence[defined] = (np.sign(cb) == np.sign(c)).mean(axis=0)
        rank_low[defined] = np.floor(np.percentile(_ranks(cb), 5, axis=0)).astype(np.int64)
        rank_high[defined] = np.ceil(np.percentile(_ranks(cb, "max"), 95, axis=0)).astype(np.int64)
    else:  # no bootstrap: a normal approximation from the Welch standard error
        s = se[defined]
        z = np.divide(c, s, out=np.where(c < 0, -np.inf, np.where(c > 0, np.inf, 0.0)), where=s > 0)
        uncertainty[defined] = s
        p_motif[defined] = ndtr(-z)
        confidence[defined] = ndtr(np.abs(z))
    confidence[undefined] = 0.0

    sample = {"index": r["sample_index"], "X": r["sample_x"], "shap": r["sample_shap"]}
    t1 = time.perf_counter()
    rows = min(SHAP_CHECK_ROWS, len(sample["index"]))
    ref = shap_reference(booster, sample["X"][:rows])
    diff = float(np.abs(ref - sample["shap"][:rows, :-1]).max()) if rows else math.nan
    check = {"rows": rows, "max_abs_diff": diff, "tolerance": SHAP_TOLERANCE, "agree": bool(diff <= SHAP_TOLERANCE)}
    if not check["agree"]:
        log.warning("xgboost pred_contribs and shap's TreeSHAP differ by up to %.3g on %d rows (tolerance %g)",
                    diff, rows, SHAP_TOLERANCE)
    seconds["shap_check"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    return Contributions(
        atom_index=features.atom_index, symbols=np.asarray(features.symbols), contribution=contribution,
        uncertainty=uncertainty, standard_error=se, rank=rank, rank_low=rank_low, rank_high=rank_high,
        confidence=confidence, p_motif=p_motif, mean_shap_kept=mean_kept, mean_shap_removed=mean_removed,
        shap_std_kept=np.sqrt(var_kept), shap_std_removed=np.sqrt(var_removed), n_kept=n_kept.astype(np.int64),
        n_removed=n_removed.astype(np.int64), mean_abs_shap=r["abs_sum"][:n_perm] / n,
        best_fits_share=r["best_kept"] / r["best_n"],
        best_fits={"fraction": BEST_FITS_FRACTION, "fits": int(r["best_n"]), "rwp_max": best_rwp},
        size_effect=_size_effect(r, n_perm), base_value=r["bias_sum"] / n, n_explained=n, bootstrap=n_boot,
        feature_names=features.feature_names, shap_sample=sample, shap_check=check,
        undefined=features.atom_index[undefined].tolist(), seconds=seconds)
