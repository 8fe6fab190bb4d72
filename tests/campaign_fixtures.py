"""Tiny campaigns for store and fit-stage tests.

The model is a patch of C60 (24 atoms: fast fits, and sizes 1 give EMPTY candidates); the data is
its own PDF, so fits converge. Everything is written under a test's tmp_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase.build
import ase.io
import numpy as np
import pytest
import yaml

from motex_dask.inputs import fit_problem, prepare
from motex_dask.campaign_file import load_campaign
from motex_dask.graph import run_fits
from motex_dask.pdf import pdf_from_atoms, write_gr
from motex_dask.store import TIMING_ARRAYS, CampaignStore

PDF_SETTINGS = dict(qmin=0.7, qmax=20.0, qdamp=0.04, qbroad=0.01, rmin=0.5, rmax=12.0, rstep=0.01,
                    uiso=0.005, zoom=1.0, radiation="xray")


def write_inputs(folder: Path, n_atoms: int = 24, n_oxygen: int = 0) -> tuple[Path, Path]:
    """A C60 patch (the first n_atoms, the last n_oxygen of them relabelled O) and its PDF."""
    folder.mkdir(parents=True, exist_ok=True)
    atoms = ase.build.molecule("C60")[:n_atoms]
    symbols = atoms.get_chemical_symbols()
    for i in range(n_atoms - n_oxygen, n_atoms):
        symbols[i] = "O"
    atoms.set_chemical_symbols(symbols)
    structure = folder / "model.xyz"
    ase.io.write(structure, atoms, format="xyz")
    r, g = pdf_from_atoms(atoms.get_chemical_symbols(), atoms.get_positions(), **PDF_SETTINGS)
    data = folder / "data.gr"
    write_gr(data, r, g, {"structure": structure.name, **PDF_SETTINGS})
    return structure, data


def write_campaign(folder: Path, size: int = 1200, chunk_size: int = 150, name: str = "campaign.yaml",
                   permute: tuple[str, ...] = ("C",), n_oxygen: int = 0, store: str | None = None,
                   **sections: dict[str, Any]) -> Path:
    """A campaign file in `folder` (inputs next to it); `sections` override/add YAML sections."""
    structure, data = write_inputs(folder, n_oxygen=n_oxygen)
    doc: dict[str, Any] = {
        "structure": structure.name,
        "data": data.name,
        "permute": list(permute),
        "output": "results",
        "catalogue": {"size": size, "chunk_size": chunk_size, "seed": 7},
        "fit": {"rmin": 1.0, "rmax": 8.0},
    }
    if store is not None:
        doc["store"] = store
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_frames(folder: Path, n_frames: int, first: int = 1) -> list[Path]:
    """Frames first..first+n_frames-1 of a tiny series: the C60 patch shrinking one atom a frame,
    expanding a little; frame_<k>.gr (natural order differs from the names' text order past 9)."""
    folder.mkdir(parents=True, exist_ok=True)
    atoms = ase.build.molecule("C60")[:24]
    paths = []
    for k in range(first, first + n_frames):
        n = max(24 - (k - 1), 8)
        r, g = pdf_from_atoms(atoms.get_chemical_symbols()[:n], atoms.get_positions()[:n],
                              **{**PDF_SETTINGS, "zoom": 1.0 + 0.001 * k})
        paths.append(folder / f"frame_{k}.gr")
        write_gr(paths[-1], r, g, {"frame": k})
    return paths


def write_series_campaign(folder: Path, n_frames: int, size: int = 600, chunk_size: int = 100,
                          frames_per_task: int = 4, **sections: dict[str, Any]) -> Path:
    """A series campaign over frames/frame_*.gr (a glob) with n_frames tiny frames."""
    path = write_campaign(folder, size=size, chunk_size=chunk_size, **sections)
    write_frames(folder / "frames", n_frames)
    doc = yaml.safe_load(path.read_text())
    doc.update(data="frames/frame_*.gr", frames_per_task=frames_per_task)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_fit_stage(campaign_path: Path, client, progress: bool = False) -> dict[str, Any]:
    """Open (create/resume/extend) the campaign's store and run the fit stage on `client`."""
    inputs = prepare(load_campaign(campaign_path))
    campaign = inputs.campaign
    with CampaignStore.open_for_run(campaign.store_path, campaign, inputs.model, inputs.data,
                                    inputs.frames) as store:
        return run_fits(client, store, fit_problem(inputs, store.fingerprint), progress=progress)


def store_arrays(url: str) -> dict[str, np.ndarray]:
    """Every result array of a store (not the run-time records), read with plain zarr."""
    import zarr

    group = zarr.open_group(url, mode="r")
    return {name: group[name][:] for name in sorted(group.array_keys()) if name not in TIMING_ARRAYS}


def assert_same_store(a: str, b: str) -> None:
    """Two stores hold bit-identical results (NaN where the other has NaN)."""
    left, right = store_arrays(a), store_arrays(b)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].shape == right[name].shape, name
        assert np.array_equal(left[name], right[name], equal_nan=left[name].dtype.kind == "f"), name


def local_client(n_workers: int = 2):
    """A LocalCluster of single-threaded worker processes (dashboard on a free port)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0")
    return Client(cluster)


@pytest.fixture(scope="module")
def client():
    """A two-worker LocalCluster shared by one test module (import this fixture by name)."""
    with local_client() as c:
        yield c
        c.cluster.close()
