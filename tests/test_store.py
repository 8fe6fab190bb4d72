"""The campaign store: layout, fingerprint refusal, lock, extension, failures, torn ledger, status."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import xarray as xr
import zarr

from campaign_fixtures import (assert_same_store, client, run_fit_stage, store_arrays,  # noqa: F401 (fixture)
                               write_campaign)
from motex_dask.store import layout
from motex_dask.store import lock as run_lock
from motex_dask.inputs import prepare
from motex_dask.catalogue import chunk_candidates, chunk_masks
from motex_dask.campaign_file import load_campaign
from motex_dask.errors import InputError
from motex_dask.fit import Status
from motex_dask.store import LOCK_KEY, SNAPSHOT, CampaignStore, format_status, shape_columns, status_report


@pytest.fixture(scope="module")
def finished(tmp_path_factory, client) -> tuple[Path, str, dict]:
    """A small finished campaign: (campaign file, store url, fit summary)."""
    path = write_campaign(tmp_path_factory.mktemp("finished"), size=1000, chunk_size=150)
    summary = run_fit_stage(path, client)
    return path, load_campaign(path).store_path, summary


def open_inputs(path: Path):
    inputs = prepare(load_campaign(path))
    return inputs.campaign, inputs.model, inputs.data


def snapshot(url: str) -> dict[str, bytes]:
    """Every file of a local store, by relative path."""
    root = Path(url)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------- layout

def test_layout_is_readable_with_zarr_and_xarray(finished):
    path, url, summary = finished
    campaign, model, data = open_inputs(path)
    group = zarr.open_group(url, mode="r")
    attrs = group.attrs["motex_dask"]
    assert attrs["size"] == 1000 and attrs["chunk_size"] == 150 and attrs["n_chunks"] == 7
    assert set(attrs["fingerprint_parts"]) == {"model", "data", "settings", "version"}
    assert attrs["fingerprint"] == layout.combine(layout.fingerprint_parts(campaign, model, data))
    assert attrs["settings"] == {**campaign.to_dict(), "campaign_file": str(campaign.path)}
    assert attrs["result_settings"] == campaign.result_settings()
    assert attrs["status_codes"]["DUPLICATE"] == Status.DUPLICATE
    for name in ("rwp", "status", "mask", "chunk_done"):
        assert group[name].metadata.chunk_grid.chunk_shape[0] == (1 if name == "chunk_done" else 150)
        assert group[name].metadata.codecs[0].__class__.__name__ != "ShardingCodec"

    for name in ("duplicate_of", "rwp", "chunk_done", "chunk_seconds", "chunk_end"):  # one file per task
        assert sorted(p.name for p in (Path(url) / name / "c").iterdir()) == [str(c) for c in range(7)], name

    ds = xr.open_zarr(url, consolidated=False)
    assert ds.sizes == {"candidate": 1000, "atom": model.n_perm, "chunk": 7, "byte": 64}
    assert bytes(ds["chunk_host"].values[0]).rstrip(b"\0").decode() == socket.gethostname()
    assert ds["mask"].dims == ("candidate", "atom") and ds["chunk_done"].dims == ("chunk",)
    assert ds["status"].dtype == np.int8 and ds["duplicate_of"].dtype == np.int64
    assert np.array_equal(ds["atom_index"].values, model.permuted)
    arrays = store_arrays(url)
    assert np.array_equal(ds["duplicate_of"].values, arrays["duplicate_of"])  # -1 survives xarray


def test_rows_follow_the_layout_rules(finished):
    path, url, summary = finished
    campaign, model, _ = open_inputs(path)
    a = store_arrays(url)
    masks = np.concatenate([chunk_masks(campaign.catalogue, model.permuted_positions, c) for c in range(7)])
    assert np.array_equal(a["mask"], masks)
    assert np.array_equal(a["n_atoms"], model.motif_size(masks))
    assert np.array_equal(a["chunk_done"], [150] * 6 + [100])
    status = a["status"]
    assert not np.any(status == Status.PENDING)
    ok = status == Status.OK
    for name in ("rwp", "scale", "zoom", "uiso"):
        assert np.all(np.isfinite(a[name][ok]))
    # Duplicates point at the first row with the same mask, which is itself fitted.
    dup = np.flatnonzero(status == Status.DUPLICATE)
    first = a["duplicate_of"][dup]
    assert dup.size > 0 and np.all(first < dup)
    assert np.array_equal(a["mask"][dup], a["mask"][first])
    assert not np.any(status[first] == Status.DUPLICATE)
    assert np.all(a["duplicate_of"][status != Status.DUPLICATE] == -1)
    assert np.all(np.isnan(a["rwp"][dup]))
    # One-atom motifs have no pair: recorded as EMPTY (rwp 1, scale 0), the campaign went on.
    empty = status == Status.EMPTY
    assert empty.any() and np.all(a["n_atoms"][empty] == 1)
    assert np.all(a["rwp"][empty] == 1.0) and np.all(a["scale"][empty] == 0.0)
    assert np.all(np.isnan(a["zoom"][empty]))
    assert summary["failed"] == {"empty": int(empty.sum())}
    assert summary["fits"] == int(ok.sum() + empty.sum())
    assert summary["duplicates"] == dup.size


def test_status_report_of_a_finished_store(finished):
    _, url, _ = finished
    a = store_arrays(url)
    report = status_report(url)
    assert report["chunks_done"] == report["chunks_total"] == 7
    assert report["fits_done"] == report["fits_total"] == 1000
    assert report["by_status"]["ok"] == int(np.sum(a["status"] == Status.OK))
    assert report["failed"] == report["by_status"]["empty"] > 0
    assert report["duplicates"] == int(np.sum(a["status"] == Status.DUPLICATE))
    best = int(np.nanargmin(np.where(a["status"] == Status.OK, a["rwp"], np.nan)))
    assert report["best"] == {"row": best, **{k: float(a[k][best]) for k in ("rwp", "scale", "zoom", "uiso")}}
    assert report["running"] is None and report["work_left_s"] == 0.0
    # Every chunk was fitted by a worker process of this machine (no SLURM here).
    assert report["hosts"] == {socket.gethostname(): 7}
    json.dumps(report)
    text = format_status(report)
    assert "7 / 7 done" in text and "complete" in text and f"candidate {best}" in text
    assert f"hosts      {socket.gethostname()} 7 (chunks fitted)" in text
    cli = subprocess.run([sys.executable, "-m", "motex_dask.cli", "status", url, "--json"], capture_output=True,
                         text=True, check=True)
    assert json.loads(cli.stdout) == {**report, "running": None}
    # the campaign file that wrote the store names it too (what a user types after `motex run`)
    path = finished[0]
    by_file = subprocess.run([sys.executable, "-m", "motex_dask.cli", "status", str(path), "--json"],
                             capture_output=True, text=True, check=True)
    assert json.loads(by_file.stdout) == json.loads(cli.stdout)


def test_a_complete_store_has_nothing_to_do(finished, client):
    path, url, _ = finished
    before = store_arrays(url)
    seconds = zarr.open_group(url, mode="r")["chunk_seconds"][:]
    summary = run_fit_stage(path, client)
    assert summary["chunks"] == 0 and summary["fits"] == 0
    assert np.array_equal(zarr.open_group(url, mode="r")["chunk_seconds"][:], seconds)
    after = store_arrays(url)
    for name, values in before.items():
        assert np.array_equal(after[name], values, equal_nan=values.dtype.kind == "f"), name


# ------------------------------------------------------------------------------ torn ledger

def test_a_torn_ledger_entry_reads_as_not_done_and_is_redone(finished, client, tmp_path):
    path, url, _ = finished
    copy = tmp_path / "store.zarr"
    shutil.copytree(url, copy)
    campaign_file = write_campaign(tmp_path, size=1000, chunk_size=150, store=str(copy))
    # Chunk 2: its ledger file cut in the middle of a write; chunk 5: data rewritten with garbage
    # and the ledger entry deleted, as a task killed between data and ledger leaves it.
    ledger = copy / "chunk_done" / "c" / "2"
    ledger.write_bytes(ledger.read_bytes()[:3])
    (copy / "chunk_done" / "c" / "5").unlink()
    group = zarr.open_group(str(copy), mode="r+")
    group["rwp"][750:900] = 42.0
    group[SNAPSHOT][[2, 5]] = 0  # the client never saw those two tasks return
    (copy / "rwp" / "c" / "0.deadbeef.partial").write_bytes(b"left by a killed write")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(str(copy), pid=gone.pid)  # the killed run's lock
    reader = CampaignStore.open_readonly(str(copy))
    assert reader.incomplete_chunks() == [2, 5]
    report = status_report(str(copy))
    assert report["chunks_done"] == 5 and report["fits_done"] == 700
    summary = run_fit_stage(campaign_file, client)
    assert summary["chunks"] == 2 and summary["candidates"] == 300
    assert_same_store(url, str(copy))
    assert not list(copy.rglob("*.partial"))


def test_a_lagging_or_torn_snapshot_falls_back_to_the_ledger(finished, client, tmp_path):
    _, url, _ = finished
    copy = tmp_path / "store.zarr"
    shutil.copytree(url, copy)
    campaign_file = write_campaign(tmp_path, size=1000, chunk_size=150, store=str(copy))
    group = zarr.open_group(str(copy), mode="r+")
    assert np.array_equal(group[SNAPSHOT][:], group["chunk_done"][:])  # saved at the end of the run
    group[SNAPSHOT][:] = [150, 150, 0, 0, 0, 0, 0]  # a run killed before it saved the snapshot
    assert CampaignStore.open_readonly(str(copy)).incomplete_chunks() == []
    assert run_fit_stage(campaign_file, client)["chunks"] == 0
    assert np.array_equal(group[SNAPSHOT][:], group["chunk_done"][:])  # caught up
    snapshot = copy / SNAPSHOT / "c" / "0"
    snapshot.write_bytes(snapshot.read_bytes()[:-2])
    assert CampaignStore.open_readonly(str(copy)).incomplete_chunks() == []
    assert run_fit_stage(campaign_file, client)["chunks"] == 0
    assert np.array_equal(group[SNAPSHOT][:], group["chunk_done"][:])
    assert_same_store(url, str(copy))


# -------------------------------------------------------------------------------- fingerprint

def _refused(path: Path, url: str, *fragments: str) -> None:
    before = snapshot(url)
    campaign, model, data = open_inputs(path)
    with pytest.raises(InputError) as err:
        CampaignStore.open_for_run(url, campaign, model, data)
    message = str(err.value)
    assert message.startswith(url) and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert snapshot(url) == before  # nothing written, no lock left behind


def test_a_store_of_another_campaign_is_refused_naming_what_changed(tmp_path):
    path = write_campaign(tmp_path, size=600, chunk_size=100)
    campaign, model, data = open_inputs(path)
    url = campaign.store_path
    CampaignStore.open_for_run(url, campaign, model, data).release()

    changed = write_campaign(tmp_path / "setting", size=600, chunk_size=100, store=url, fit={"qmax": 18.0})
    _refused(changed, url, "fit.qmax", "20.0", "18.0")
    changed = write_campaign(tmp_path / "seed", size=600, chunk_size=100, store=url,
                             catalogue={"seed": 8}, threshold=2.0)
    _refused(changed, url, "catalogue.seed", "threshold")

    data_file = tmp_path / "data.gr"
    original = data_file.read_text()
    lines = original.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("5.000000 "))  # inside the fit range
    lines[i] = "5.000000 0.123"
    data_file.write_text("\n".join(lines) + "\n")
    _refused(path, url, "the data")
    data_file.write_text(original)

    model_file = tmp_path / "model.xyz"
    original = model_file.read_text()
    atoms = ase.io.read(model_file)
    atoms.positions[0, 0] += 0.01
    ase.io.write(model_file, atoms, format="xyz")
    _refused(path, url, "starting model")
    model_file.write_text(original)

    # A store written by another version of motex_dask (its attributes say so).
    group = zarr.open_group(url, mode="r+")
    attrs = group.attrs["motex_dask"]
    parts = {**attrs["fingerprint_parts"], "version": layout.sha256(b"0.0.9")}
    group.attrs["motex_dask"] = {**attrs, "version": "0.0.9", "fingerprint_parts": parts,
                                 "fingerprint": layout.combine(parts)}
    _refused(path, url, "version", "0.0.9")


def test_a_smaller_catalogue_and_foreign_paths_are_refused(tmp_path):
    path = write_campaign(tmp_path, size=600, chunk_size=100)
    campaign, model, data = open_inputs(path)
    url = campaign.store_path
    CampaignStore.open_for_run(url, campaign, model, data).release()
    smaller = write_campaign(tmp_path / "small", size=500, chunk_size=100, store=url)
    _refused(smaller, url, "catalogue.size", "600")

    folder = tmp_path / "not_a_store"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a Zarr store"):
        CampaignStore.open_for_run(str(folder), campaign, model, data)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.create_array("x", shape=(3,), dtype="i4")
    with pytest.raises(InputError, match="not written by motex_dask"):
        CampaignStore.open_for_run(str(tmp_path / "other.zarr"), campaign, model, data)
    with pytest.raises(InputError, match="not a motex_dask campaign store"):
        CampaignStore.open_readonly(str(tmp_path / "other.zarr"))
    with pytest.raises(InputError, match="not a motex_dask campaign store"):
        status_report(str(tmp_path / "missing.zarr"))


# ------------------------------------------------------------------------------------- lock

def test_a_second_run_is_refused_while_the_store_is_locked(tmp_path):
    path = write_campaign(tmp_path, size=300, chunk_size=100)
    campaign, model, data = open_inputs(path)
    url = campaign.store_path
    with CampaignStore.open_for_run(url, campaign, model, data):
        holder = json.loads((Path(url) / LOCK_KEY).read_bytes())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(InputError) as err:
            CampaignStore.open_for_run(url, campaign, model, data)
        message = str(err.value)
        assert url in message and f"PID {os.getpid()}" in message and socket.gethostname() in message
        assert time.strftime("%Y-%m-%d") in message
        assert status_report(url)["running"]["pid"] == os.getpid()
    assert not (Path(url) / LOCK_KEY).exists()
    CampaignStore.open_for_run(url, campaign, model, data).release()


def _write_lock(url: str, **info) -> None:
    now = time.time()
    lock = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "started": now,
            "heartbeat": now, "token": "someone-else", **info}
    (Path(url) / LOCK_KEY).write_text(json.dumps(lock))


def test_stale_locks_are_taken_over_and_live_ones_respected(tmp_path):
    path = write_campaign(tmp_path, size=300, chunk_size=100)
    campaign, model, data = open_inputs(path)
    url = campaign.store_path
    CampaignStore.open_for_run(url, campaign, model, data).release()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale_locks = [
        {"pid": gone.pid},                                                   # same host, process gone
        {"pid": os.getpid(), "pid_start": 1.0},                              # PID reused by a newer process
        {"host": "elsewhere", "heartbeat": time.time() - 2 * run_lock.STALE_LOCK_SECONDS},
    ]
    for info in stale_locks:
        _write_lock(url, **info)
        CampaignStore.open_for_run(url, campaign, model, data).release()
        assert not (Path(url) / LOCK_KEY).exists()
    (Path(url) / LOCK_KEY).write_bytes(b'{"host": "node1", "pi')  # torn by a kill mid-write
    CampaignStore.open_for_run(url, campaign, model, data).release()

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for info in ({"pid": live.pid, "pid_start": run_lock.process_start(live.pid)},
                     {"host": "elsewhere", "pid": 4242, "heartbeat": time.time() - 5}):
            _write_lock(url, **info)
            with pytest.raises(InputError, match=f"PID {info['pid']}"):
                CampaignStore.open_for_run(url, campaign, model, data)
            assert json.loads((Path(url) / LOCK_KEY).read_bytes())["token"] == "someone-else"
    finally:
        live.kill()
        live.wait()


# --------------------------------------------------------------------------------- extension

def test_raising_the_size_extends_without_redoing_old_chunks(tmp_path, client):
    small = write_campaign(tmp_path / "a", size=700, chunk_size=150, store=str(tmp_path / "grown.zarr"))
    run_fit_stage(small, client)
    url = str(tmp_path / "grown.zarr")
    old = store_arrays(url)
    old_seconds = zarr.open_group(url, mode="r")["chunk_seconds"][:]

    large = write_campaign(tmp_path / "a", size=1100, chunk_size=150, name="large.yaml",
                           store=str(tmp_path / "grown.zarr"))
    assert CampaignStore.open_readonly(url).incomplete_chunks() == []
    campaign, model, data = open_inputs(large)
    with CampaignStore.open_for_run(url, campaign, model, data) as store:
        assert store.size == 1100 and store.incomplete_chunks() == [4, 5, 6, 7]  # 4 had 100 of 150 rows
    summary = run_fit_stage(large, client)
    assert summary["chunks"] == 4 and summary["candidates"] == 1100 - 600
    new = store_arrays(url)
    for name in ("mask", "n_atoms", "status", "duplicate_of"):  # no old row changed
        assert np.array_equal(new[name][:700], old[name]), name
    assert np.array_equal(new["rwp"][:600], old["rwp"][:600], equal_nan=True)
    assert np.allclose(new["rwp"][:700], old["rwp"], rtol=1e-9, equal_nan=True)
    assert np.array_equal(new["chunk_done"], [150] * 7 + [50])
    seconds = zarr.open_group(url, mode="r")["chunk_seconds"][:]
    assert np.array_equal(seconds[:4], old_seconds[:4])  # chunks 0-3 were not redone

    # Identical to a campaign of that size run in one go.
    fresh = write_campaign(tmp_path / "b", size=1100, chunk_size=150)
    run_fit_stage(fresh, client)
    assert_same_store(url, load_campaign(fresh).store_path)


# --------------------------------------------------------------------------- write contract

def test_failed_fits_are_recorded_and_bad_chunks_refused(tmp_path):
    path = write_campaign(tmp_path, size=250, chunk_size=100)
    campaign, model, data = open_inputs(path)
    url = campaign.store_path
    with CampaignStore.open_for_run(url, campaign, model, data) as store:
        drawn = chunk_candidates(campaign.catalogue, model.permuted_positions, 2)
        masks = drawn.masks
        n = len(masks)
        status = np.full(n, Status.OK, dtype=np.int8)
        status[:3] = [Status.NONFINITE, Status.OPTIMIZER, Status.OPTIMIZER]
        values = np.where(status == Status.OK, 0.5, np.nan)
        arrays = {"mask": masks, "n_atoms": model.motif_size(masks), "rwp": values, "scale": values,
                  "zoom": values, "uiso": values, "status": status, "duplicate_of": np.full(n, -1),
                  **shape_columns(drawn), "round": np.zeros(n, np.int16), "origin": np.zeros(n, np.int8)}
        bad = {**arrays, "rwp": np.full(n, 0.5)}           # a failed row with a value
        with pytest.raises(ValueError, match="rwp"):
            store.write_chunk(2, bad, 1.0)
        bad = {**arrays, "centre_x": np.full(n, np.nan)}   # NaN is never written, not even as a fill
        with pytest.raises(ValueError, match="centre_x"):
            store.write_chunk(2, bad, 1.0)
        bad = {**arrays, "status": np.zeros(n, np.int8)}   # PENDING rows
        with pytest.raises(ValueError, match="PENDING"):
            store.write_chunk(2, bad, 1.0)
        assert store.incomplete_chunks() == [0, 1, 2]
        store.write_chunk(2, arrays, 1.0)
        assert store.incomplete_chunks() == [0, 1]
        # write_empty_chunks is on: a chunk equal to the fill value (no duplicate: all -1) is a file too
        assert (Path(url) / "duplicate_of" / "c" / "2").is_file()
        drawn = chunk_candidates(campaign.catalogue, model.permuted_positions, 0)
        masks = drawn.masks
        full = np.full(100, 0.5)
        first = {"mask": masks, "n_atoms": model.motif_size(masks), "rwp": full, "scale": full, "zoom": full,
                 "uiso": full, "status": np.full(100, Status.OK, np.int8), "duplicate_of": np.full(100, -1),
                 **shape_columns(drawn), "round": np.zeros(100, np.int16), "origin": np.zeros(100, np.int8)}
        time.sleep(0.2)
        store.write_chunk(0, first, 2.0)
        running = status_report(url)
        assert running["running"]["pid"] == os.getpid()
        assert 0 < running["rate_rows_per_s"] < 100 / 0.2  # chunk 0 landed >= 0.2 s after chunk 2
        assert running["eta_s"] == pytest.approx(100 / running["rate_rows_per_s"])
        assert running["seconds_per_row"] == pytest.approx(3.0 / 150)
        assert "ETA" in format_status(running)
    report = status_report(url)
    assert report["by_status"]["nonfinite"] == 1 and report["by_status"]["optimizer"] == 2
    assert report["failed"] == 3 and report["fits_done"] == 150 and report["chunks_done"] == 2
    text = format_status(report)
    assert "nonfinite 1" in text and "optimizer 2" in text and "resume" in text


def test_any_fsspec_url_works(tmp_path, client):
    url = f"file://{tmp_path / 'remote.zarr'}"
    path = write_campaign(tmp_path, size=400, chunk_size=150, store=url)
    summary = run_fit_stage(path, client)
    assert summary["chunks"] == 3
    assert status_report(url)["fits_done"] == 400
    assert run_fit_stage(path, client)["chunks"] == 0
    reference = write_campaign(tmp_path / "local", size=400, chunk_size=150)
    run_fit_stage(reference, client)
    assert_same_store(str(tmp_path / "remote.zarr"), load_campaign(reference).store_path)
