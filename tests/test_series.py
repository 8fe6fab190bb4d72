"""A campaign over a series of frames: reading and ordering frames, the store's frame axis,
growing a finished store, refusals that name the frame, status, and kill/resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from campaign_fixtures import (assert_same_store, client, run_fit_stage, store_arrays,  # noqa: F401 (fixture)
                               write_campaign, write_frames, write_series_campaign)
from motex_dask.inputs import prepare
from motex_dask.campaign_file import load_campaign
from motex_dask.errors import InputError
from motex_dask.fit import Status
from motex_dask.store import LOCK_KEY, CampaignStore, format_status, status_report


def _set(path: Path, **keys) -> Path:
    doc = yaml.safe_load(path.read_text())
    doc.update(keys)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_frames_are_read_in_natural_or_listed_order_and_bad_frames_are_named(tmp_path):
    path = write_series_campaign(tmp_path, n_frames=11)
    names = [p.name for p in load_campaign(path).frames]
    assert names == [f"frame_{k}.gr" for k in range(1, 12)]  # frame_2 before frame_10
    listed = ["frames/frame_10.gr", "frames/frame_2.gr"]
    assert [p.name for p in load_campaign(_set(path, data=listed)).frames] == ["frame_2.gr", "frame_10.gr"]
    campaign = load_campaign(_set(path, data=listed, frame_order="listed"))
    assert [p.name for p in campaign.frames] == ["frame_10.gr", "frame_2.gr"]
    assert campaign.to_dict()["data"] == [str(p) for p in campaign.frames]  # a stored campaign reads back
    with pytest.raises(InputError, match="no file matches 'frames/nothing_\\*.gr'"):
        load_campaign(_set(path, data="frames/nothing_*.gr", frame_order="natural"))
    with pytest.raises(InputError, match="a glob .* has no order of its own"):
        load_campaign(_set(path, data="frames/frame_*.gr", frame_order="listed"))
    with pytest.raises(InputError, match="frame .*frame_99.gr does not exist"):
        load_campaign(_set(path, data=["frames/frame_1.gr", "frames/frame_99.gr"], frame_order="natural"))
    single = write_campaign(tmp_path / "single")
    with pytest.raises(InputError, match="field 'frame_order': applies to a series"):
        load_campaign(_set(single, frame_order="listed"))
    with pytest.raises(InputError, match="field 'fit.engine'.*batched"):
        load_campaign(_set(path, data="frames/frame_*.gr", frame_order="natural",
                           fit={"rmin": 1.0, "rmax": 8.0, "engine": "srfit"}))
    # every frame checked like a single data file, and on the first frame's r grid
    _set(path, data="frames/frame_*.gr", fit={"rmin": 1.0, "rmax": 8.0})
    bad = tmp_path / "frames" / "frame_7.gr"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:-100] + ["1.5 oops"] + lines[-100:]) + "\n")
    with pytest.raises(InputError, match="frame_7.gr: line .*column 2 is not a number"):
        prepare(load_campaign(path))
    r, g = np.loadtxt(tmp_path / "frames" / "frame_1.gr", comments="#", unpack=True)[:2]
    np.savetxt(bad, np.column_stack([r[::2], g[::2]]))
    with pytest.raises(InputError, match="frame_7.gr: this frame's r grid .* differs from the first frame's"):
        prepare(load_campaign(path))


def test_series_store_fits_every_frame_grows_with_new_frames_and_refuses_changed_ones(tmp_path, client):
    path = write_series_campaign(tmp_path, n_frames=6, frames_per_task=4)
    summary = run_fit_stage(path, client)
    url = load_campaign(path).store_path
    store = CampaignStore.open_readonly(url)
    assert store.n_frames == 6 and store.frame_names[-1] == "frame_6.gr"
    assert summary["candidates"] == 600 * 6 and summary["chunks"] == 6 * 2  # (chunk, frame block) tasks
    status = store.array("status")[:]
    assert status.shape == (600, 6) and not np.any(status == Status.PENDING)
    ok = status == Status.OK
    assert ok.sum() > 0.9 * 600 * 6
    for name in store.frame_arrays[:-1]:  # refined values are finite exactly on OK (candidate, frame) pairs
        assert np.all(np.isfinite(store.array(name)[:][ok]))
    # the full patch is each frame's best candidate only in frame 1 (later frames lose atoms)
    rwp = store.array("rwp")[:]
    assert np.nanargmin(rwp[:, 0]) == np.flatnonzero(store.array("mask")[:].all(axis=1))[0]
    report = status_report(url)
    assert report["frames"] == {"done": 6, "total": 6, "fits_done": 3600, "fits_total": 3600,
                                "names": [f"frame_{k}.gr" for k in range(1, 7)]}
    assert "frames     6 / 6 done" in format_status(report)

    before = store_arrays(url)
    write_frames(tmp_path / "frames", 3, first=7)  # frames 7-9: block 1 gets 2 more, block 2 is new
    grown = run_fit_stage(path, client)
    assert grown["candidates"] == 600 * 3  # the new frames only
    after = store_arrays(url)
    for name in store.frame_arrays:
        assert after[name].shape == (600, 9)
        np.testing.assert_array_equal(after[name][:, :6], before[name])
    for name in ("mask", "n_atoms", "duplicate_of"):
        np.testing.assert_array_equal(after[name], before[name])
    # the same 9 frames fitted in one go: the same store, bit for bit
    fresh = write_series_campaign(tmp_path / "fresh", n_frames=9, frames_per_task=4)
    run_fit_stage(fresh, client)
    assert_same_store(load_campaign(fresh).store_path, url)
    assert run_fit_stage(path, client)["chunks"] == 0  # nothing left

    frame = tmp_path / "frames" / "frame_3.gr"
    saved = frame.read_text()
    r, g = np.loadtxt(frame, comments="#", unpack=True)[:2]
    np.savetxt(frame, np.column_stack([r, 1.01 * g]))  # the same grid, other G values
    with pytest.raises(InputError, match="frame frame_3.gr changed since it was fitted"):
        run_fit_stage(path, client)
    frame.write_text(saved)
    shutil.move(tmp_path / "frames" / "frame_9.gr", tmp_path / "frame_9.gr")
    with pytest.raises(InputError, match="frame frame_9.gr is in the store but no longer in the campaign"):
        run_fit_stage(path, client)
    assert_same_store(load_campaign(fresh).store_path, url)  # refusals changed nothing


PROFILE = """kind: local
local:
  n-workers: 2
  threads-per-worker: 1
  dashboard-address: "127.0.0.1:0"
