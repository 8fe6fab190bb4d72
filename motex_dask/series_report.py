"""A series' step-4 files: every frame's atom contributions side by side, and how the motif evolves.

frame_contributions.csv (one row per permuted atom per frame), frame_motifs.csv and motifs/<frame>.xyz
(each frame's motif, refined against that frame), a heatmap of contribution (atoms x frames), the
R_wp of each frame's motif and of its best stored candidate, and series.json for the HTML report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import PDFData
from .explain import Contributions
from .fit import Status, make_engine
from .plots import CMAP, savefig, vmax_of
from .report import write_json, write_motif_xyz
from .settings import Campaign
from .store import CampaignStore
from .structure import StartingModel


def frame_contributions(model: StartingModel, names: list[str], per_frame: list[Contributions]) -> pd.DataFrame:
    """frame, index, element, x, y, z, contribution, uncertainty: one row per permuted atom per frame."""
    parts = []
    for name, con in zip(names, per_frame):
        xyz = model.positions[con.atom_index]
        parts.append(pd.DataFrame({"frame": name, "index": con.atom_index, "element": con.symbols,
                                   "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                                   "contribution": con.contribution, "uncertainty": con.uncertainty}))
    return pd.concat(parts, ignore_index=True)


def refine_frame_motifs(model: StartingModel, frames: tuple[PDFData, ...], campaign: Campaign,
                        per_frame: list[Contributions], refined: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each frame's motif (atoms with a negative contribution, plus ligands) refined against its
    frame from the settings' start; `refined`: rwp, scale and the fit parameters (store columns)."""
    engine = make_engine(model.symbols, model.positions, frames[0].r, np.array([f.g for f in frames]), campaign.fit)
    keep = model.keep_atoms(np.array([c.contribution < 0 for c in per_frame]))
    out = {k: np.full(len(frames), np.nan) for k in refined}
    out["status"] = np.zeros(len(frames), dtype=np.int64)
    for f in range(len(frames)):
        res = engine.fit(keep[f:f + 1], frames=[f])
        for k in refined:
            out[k][f] = res[k][0, 0]
        out["status"][f] = res.status[0, 0]
    return {"keep": keep, **out}


def best_stored(store: CampaignStore) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the lowest stored R_wp of an OK candidate and that candidate's row (-1: none)."""
    rwp = np.where(store.array("status")[:] == Status.OK, store.array("rwp")[:], np.inf)
    row = np.argmin(rwp, axis=0)
    best = rwp[row, np.arange(rwp.shape[1])]
    return np.where(np.isfinite(best), best, np.nan), np.where(np.isfinite(best), row, -1)


def plot_heatmap(path: Path, table: pd.DataFrame, names: list[str]) -> Path:
    """Contribution of every permuted atom (rows) in every frame (columns); blue: motif."""
    grid = table.pivot(index="index", columns="frame", values="contribution")[names]
    values = grid.to_numpy()
    vmax = vmax_of(values.ravel())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2.5), max(4.0, 0.05 * len(grid) + 1.5)))
    im = ax.imshow(values, aspect="auto", cmap=CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=7)
    step = max(1, len(grid) // 40)
    ax.set_yticks(np.arange(0, len(grid), step), grid.index[::step], fontsize=6)
    ax.set_ylabel("atom (index in the starting model)")
    fig.colorbar(im, ax=ax, label="atom contribution to R_wp")
    ax.set_title("atom contributions per frame (blue: motif)", fontsize=9)
    return savefig(fig, path)


def plot_rwp(path: Path, motifs: pd.DataFrame) -> Path:
    """R_wp per frame of the frame's motif (refined) and of its best stored candidate."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(motifs) + 2.5), 3.6))
    x = np.arange(len(motifs))
    ax.plot(x, motifs["rwp"], "o-", label="motif (negative-contribution atoms), refined")
    ax.plot(x, motifs["best_candidate_rwp"], "s--", ms=4, label="best stored candidate")
    ax.set_xticks(x, motifs["frame"], rotation=90, fontsize=7)
    ax.set_ylabel("R_wp")
    ax.legend(fontsize=8)
    ax.set_title("goodness of fit per frame", fontsize=9)
    return savefig(fig, path)


def write_series_outputs(out: Path, model: StartingModel, frames: tuple[PDFData, ...], campaign: Campaign,
                         per_frame: list[Contributions], store: CampaignStore | str) -> dict[str, Path]:
    """Write the series files into `out`; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    store = CampaignStore.readonly(store)
    names = store.frame_names[: len(per_frame)]
    files: dict[str, Path] = {}
    table = frame_contributions(model, names, per_frame)
    files["frame_contributions"] = out / "frame_contributions.csv"
    table.to_csv(files["frame_contributions"], index=False, float_format="%.8g")

    refit = refine_frame_motifs(model, frames, campaign, per_frame, store.refined)
    best_rwp, best_row = best_stored(store)
    (out / "motifs").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    for f, name in enumerate(names):
        ok = refit["status"][f] == Status.OK
        info = {"frame": name, "n_atoms": int(refit["keep"][f].sum()),
                "n_permuted_kept": int((per_frame[f].contribution < 0).sum()),
                **{q: float(refit[q][f]) if ok else None for q in store.refined},
                "status": Status(int(refit["status"][f])).name,
                "best_candidate": int(best_row[f]), "best_candidate_rwp": float(best_rwp[f])}
        rows.append(info)
        if refit["keep"][f].any():
            write_motif_xyz(out / "motifs" / f"{Path(name).stem}.xyz", model, refit["keep"][f], info)
    motifs = pd.DataFrame(rows)
    files["frame_motifs"] = out / "frame_motifs.csv"
    motifs.to_csv(files["frame_motifs"], index=False, float_format="%.8g")
    files["motifs"] = out / "motifs"
    files["heatmap_png"] = plot_heatmap(out / "frame_contributions.png", table, names)
    files["frame_rwp_png"] = plot_rwp(out / "frame_rwp.png", motifs)
    files["series"] = write_json(out / "series.json", {"frames": names, "motifs": rows,
                                                        "files": {k: p.name for k, p in files.items()}})
    return files
