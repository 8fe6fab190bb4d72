"""The example campaigns load and pass every input check; the demo inputs are reproducible."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from motex_dask.inputs import prepare
from motex_dask.campaign_file import load_campaign

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.yaml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_campaigns_are_valid(path):
    inputs = prepare(load_campaign(path))
    assert inputs.model.n_perm > 0
    assert inputs.data.r[0] >= inputs.campaign.fit.rmin - 1e-9 and inputs.data.r[-1] < inputs.campaign.fit.rmax


def test_c60_demo_model_is_a_buckyball_plus_neighbour_fragments():
    inputs = prepare(load_campaign(ROOT / "workflows" / "c60.yaml"))
    assert inputs.model.n_atoms == 130 and set(inputs.model.symbols) == {"C"}
    centre = inputs.model.positions[:60]
    radii = ((centre - centre.mean(axis=0)) ** 2).sum(axis=1) ** 0.5
    assert radii.max() - radii.min() < 0.01  # atoms 0-59: one whole C60 at the origin
    assert (((inputs.model.positions[60:]) ** 2).sum(axis=1) ** 0.5).min() > 6.5  # the rest: neighbours


def test_c60_demo_inputs_are_rebuilt_bit_identically(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_c60_demo.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("c60_model.xyz", "c60_ideal.gr"):
        assert (tmp_path / name).read_bytes() == (ROOT / "workflows" / "data" / name).read_bytes(), name


def test_nanoparticle_demo_inputs_are_rebuilt_bit_identically(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_nanoparticle_demo.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for demo in ("au_aggregate", "auag_rod"):
        for suffix in ("_model.xyz", "_motif.gr", "_truth.txt"):
            name = demo + suffix
            assert (tmp_path / name).read_bytes() == (ROOT / "workflows" / "data" / name).read_bytes(), name
    assert load_campaign(ROOT / "workflows" / "auag_rod.yaml").catalogue.strategy == "cookie-cutter"
    inputs = prepare(load_campaign(ROOT / "workflows" / "au_aggregate.yaml"))
    assert inputs.model.n_atoms >= 300
    truth = np.loadtxt(ROOT / "workflows" / "data" / "au_aggregate_truth.txt", dtype=int)
    assert 80 <= len(truth) <= 150
    centre = inputs.model.positions[truth].mean(axis=0)
    assert np.linalg.norm(centre - inputs.model.positions.mean(axis=0)) > 3.0  # not centred


def test_series_demo_inputs_are_rebuilt_bit_identically(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_series_demo.py"), "--out",
                    str(tmp_path / "au55_series")], check=True, capture_output=True)
    data = ROOT / "workflows" / "data"
    names = ["au55_model.xyz"] + [f"au55_series/{p.name}" for p in (data / "au55_series").iterdir()]
    assert len(names) == 14  # model, 12 frames, truth.json
    for name in names:
        assert (tmp_path / name).read_bytes() == (data / name).read_bytes(), name


def test_series_demo_check_counts_each_frames_lowest_contributions(tmp_path):
    truth = {"frame_1.gr": [0, 1], "frame_2.gr": [2, 3]}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    rows = [(f, i, c) for f, cs in (("frame_1.gr", (-2, -1, 1, 2)), ("frame_2.gr", (-1, 1, -2, 2)))
            for i, c in enumerate(cs)]  # frame_2: atom 0 ranks above true atom 3
    pd.DataFrame(rows, columns=["frame", "index", "contribution"]).to_csv(tmp_path / "frame_contributions.csv")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_series_demo.py"), "--results", str(tmp_path),
                          "--truth", str(tmp_path / "truth.json"), "--json"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    rows = json.loads(run.stdout.splitlines()[-1])
    assert [(r["frame"], r["overlap"], r["negative"]) for r in rows] == [("frame_1.gr", 1.0, 2), ("frame_2.gr", 0.5, 2)]
    assert rows[0]["gap"] == 2.0 and rows[1]["gap"] == -3.0
