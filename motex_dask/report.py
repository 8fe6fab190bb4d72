"""Step 4's files: atom contributions (CSV, extended XYZ, VESTA), the motif and the best candidates
refined again and written as structures, the PNG plots (drawn by `plots`) and summary.json.

Atoms that are not permuted have no SHAP value of their own. They are given the mean contribution
(and mean uncertainty) of the permuted atoms they are ligands of, since they stay in a motif exactly
when one of those does; an atom that is nobody's ligand gets 0. The `permuted` flag in the XYZ and
`source` in the CSV say which values are inherited.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import ase
import ase.io
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ase.data import atomic_numbers, covalent_radii
from matplotlib.colors import TwoSlopeNorm

from .settings import Campaign
from .data import PDFData
from .errors import InputError
from .explain import Contributions
from .fit import Engine, Status, make_engine
from .learn import TrainResult
from .plots import (CMAP, files_only, plot_beeswarm, plot_contributions, plot_fit, plot_learning_curve,
                    plot_predicted_vs_true, plot_rwp_vs_size, plot_shape_features, plot_structure, vmax_of)
from .shapes import ShapeReport
from .stability import plot as plot_stability
from .store import CampaignStore
from .structure import StartingModel

log = logging.getLogger("motex_dask")

#: Best candidates written when no campaign settings are given.
DEFAULT_BEST = 5


# ------------------------------------------------------------------------------- per-atom values

def model_values(model: StartingModel, contributions: Contributions) -> dict[str, np.ndarray]:
    """Contribution, uncertainty, rank and flags for every atom of the starting model."""
    if not np.array_equal(model.permuted, contributions.atom_index):
        raise InputError("the store's permuted atoms differ from the starting model's; give the structure and "
                         "permute settings the store was written with")
    n = len(model.symbols)
    contribution, uncertainty = np.zeros(n), np.zeros(n)
    contribution[model.permuted] = contributions.contribution
    uncertainty[model.permuted] = contributions.uncertainty
    parents = model.ligand_of.astype(np.float64)
    n_parents = parents.sum(axis=1)
    ligand = (n_parents > 0) & ~np.isin(np.arange(n), model.permuted)
    # Mean over the permuted atoms each ligand belongs to (undefined parents left out).
    c, u = np.nan_to_num(contributions.contribution), np.nan_to_num(contributions.uncertainty)
    w = parents * np.isfinite(contributions.contribution)
    wsum = np.maximum(w.sum(axis=1), 1.0)
    contribution[ligand] = (w @ c / wsum)[ligand]
    uncertainty[ligand] = (w @ u / wsum)[ligand]
    permuted = np.zeros(n, dtype=bool)
    permuted[model.permuted] = True
    rank = np.zeros(n, dtype=np.int64)
    rank[model.permuted] = contributions.rank
    source = np.where(permuted, "shap", np.where(ligand, "ligand", "none"))
    return {"contribution": contribution, "uncertainty": uncertainty, "permuted": permuted, "rank": rank,
            "source": source}


def atom_table(model: StartingModel, contributions: Contributions) -> pd.DataFrame:
    """atom_contributions.csv: one row per permuted atom, best (most negative) first."""
    table = contributions.table()
    xyz = model.positions[contributions.atom_index]
    table.insert(2, "x", xyz[:, 0])
    table.insert(3, "y", xyz[:, 1])
    table.insert(4, "z", xyz[:, 2])
    return table.sort_values("rank", kind="stable").reset_index(drop=True)


def write_extxyz(path: Path, model: StartingModel, values: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """The whole starting model with per-atom arrays contribution, uncertainty, rank, permuted."""
    atoms = ase.Atoms(symbols=list(model.symbols), positions=model.positions)
    for name in ("contribution", "uncertainty", "rank", "permuted"):
        atoms.new_array(name, values[name])
    atoms.info.update(info)
    ase.io.write(path, atoms, format="extxyz")
    return path


def _rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """0–255 RGB of each value on the diverging map, centred on 0; NaN: grey."""
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    rgb = (plt.get_cmap(CMAP)(norm(np.nan_to_num(values)))[:, :3] * 255).round().astype(int)
    rgb[~np.isfinite(values)] = 128
    return rgb


def write_vesta(path: Path, symbols: np.ndarray, positions: np.ndarray, values: np.ndarray, title: str) -> Path:
    """A VESTA file of the structure in a P1 box, each site coloured by its contribution."""
    margin = 2.0
    lo = positions.min(axis=0) - margin
    box = float((positions.max(axis=0) + margin - lo).max())
    frac = (positions - lo) / box
    rgb = _rgb(values, vmax_of(values))
    labels = [f"{s}{i}" for i, s in enumerate(symbols)]
    elements = list(dict.fromkeys(symbols))
    radius = {e: 0.5 * covalent_radii[atomic_numbers[e]] for e in elements}
    lines = ["#VESTA_FORMAT_VERSION 3.5.0", "", "", "CRYSTAL", "", "TITLE", title, "", "GROUP", "1 1 P 1",
             "SYMOP", " 0.000000  0.000000  0.000000  1  0  0   0  1  0   0  0  1   1",
             " -1.0 -1.0 -1.0  0 0 0  0 0 0  0 0 0", "TRANM 0",
             " 0.000000  0.000000  0.000000  1  0  0   0  1  0   0  0  1", "LTRANSL", " -1",
             " 0.000000  0.000000  0.000000  0.000000  0.000000  0.000000", "LORIENT", " -1   0   0   0   0",
             " 1.000000  0.000000  0.000000  1.000000  0.000000  0.000000",
             " 0.000000  0.000000  1.000000  0.000000  0.000000  1.000000", "LMATRIX",
             " 1.000000  0.000000  0.000000  0.000000", " 0.000000  1.000000  0.000000  0.000000",
             " 0.000000  0.000000  1.000000  0.000000", " 0.000000  0.000000  0.000000  1.000000",
             " 0.000000  0.000000  0.000000", "CELLP",
             f"  {box:.6f}  {box:.6f}  {box:.6f}  90.000000  90.000000  90.000000",
             "  0.000000   0.000000   0.000000   0.000000   0.000000   0.000000", "STRUC"]
    for i, (s, label, f) in enumerate(zip(symbols, labels, frac), start=1):
        lines += [f"  {i} {s} {label}  1.0000   {f[0]:.6f}   {f[1]:.6f}   {f[2]:.6f}    1a       1",
                  "                            0.000000   0.000000   0.000000  0.00"]
    lines += ["  0 0 0 0 0 0 0", "THERI 0"]
    lines += [f"  {i} {label}  1.000000" for i, label in enumerate(labels, start=1)]
    lines += ["  0 0 0", "SHAPE", "  0       0       0       0   0.000000  0   192   192   192   192", "BOUND",
              "       0        1         0        1         0        1", "  0   0   0   0  0", "SBOND"]
    pairs = [(a, b) for k, a in enumerate(elements) for b in elements[k:]]
    for k, (a, b) in enumerate(pairs, start=1):  # bonds up to 1.15 × the sum of covalent radii
        dmax = 1.15 * (covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
        lines.append(f"  {k}  {a}  {b}  0.00000  {dmax:.5f}  0  1  1  0  1  0.250  2.000 127 127 127")
    lines += ["  0 0 0 0", "SITET"]
    for i, (s, label, c) in enumerate(zip(symbols, labels, rgb), start=1):
        lines.append(f"  {i} {label}  {radius[s]:.4f} {c[0]} {c[1]} {c[2]} {c[0]} {c[1]} {c[2]} 204  0")
    lines += ["  0 0 0 0 0 0", "VECTR", " 0 0 0 0 0", "VECTT", " 0 0 0 0 0", "SPLAN", "  0   0   0   0",
              "LBLAT", " -1", "LBLSP", " -1", "DLATM", " -1", "DLBND", " -1", "DLPLY", " -1", "PLN2D",
              "  0   0   0   0", "ATOMT"]
    for k, e in enumerate(elements, start=1):
        lines.append(f"  {k} {e}  {radius[e]:.4f} 128 128 128 128 128 128 204")
    lines += ["  0 0 0 0 0 0", ""]
    path.write_text("\n".join(lines))
    return path


# ------------------------------------------------------------------------ motif and candidates

def _read_rows(store: CampaignStore, index: np.ndarray, frame: int | None = None) -> dict[str, np.ndarray]:
    """Mask and refined values of a few store rows (in the order given); of frame `frame` in a series."""
    order = np.argsort(index)
    back = np.argsort(order)
    rows = index[order]
    out = {"mask": store.array("mask").get_orthogonal_selection((rows, slice(None)))[back]}
    for name in ("n_atoms", *store.refined):
        arr = store.array(name)
        if arr.ndim == 2:  # a series' (candidate, frame) array
            out[name] = arr.get_orthogonal_selection((rows, frame))[back]
        else:
            out[name] = arr.get_coordinate_selection(rows)[back]
    return out


def refine_motifs(model: StartingModel, masks: np.ndarray, engine: Engine | None,
                  stored: dict[str, np.ndarray], refined: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Refine each mask's motif again with the fit engine; without one, keep the stored values.

    `refined`: rwp, scale and the fit parameters (the store's columns)."""
    keep = model.keep_atoms(masks)
    if engine is not None:
        res = engine.fit(keep)
        return {"keep": keep, **{k: res[k] for k in refined}, "status": res.status.astype(np.int64)}
    status = np.where(np.isfinite(stored["rwp"]), int(Status.OK), int(Status.PENDING))
    return {"keep": keep, **{k: stored[k] for k in refined}, "status": status}


