"""Step 4's PNG plots: the SHAP beeswarm, R_wp against size, the model's predictions and learning curve,
the starting model coloured by contribution, the contributions per atom, the motif's fit and the
shape features. Each takes its data and a path and returns the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

from .explain import Contributions
from .learn import TrainResult
from .shapes import ShapeReport
from .structure import StartingModel

#: Colour map of contributions: blue = negative (motif), red = positive (better removed).
CMAP = "coolwarm"


def vmax_of(values: np.ndarray) -> float:
    """The largest |value| (finite ones; 1 when there are none): a colour scale symmetric about 0."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


@contextmanager
def files_only() -> Iterator[None]:
    """pyplot on Agg while the plots are written (clusters and CI have no display, and a desktop
    must not open windows); the caller's backend is back afterwards."""
    before = matplotlib.get_backend()
    plt.switch_backend("agg")
    try:
        yield
    finally:
        plt.switch_backend(before)


def savefig(fig: plt.Figure, path: Path) -> Path:
    """Write the figure as a PNG (every plot at one resolution) and free it."""
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_beeswarm(path: Path, contributions: Contributions, names: list[str], max_display: int = 20) -> Path:
    """shap's beeswarm of the sampled candidates' SHAP values (atoms and motif size)."""
    import shap

    s = contributions.shap_sample
    expl = shap.Explanation(values=s["shap"][:, :-1], base_values=s["shap"][:, -1], data=s["X"],
                            feature_names=names)
    shap.plots.beeswarm(expl, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle(f"SHAP values of {len(s['index'])} sampled candidates (R_wp)", fontsize=10)
    return savefig(fig, path)


def plot_rwp_vs_size(path: Path, trained: TrainResult, best: pd.DataFrame, motif: dict[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    s = trained.store_sample
    ax.scatter(s["motif_size"], s["rwp"], s=4, alpha=0.3, color="0.4", lw=0,
               label=f"{len(s['rwp'])} sampled candidates")
    ax.scatter(best["n_atoms"], best["rwp_store"], s=30, color="tab:orange", label="lowest R_wp")
    if motif["rwp"] is not None and np.isfinite(motif["rwp"]):
        ax.scatter([motif["n_atoms"]], [motif["rwp"]], s=120, marker="*", color="tab:blue", zorder=3,
                   label="motif (contributions < 0)")
    ax.set_xlabel("motif size (atoms)")
    ax.set_ylabel("R_wp")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def plot_predicted_vs_true(path: Path, trained: TrainResult) -> Path:
    t, m = trained.test_sample, trained.metrics["test"]
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.scatter(t["rwp"], t["predicted"], s=5, alpha=0.4, lw=0)
    lo, hi = np.nanmin([t["rwp"].min(), t["predicted"].min()]), np.nanmax([t["rwp"].max(), t["predicted"].max()])
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel("R_wp (fit)")
    ax.set_ylabel("R_wp (model)")
    ax.set_title(f"test set: n = {m['n']}, R² = {m['r2']:.4f}\nMSE = {m['mse']:.3g}, MAE = {m['mae']:.3g}",
                 fontsize=9)
    return savefig(fig, path)


def plot_learning_curve(path: Path, trained: TrainResult) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, metrics in trained.history.items():
        ax.plot(np.arange(1, len(metrics["rmse"]) + 1), metrics["rmse"], label=name)
    ax.axvline(trained.n_trees, color="k", ls=":", lw=0.8, label=f"best round {trained.n_trees}")
    ax.set_yscale("log")
    ax.set_xlabel("boosting round")
    ax.set_ylabel("RMSE of R_wp")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def plot_structure(path: Path, model: StartingModel, values: dict[str, np.ndarray]) -> Path:
    """The starting model in 3D, coloured by contribution (inherited values drawn smaller)."""
    c = values["contribution"]
    vmax = vmax_of(c)
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    p = model.positions
    perm = values["permuted"]
    for sel, size, edge in ((~perm, 25, "0.3"), (perm, 70, "k")):
        sc = ax.scatter(p[sel, 0], p[sel, 1], p[sel, 2], c=np.nan_to_num(c[sel]), cmap=CMAP, norm=norm, s=size,
                        edgecolors=edge, linewidths=0.4, depthshade=False)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="atom contribution to R_wp")
    ax.set_title("blue: motif atoms (large: permuted, small: ligands)", fontsize=9)
    ax.set_axis_off()
    return savefig(fig, path)


def plot_contributions(path: Path, table: pd.DataFrame, max_atoms: int = 60) -> Path:
    """Contribution ± uncertainty per atom, best first."""
    t = table.head(max_atoms)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.16 * len(t) + 2), 3.8))
    colors = np.where(t["contribution"] < 0, "tab:blue", "tab:red")
    ax.bar(np.arange(len(t)), t["contribution"], yerr=t["uncertainty"], color=colors, capsize=1.5)
    ax.set_xticks(np.arange(len(t)), [f"{e}{i}" for e, i in zip(t["element"], t["index"])], rotation=90,
                  fontsize=6)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("atom contribution (R_wp)")
    shown = f"the {len(t)} best of {len(table)}" if len(t) < len(table) else f"all {len(t)}"
    ax.set_title(f"atom contributions, {shown} permuted atoms", fontsize=9)
    return savefig(fig, path)


def plot_fit(path: Path, r: np.ndarray, gobs: np.ndarray, curves: dict[str, np.ndarray]) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(r, gobs, "k.", ms=2, label="data")
    offset = gobs.min() - 0.1 * np.ptp(gobs)
    for name, g in curves.items():
        line, = ax.plot(r, g, lw=1, label=name)
        ax.plot(r, gobs - g + offset, lw=0.7, color=line.get_color(), alpha=0.7, label=f"data − {name} (offset)")
        offset -= 0.3 * np.ptp(gobs)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("G(r)")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def plot_shape_features(path: Path, shapes: ShapeReport) -> Path:
    """R_wp against the shape's radius (sample, binned minimum and median) and the shape features' mean |SHAP|."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    left.scatter(shapes.sample["radius"], shapes.sample["rwp"], s=3, alpha=0.25, color="0.5", label="shape candidates")
    bins = shapes.rwp_vs_radius
    mid = 0.5 * (np.asarray(bins["radius_low"]) + np.asarray(bins["radius_high"]))
    left.plot(mid, bins["rwp_min"], "o-", color="C0", label="lowest in bin")
    left.plot(mid, bins["rwp_median"], "s--", color="C1", label="median in bin")
    best = shapes.best
    left.plot([best["radius"]], [best["rwp"]], "*", ms=14, color="C3",
              label=f"best: r = {best['radius']:.2f} Å, R_wp = {best['rwp']:.4f}")
    left.set_xlabel("radius (Å; ellipsoids: geometric mean of the semi-axes)")
    left.set_ylabel("R_wp")
    left.legend(fontsize=8)
    left.set_title("R_wp against the shape's radius")
    names = list(shapes.feature_shap)
    right.barh(names, [shapes.feature_shap[n] for n in names], color="C2")
    right.invert_yaxis()
    r2 = f"test R² {shapes.r2_test:.3f}" if shapes.r2_test is not None else "too few rows for a model"
    right.set_xlabel("mean |SHAP| (R_wp)")
    right.set_title(f"shape features ({r2})")
    fig.tight_layout()
    return savefig(fig, path)
