"""Adaptive campaigns end to end on a small real case: a 24-atom C60 patch whose data are the PDF of
its 16 atoms nearest to atom 0 (a compact cap). The round ledger, the stopping rule, and a run
killed inside a round."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest
import yaml
import zarr

from campaign_fixtures import PDF_SETTINGS, assert_same_store
from motex_dask.campaign import run_campaign, stability_store
from motex_dask.campaign_file import load_campaign
from motex_dask.pdf import pdf_from_atoms, write_gr
from motex_dask.proposal import BLIND, MUTATION, SHAPE
from motex_dask.stability import Ranking, truth_overlap
from motex_dask.store import CampaignStore, format_status, status_report
from motex_dask.store.layout import ATTR

N_TRUTH = 16
PROFILE = """kind: local
local:
  n-workers: 2
  threads-per-worker: 1
  dashboard-address: "127.0.0.1:0"
"""


def truth(atoms: ase.Atoms) -> np.ndarray:
    """The true motif: the atoms nearest to atom 0."""
    return np.argsort(atoms.get_all_distances()[0], kind="stable")[:N_TRUTH]


def write_case(folder: Path, max_fits: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    atoms = ase.build.molecule("C60")[:24]
    ase.io.write(folder / "model.xyz", atoms, format="xyz")
    motif = atoms[truth(atoms)]
    r, g = pdf_from_atoms(motif.get_chemical_symbols(), motif.get_positions(), **PDF_SETTINGS)
    write_gr(folder / "data.gr", r, g, PDF_SETTINGS)
    (folder / "cluster_profiles").mkdir(exist_ok=True)
    (folder / "cluster_profiles" / "two.yaml").write_text(PROFILE)
    doc = {"structure": "model.xyz", "data": "data.gr", "permute": ["C"], "output": "results", "cluster": "two",
           "catalogue": {"size": 6000, "chunk_size": 200, "seed": 5, "strategy": "adaptive",
                         "adaptive": {"round_size": 400, "tolerance": 0.1, "patience": 2, "max_fits": max_fits,
                                      # every kind of row, so the resume test covers each
                                      "mutation_share": 0.3, "shape_share": 0.2, "mutate": "boundary"}},
           "fit": {"rmin": 1.0, "rmax": 8.0},
           "learn": {"tune": False, "max_rounds": 150, "bootstrap": 20, "explain_rows": 0}}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An adaptive campaign run until its own rule stopped it."""
    path = write_case(tmp_path_factory.mktemp("adaptive"))
    run_campaign(path, progress=False)
    return path


def test_the_stopping_rule_stops_a_real_campaign_with_the_motif_found(finished):
    campaign = load_campaign(finished)
    store = CampaignStore.open_readonly(campaign.store_path)
    assert store.attrs["stopped"] == "stable"
    assert store.size < campaign.catalogue.size  # it stopped before drawing the whole catalogue
    last = Ranking.from_dict(store.rounds[-1]["ranking"])
    true = truth(ase.io.read(finished.parent / "model.xyz"))
    assert truth_overlap(last.contribution, true) >= 0.75  # chance: 16/24
    summary = json.loads((campaign.output / "summary.json").read_text())
    assert summary["adaptive"]["stopped"] == "stable" and summary["adaptive"]["rounds"][-1]["streak"] >= 2
    assert (campaign.output / "ranking_stability.png").stat().st_size > 0


def test_the_round_ledger_matches_the_rows(finished):
    store = CampaignStore.open_readonly(load_campaign(finished).store_path)
    rounds = store.rounds
    assert [r["plan"]["round"] for r in rounds] == list(range(len(rounds)))
    assert rounds[0]["plan"]["start"] == 0 and rounds[-1]["plan"]["stop"] == store.size
    assert all(a["plan"]["stop"] == b["plan"]["start"] for a, b in zip(rounds, rounds[1:]))
    row_round, origin = store.array("round")[:], store.array("origin")[:]
    for r in rounds:
        plan = r["plan"]
        assert (row_round[plan["start"]:plan["stop"]] == plan["round"]).all()
        assert "ranking" in r
    first = rounds[0]["plan"]
    assert (origin[:first["stop"]] == BLIND).all()
    later = origin[first["stop"]:]
    assert 0.05 < (later == BLIND).mean() < 0.4  # blind_share 0.2 of every later round
    assert 0.05 < (later == SHAPE).mean() < 0.4  # shape_share 0.2: sphere cuts around the elite ...
    shape_kind = store.array("shape_kind")[:]
    assert (shape_kind[origin == SHAPE] == 1).all() and (shape_kind[origin == MUTATION] == 0).all()
    plan = rounds[-1]["plan"]  # ... cut where the ledger says
    assert plan["mutate"] == "boundary" and len(plan["centres"]) == len(plan["radii"]) == len(plan["elites"])
    fits = [r["ranking"]["fits"] for r in rounds]
    assert fits == sorted(fits)


def test_a_run_killed_inside_a_round_resumes_to_the_same_store(finished, tmp_path):
    """The last round's chunks half lost and its ranking not yet saved: what a kill leaves."""
    campaign = load_campaign(finished)
    copy = write_case(tmp_path)
    shutil.copytree(campaign.store_path, load_campaign(copy).store_path)
    url = load_campaign(copy).store_path
    group = zarr.open_group(url, mode="r+")
    attrs = dict(group.attrs[ATTR])
    rounds = attrs["rounds"]
    plan = rounds[-1]["plan"]
    rounds[-1] = {"plan": plan}
    group.attrs[ATTR] = {**attrs, "rounds": rounds, "stopped": None}
    lost = plan["start"] // 200 + 1  # the second chunk of the last round
    group["chunk_done"][lost] = 0
    group["chunk_done_snapshot"][lost] = 0
    group["rwp"][lost * 200:(lost + 1) * 200] = np.nan

    # what `motex status` says of the killed run: the last round not ranked, the campaign not stopped
    killed = status_report(url)
    assert killed["rounds"] == {"planned": len(rounds), "ranked": len(rounds) - 1, "stopped": None,
                                "max_candidates": campaign.catalogue.size}
    text = format_status(killed)
    assert "not stopped yet (run `motex run CAMPAIGN` again to go on)" in text and "complete" not in text

    run_campaign(copy, progress=False)
    assert_same_store(campaign.store_path, url)
    done = status_report(url)["rounds"]
    assert done["ranked"] == done["planned"] == len(rounds) and done["stopped"] == "stable"
    assert "stopped: the ranking is stable" in format_status(status_report(url))
    resumed = CampaignStore.open_readonly(url)
    assert resumed.attrs["stopped"] == "stable"
    before = Ranking.from_dict(CampaignStore.open_readonly(campaign.store_path).rounds[-1]["ranking"])
    after = Ranking.from_dict(resumed.rounds[-1]["ranking"])
    assert np.array_equal(before.rank, after.rank)


def test_the_stability_report_of_a_blind_store_learns_on_growing_prefixes(tmp_path):
    path = write_case(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["catalogue"] = {"size": 1200, "chunk_size": 200, "seed": 5}  # uniform-size, no rounds
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run_campaign(path, fits_only=True, progress=False)
    store = CampaignStore.open_readonly(load_campaign(path).store_path)
    result = stability_store(store, steps=2, output=tmp_path / "stability.png")
    assert result["source"] == "2 growing prefixes" and not store.rounds
    first, second = result["rows"]
    assert first["fits"] < second["fits"] <= 1200
    assert second["tau"] is not None and -1 <= second["tau"] <= 1 and second["crossings"] >= 0
    assert (tmp_path / "stability.png").stat().st_size > 0