"""


def _tasks_done(url: str) -> int:
    try:
        return int((CampaignStore.open_readonly(url).frame_done() > 0).sum())
    except InputError:  # not created yet
        return 0


def test_series_killed_mid_run_and_resumed_gives_the_uninterrupted_store(tmp_path, client):
    reference = write_series_campaign(tmp_path / "reference", n_frames=5, size=2000, chunk_size=100,
                                      frames_per_task=3)
    run_fit_stage(reference, client)
    path = write_series_campaign(tmp_path / "killed", n_frames=5, size=2000, chunk_size=100, frames_per_task=3)
    url = load_campaign(path).store_path
    (tmp_path / "two.yaml").write_text(PROFILE)
    command = ["motex", "-q", "run", str(path), "--fits-only", "--cluster", str(tmp_path / "two.yaml")]
    rng = np.random.default_rng(int(time.time()))
    done = []
    for _ in range(2):
        before = _tasks_done(url)
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while _tasks_done(url) <= before and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        assert run.poll() is None, "the run ended before it was killed"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        done.append(_tasks_done(url))
    assert 0 < done[-1] < 20 * 2, done  # killed inside the fit stage, with work left
    assert subprocess.run(command, timeout=900).returncode == 0  # a hang guard only (shared machine)
    assert not (Path(url) / LOCK_KEY).exists()
    assert status_report(url)["frames"]["done"] == 5
    assert_same_store(load_campaign(reference).store_path, url)
