"""Step 4 for shape-cut candidates: what the cookie-cutter shapes say about the motif.

Every shape candidate (``shape_kind`` > 0 in the store) carries its centre and semi-axes. From the
OK shape rows this reports:

* the best shape: the lowest-R_wp shape candidate of the whole store, and the mean (± spread) of
  centre and radius over the best 1 % of a hash-sample of them;
* R_wp against radius (for an ellipsoid: the geometric mean of its semi-axes), binned;
* the contribution of the shape features: a small xgboost model of R_wp on (centre x, y, z,
  radius, elongation, motif size) trained on the hash-sample, its test R² and the mean |SHAP| of
  each feature (R_wp units, comparable with the atoms' `mean_abs_shap`).

The sample is bounded by `learn.explain_rows` and drawn from a hash of the candidate index (its own
stream), so it is the same for any chunking or worker count. Only the sample leaves the blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xgboost as xgb

from .catalogue import SHAPE_NAMES, SHAPE_NONE
from .fit.result import Status
from .learn import TEST, TRAIN, hash_uniform, split_codes
from .settings import LearnSettings
from .store import CENTRE, SEMI_AXES, CampaignStore

#: Hash stream of the shape sample (learn uses 1–7).
STREAM_SHAPE = 8
FEATURES = ("centre_x", "centre_y", "centre_z", "radius", "elongation", "motif_size")
#: Share of the sampled shape rows whose centre and radius are averaged as "the best shapes".
BEST_SHARE = 0.01
RADIUS_BINS = 20
#: Rows of (radius, R_wp) kept for the plot.
PLOT_ROWS = 20_000
#: The shape-feature model: small and fixed (it has six features); its trees and rounds.
SHAPE_PARAMS: dict[str, Any] = {"objective": "reg:squarederror", "eta": 0.1, "max_depth": 4, "subsample": 0.8,
                                "tree_method": "hist", "nthread": 1, "seed": 0}
SHAPE_ROUNDS = 300


@dataclass
class ShapeReport:
    """What the shape features say (see the module docstring); `summary()` goes to summary.json."""

    n_shape: int
    n_sample: int
    best: dict[str, Any]
    best_share: dict[str, Any]
    rwp_vs_radius: dict[str, list]
    feature_shap: dict[str, float]
    r2_test: float | None
    sample: dict[str, np.ndarray] = field(repr=False)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"shape_candidates": self.n_shape, "sampled": self.n_sample, "best": self.best,
                "best_share": self.best_share, "rwp_vs_radius": self.rwp_vs_radius,
                "feature_mean_abs_shap": self.feature_shap, "shape_model_r2_test": self.r2_test,
                "seconds": self.seconds}


def _features(cols: dict[str, np.ndarray]) -> np.ndarray:
    axes = np.stack([cols[name] for name in SEMI_AXES], axis=1)
    radius = np.cbrt(axes.prod(axis=1))
    elongation = axes.max(axis=1) / axes.min(axis=1)
    return np.stack([cols["centre_x"], cols["centre_y"], cols["centre_z"], radius, elongation,
                     cols["n_atoms"].astype(np.float64)], axis=1)


def _shape_of(cols: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    axes = [float(cols[name][i]) for name in SEMI_AXES]
    return {"candidate": int(cols["index"][i]), "rwp": float(cols["rwp"][i]),
            "shape": SHAPE_NAMES[int(cols["shape_kind"][i])], "motif_size": int(cols["n_atoms"][i]),
            "centre": [float(cols[name][i]) for name in CENTRE], "semi_axes": axes,
            "radius": float(np.cbrt(np.prod(axes)))}


def explain_shapes(store: CampaignStore | str, settings: LearnSettings) -> ShapeReport | None:
    """The shape report of a store, or None when it holds no OK shape candidate."""
    t0 = time.perf_counter()
    store = CampaignStore.readonly(store)
    names = ("rwp", "status", "shape_kind", "n_atoms", *CENTRE, *SEMI_AXES)
    arrays = {name: da.from_zarr(store.array(name)) for name in names}
    if store.n_frames is not None:  # a series: the last frame's fits, as the usual output files
        arrays.update({name: arrays[name][:, -1] for name in ("rwp", "status")})
    index = da.arange(store.size, chunks=arrays["rwp"].chunks[0], dtype=np.int64)
    ok = (arrays["status"] == int(Status.OK)) & da.isfinite(arrays["rwp"]) & (arrays["shape_kind"] != SHAPE_NONE)
    n_shape = int(ok.sum().compute())
    if n_shape == 0:
        return None
    p = 1.0 if settings.explain_rows == 0 else min(1.0, settings.explain_rows / n_shape)
    sel = ok & index.map_blocks(lambda i: hash_uniform(i, settings.seed, STREAM_SHAPE) < p, dtype=bool)
    best_row = da.argmin(da.where(ok, arrays["rwp"], np.inf))
    cols = dict(zip(("index", *names), dask.compute(index[sel], *(arrays[n][sel] for n in names))))
    best_index = int(best_row.compute())
    best_cols = {n: np.asarray(arrays[n][best_index:best_index + 1].compute()) for n in names}
    best = _shape_of({**best_cols, "index": np.array([best_index])}, 0)

    X, y = _features(cols), cols["rwp"]
    order = np.argsort(y, kind="stable")
    top = order[:max(1, int(round(BEST_SHARE * len(y))))]
    best_share = {"rows": int(top.size), "rwp_max": float(y[top].max()),
                  **{f"{name}_mean": float(X[top, k].mean()) for k, name in enumerate(FEATURES[:4])},
                  **{f"{name}_std": float(X[top, k].std()) for k, name in enumerate(FEATURES[:4])}}

    radius = X[:, 3]
    edges = np.linspace(radius.min(), radius.max() + 1e-9, RADIUS_BINS + 1)
    which = np.clip(np.digitize(radius, edges) - 1, 0, RADIUS_BINS - 1)
    bins: dict[str, list] = {"radius_low": [], "radius_high": [], "count": [], "rwp_min": [], "rwp_p10": [],
                             "rwp_median": []}
    for b in range(RADIUS_BINS):
        v = y[which == b]
        if v.size:
            bins["radius_low"].append(float(edges[b]))
            bins["radius_high"].append(float(edges[b + 1]))
            bins["count"].append(int(v.size))
            bins["rwp_min"].append(float(v.min()))
            bins["rwp_p10"].append(float(np.percentile(v, 10)))
            bins["rwp_median"].append(float(np.median(v)))

    split = split_codes(cols["index"], settings)
    train, test = split == TRAIN, split == TEST
    feature_shap: dict[str, float] = {}
    r2 = None
    if train.sum() >= 20 and test.sum() >= 5:
        booster = xgb.train(SHAPE_PARAMS, xgb.DMatrix(X[train], y[train], feature_names=list(FEATURES)),
                            num_boost_round=SHAPE_ROUNDS)
        dtest = xgb.DMatrix(X[test], feature_names=list(FEATURES))
        resid = y[test] - booster.predict(dtest)
        spread = float(((y[test] - y[test].mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / spread if spread > 0 else None
        contribs = booster.predict(xgb.DMatrix(X, feature_names=list(FEATURES)), pred_contribs=True)
        feature_shap = {name: float(np.abs(contribs[:, k]).mean()) for k, name in enumerate(FEATURES)}
    keep = np.unique(np.linspace(0, len(y) - 1, min(len(y), PLOT_ROWS)).astype(np.int64))  # rows spread evenly
    return ShapeReport(n_shape=n_shape, n_sample=int(len(y)), best=best, best_share=best_share,
                       rwp_vs_radius=bins, feature_shap=feature_shap, r2_test=r2,
                       sample={"radius": radius[keep], "rwp": y[keep]}, seconds=time.perf_counter() - t0)
