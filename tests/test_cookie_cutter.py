"""End to end with the cookie-cutter catalogue: real fits recover a known motif; shapes are recorded.

The C60 demo (workflows/data): one whole C60 at the origin inside 70 atoms of its neighbours, and
as data the PDF of that C60 alone. Spheres drawn anywhere in the model (`centre: bounding-sphere`,
the C60's centre is 3.5 Å from every atom) and thinned (keep_probability 0.8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
import zarr

from motex_dask.campaign import run_campaign
from motex_dask.catalogue import SHAPE_SPHERE
from motex_dask.fit import Status
from motex_dask.stability import truth_overlap
from motex_dask.store import CENTRE, SEMI_AXES

ROOT = Path(__file__).resolve().parents[1]
C60 = 60  # atoms 0-59 of c60_model.xyz are the motif


def test_cookie_cutter_recovers_c60_and_reports_its_shape(tmp_path):
    doc = {"structure": str(ROOT / "workflows" / "data" / "c60_model.xyz"),
           "data": str(ROOT / "workflows" / "data" / "c60_ideal.gr"), "permute": ["C"], "output": "results",
           "catalogue": {"size": 1500, "chunk_size": 500, "seed": 1, "strategy": "cookie-cutter",
                         "radius": [2.0, 8.0], "keep_probability": 0.8, "centre": "bounding-sphere"},
           "fit": {"rmin": 1.6, "rmax": 10.0, "qdamp": 0.04},
           "learn": {"tune": False, "bootstrap": 10}}
    path = tmp_path / "c60_cookie.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_campaign(path, progress=False)

    table = pd.read_csv(tmp_path / "results" / "atom_contributions.csv")
    assert truth_overlap(table["contribution"].to_numpy(), table["index"].to_numpy() < C60) >= 0.85  # chance: 0.46

    g = zarr.open_group(str(tmp_path / "results" / "store.zarr"), mode="r")
    kind = g["shape_kind"][:]
    centre = np.stack([g[name][:] for name in CENTRE], axis=1)
    axes = np.stack([g[name][:] for name in SEMI_AXES], axis=1)
    assert (kind == SHAPE_SPHERE).all() and np.isfinite(centre).all()
    assert (axes == axes[:, :1]).all() and axes.min() >= 2.0 and axes.max() <= 8.0
    # every mask lies inside its recorded sphere (thinned: a subset; an empty cut keeps the nearest atom)
    positions = np.loadtxt(ROOT / "workflows" / "data" / "c60_model.xyz", skiprows=2, usecols=(1, 2, 3))
    dist = np.linalg.norm(positions[None] - centre[:, None], axis=2)
    outside = g["mask"][:] & (dist > axes[:, :1])
    assert (outside.sum(axis=1) <= 1).all() and outside.sum() <= 0.05 * len(kind)

    shape = json.loads((tmp_path / "results" / "summary.json").read_text())["shape"]
    assert shape["shape_candidates"] == int((g["status"][:] == Status.OK).sum())
    best = shape["best"]  # the lowest-R_wp cut: around the C60 (radius 3.55 Å, neighbours from 6.5 Å)
    assert np.linalg.norm(best["centre"]) < 1.5 and 3.0 < best["radius"] < 7.0
    assert set(shape["feature_mean_abs_shap"]) == {"centre_x", "centre_y", "centre_z", "radius", "elongation",
                                                    "motif_size"}
    assert shape["shape_model_r2_test"] > 0.5
    assert (tmp_path / "results" / "shape_features.png").stat().st_size > 10_000
