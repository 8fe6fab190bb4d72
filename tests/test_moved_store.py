"""`motex explain` and `motex report` work on the store they are given, also a copied or moved one
(a store copied from a cluster to a laptop): outputs go beside it, and the campaign folder it came
from is never written to."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_fixtures import write_campaign

CLI = [sys.executable, "-m", "motex_dask.cli", "-q"]
LEARN = {"tune": False, "bootstrap": 5, "best_candidates": 2, "max_rounds": 100}
PROFILE = 'kind: local\nlocal: {n-workers: 1, threads-per-worker: 2, dashboard-address: "127.0.0.1:0"}\n'


def motex(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """A campaign folder whose store holds finished fits (no outputs yet)."""
    folder = tmp_path_factory.mktemp("cluster") / "campaign"
    write_campaign(folder, size=300, chunk_size=100, learn=LEARN, cluster="one.yaml")
    (folder / "one.yaml").write_text(PROFILE)
    motex(["run", "campaign.yaml", "--fits-only"], folder)
    return folder


@pytest.mark.timeout(300)
def test_explain_and_report_of_a_copied_store_write_beside_the_copy(campaign, tmp_path):
    laptop = tmp_path / "laptop"
    shutil.copytree(campaign / "results" / "store.zarr", laptop / "copy.zarr")
    before = snapshot(campaign)
    done = motex(["explain", str(laptop / "copy.zarr"), "--cluster", str(campaign / "one.yaml")], tmp_path)
    assert (laptop / "atom_contributions.csv").is_file() and (laptop / "summary.json").is_file(), done.stdout
    assert str(laptop) in done.stdout and str(campaign) not in done.stdout
    report = motex(["report", str(laptop / "copy.zarr")], tmp_path)
    assert report.stdout.strip() == str(laptop / "report.html")
    assert "copy.zarr" in (laptop / "report.html").read_text()
    assert snapshot(campaign) == before, "the original campaign folder was written to"


@pytest.mark.timeout(300)
def test_a_campaign_folder_moved_whole_finds_its_inputs_beside_its_store(campaign, tmp_path):
    """Structure and data are found at the same place relative to the store when the campaign
    folder moved (the recorded absolute paths are gone)."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(campaign, moved)
    hidden = campaign.with_name("hidden")
    campaign.rename(hidden)  # the recorded paths no longer exist
    try:
        motex(["explain", str(moved / "results" / "store.zarr"), "--cluster", str(moved / "one.yaml")], tmp_path)
    finally:
        hidden.rename(campaign)
    assert (moved / "results" / "atom_contributions.csv").is_file()
    assert not (campaign / "results" / "atom_contributions.csv").exists()