def write_motif_xyz(path: Path, model: StartingModel, keep: np.ndarray, info: dict[str, Any]) -> Path:
    """Kept atoms; positions scaled by the refined zoom (isotropic expansion about the origin)."""
    zoom = info.get("zoom")
    scale = zoom if zoom is not None and math.isfinite(zoom) else 1.0
    atoms = ase.Atoms(symbols=list(model.symbols[keep]), positions=model.positions[keep] * scale)
    atoms.new_array("model_index", np.flatnonzero(keep))
    atoms.info.update({k: v for k, v in info.items() if v is not None})
    ase.io.write(path, atoms, format="extxyz")
    return path


def write_candidates(out: Path, model: StartingModel, data: PDFData | None, contributions: Contributions,
                     train_result: TrainResult, store: CampaignStore, engine: Engine | None,
                     files: dict[str, Path], frame: int | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The motif (permuted atoms with a negative contribution, plus ligands) and the store's
    lowest-R_wp candidates, refined together: best_candidates.csv rows, XYZ files, model curves.
    A series: the stored values of frame `frame` (the one `data` holds)."""
    best_index = train_result.best_candidates["index"]
    refined = store.refined
    stored = _read_rows(store, best_index, frame)
    masks = np.vstack([(contributions.contribution < 0)[None, :], stored["mask"]])
    refit = refine_motifs(model, masks, engine, {k: np.concatenate([[np.nan], stored[k]]) for k in refined},
                          refined)
    names = ["motif"] + [f"best_candidate_{k + 1:02d}" for k in range(len(best_index))]
    rows, curves = [], {}
    for k, name in enumerate(names):
        ok = refit["status"][k] == Status.OK
        info = {"name": name, "candidate": int(best_index[k - 1]) if k else -1,
                "rwp_store": float(stored["rwp"][k - 1]) if k else None,
                **{q: float(refit[q][k]) if ok else None for q in refined},
                "status": Status(int(refit["status"][k])).name, "refined": engine is not None,
                "n_atoms": int(refit["keep"][k].sum()), "n_permuted_kept": int(masks[k].sum()),
                "kept_permuted": " ".join(map(str, model.permuted[masks[k]]))}
        rows.append(info)
        if refit["keep"][k].any():
            files[name] = write_motif_xyz(out / f"{name}.xyz", model, refit["keep"][k],
                                           {q: v for q, v in info.items() if q != "kept_permuted"})
        if engine is not None and data is not None and ok:
            curves[name] = engine.model_pdf(refit["keep"][k], refit["scale"][k],
                                            {q: refit[q][k] for q in refined[2:]})
    candidates = pd.DataFrame(rows)
    files["best_candidates"] = out / "best_candidates.csv"
    candidates.to_csv(files["best_candidates"], index=False, float_format="%.8g")
    return candidates, curves


# --------------------------------------------------------------------------------------- summary

def _plain(obj: Any) -> Any:
    """JSON-ready: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n")
    return path


def write_outputs(output_dir: str | Path, model: StartingModel, data: PDFData | None, campaign: Campaign | None,
                  contributions: Contributions, train_result: TrainResult, store: CampaignStore | str, *,
                  engine: Engine | None = None, run: dict[str, Any] | None = None,
                  shapes: ShapeReport | None = None, stability: dict[str, Any] | None = None,
                  frame: int | None = None) -> dict[str, Path]:
    """Write every step-4 file into output_dir; returns {name: path}.

    `stability`: an adaptive campaign's round ledger (rows of stability.report, the rule, why it
    stopped, which rows were explained): plotted and added to summary.json.

    The motif and the store's lowest-R_wp candidates are refined again with `engine`, or with one
    made from `data` and `campaign.fit`; with neither, they keep their stored values. A series:
    `frame` is the frame `data`, `contributions` and `train_result` belong to.
    """
    t0 = time.perf_counter()
    store = CampaignStore.readonly(store)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if engine is None and data is not None and campaign is not None:
        engine = make_engine(model.symbols, model.positions, data.r, data.g, campaign.fit)
    files: dict[str, Path] = {}

    table = atom_table(model, contributions)
    values = model_values(model, contributions)
    files["atom_contributions"] = out / "atom_contributions.csv"
    table.to_csv(files["atom_contributions"], index=False, float_format="%.8g")
    rule = "non-permuted atoms: mean over the permuted atoms they are ligands of; 0 if none"
    files["contributions_xyz"] = write_extxyz(out / "atom_contributions.xyz", model, values,
                                              {"motex_contribution_rule": rule})
    files["vesta"] = write_vesta(out / "atom_contributions.vesta", model.symbols, model.positions,
                                 values["contribution"], "ML-MotEx atom contributions (blue: motif)")

    files["search"] = out / "hyperparameter_search.csv"
    pd.DataFrame(train_result.search or [{"trial": None, "state": "search off"}]).to_csv(files["search"], index=False)
    files["best_params"] = write_json(out / "best_params.json", {"params": train_result.params,
                                                                  "searched": train_result.best_params,
                                                                  "n_trees": train_result.n_trees})
    files["model"] = out / "xgboost_model.ubj"
    train_result.booster.save_model(files["model"])

    candidates, curves = write_candidates(out, model, data, contributions, train_result, store, engine, files,
                                          frame)
    if curves:
        files["fits"] = out / "fits.csv"
        pd.DataFrame({"r": data.r, "gobs": data.g, **{f"gcalc_{k}": v for k, v in curves.items()}}).to_csv(
            files["fits"], index=False, float_format="%.8g")
        shown = {k: curves[k] for k in list(curves)[:2]}  # the motif and the best candidate

    names_display = [f"{s}{i}" for s, i in zip(contributions.symbols, contributions.atom_index)] + ["motif size"]
    rows = candidates.to_dict("records")
    with files_only():
        if curves:
            files["fit_png"] = plot_fit(out / "motif_fit.png", data.r, data.g, shown)
        files["beeswarm_png"] = plot_beeswarm(out / "shap_beeswarm.png", contributions, names_display)
        files["rwp_vs_size_png"] = plot_rwp_vs_size(out / "rwp_vs_size.png", train_result, candidates.iloc[1:],
                                                    rows[0])
        files["predicted_vs_true_png"] = plot_predicted_vs_true(out / "predicted_vs_true.png", train_result)
        files["learning_curve_png"] = plot_learning_curve(out / "learning_curve.png", train_result)
        files["structure_png"] = plot_structure(out / "structure_contributions.png", model, values)
        files["contributions_png"] = plot_contributions(out / "atom_contributions.png", table)
        if shapes is not None:
            files["shape_png"] = plot_shape_features(out / "shape_features.png", shapes)

    if stability is not None:
        files["stability_png"] = plot_stability(out / "ranking_stability.png", stability["rows"], stability["rule"])
    top = table.head(10)
    summary = {
        "store": store.url,
        "counts": {**train_result.split, "explained": contributions.n_explained,
                   "bootstrap_replicates": contributions.bootstrap},
        "metrics": train_result.metrics,
        "model": {"n_trees": train_result.n_trees, "best_params": train_result.best_params,
                  "trials": len(train_result.search)},
        "shap_check": contributions.shap_check,
        "base_value": contributions.base_value,
        "size_effect": contributions.size_effect,
        "best_fits": contributions.best_fits,
        "motif": rows[0],
        "best_candidates": rows[1:],
        "top_atoms": top[["index", "element", "contribution", "uncertainty", "rank", "confidence"]].to_dict("records"),
        "undefined_atoms": contributions.undefined,
        "shape": shapes.summary() if shapes is not None else None,  # cookie-cutter candidates only
        "contribution_rule": rule,
        "settings": campaign.to_dict()["learn"] if campaign is not None else None,
        "seconds": {"train": train_result.seconds, "explain": contributions.seconds,
                    "report": time.perf_counter() - t0},
        "files": {k: p.name for k, p in files.items()},
        "adaptive": None if stability is None else {
            "stopped": stability["stopped"], "explained_rows": stability["explain"],
            "rule": dataclasses.asdict(stability["rule"]),
            "rounds": [{k: v for k, v in r.items() if k != "crossed"} for r in stability["rows"]]},
        "run": run or {},  # this run's fit stage, store and worker-memory figures (from campaign.py)
    }
    files["summary"] = out / "summary.json"
    summary["files"]["summary"] = "summary.json"
    write_json(files["summary"], summary)
    return files
