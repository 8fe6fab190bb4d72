"""Dask workers in real SLURM jobs (and PBS jobs through slurm-wlm-torque's qsub over SLURM).

Needs a running SLURM: ``eval "$(scripts/slurm_local.sh up)"``. Skipped, with the reason, otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
import zarr
from distributed import Client

from campaign_fixtures import assert_same_store, store_arrays, write_campaign
from motex_dask.campaign import run_campaign
from motex_dask.cluster import (ClusterProfile, load_profile, open_client, submit_batch_script,
                                write_batch_script)
from motex_dask.campaign_file import load_campaign
from motex_dask.store import CampaignStore
from slurm_helpers import CHUNK, SIZE, fit_tasks, local_reference, why_no_slurm, write_recorder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONF = Path(os.environ.get("MOTEX_SLURM_DIR", "/tmp/motex-slurm")) / "slurm.conf"


def _slurm_conf() -> str | None:
    conf = os.environ.get("SLURM_CONF")
    return conf or (str(DEFAULT_CONF) if DEFAULT_CONF.is_file() else None)


NO_SLURM = why_no_slurm(_slurm_conf())
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(NO_SLURM is not None, reason=NO_SLURM or "")]
needs_qsub = pytest.mark.skipif(shutil.which("qsub") is None, reason="no qsub: install slurm-wlm-torque")


@pytest.fixture(autouse=True)
def slurm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM_CONF for sbatch/squeue; the test's folder as cwd (the torque qsub writes job logs there)."""
    if _slurm_conf():
        monkeypatch.setenv("SLURM_CONF", _slurm_conf())
    monkeypatch.chdir(tmp_path)


def local_profile(tmp_path: Path, shipped: str, **sections: dict) -> ClusterProfile:
    """A shipped *-local profile with some keys changed, written into tmp_path/cluster_profiles."""
    raw = yaml.safe_load((REPO / "cluster_profiles" / f"{shipped}.yaml").read_text())
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    raw["jobqueue"]["log-directory"] = str(tmp_path / "logs")
    path = tmp_path / "cluster_profiles" / f"{shipped}-test.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path.stem, base_dir=tmp_path)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def job_field(job_id: str, name: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    match = re.search(rf"\b{name}=(\S+)", out)
    assert match, out
    return match.group(1)


def worker_job_ids(client: Client) -> dict[str, str | None]:
    return client.run(lambda: os.environ.get("SLURM_JOB_ID"))


def wait_until_gone(job_ids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while job_ids & squeue_ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not job_ids & squeue_ids(), f"jobs {job_ids & squeue_ids()} outlived their cluster"


@pytest.mark.timeout(180)
def test_learn_stage_workers_run_in_two_slurm_jobs(tmp_path: Path) -> None:
    profile = local_profile(tmp_path, "slurm-local", learn={"jobs": 2})
    with open_client(profile, "learn") as client:
        ids = worker_job_ids(client)
        assert len(ids) == 2 and None not in ids.values()
        assert len(set(ids.values())) == 2
        assert set(ids.values()) <= squeue_ids()
        # The learn walltime of the profile, not the fit one.
        assert {job_field(j, "TimeLimit") for j in ids.values()} == {"00:20:00"}
        assert client.submit(lambda: os.environ["SLURM_JOB_ID"]).result() in ids.values()
    wait_until_gone(set(ids.values()))


@pytest.mark.timeout(180)
def test_fit_stage_adapts_slurm_jobs_with_lifetime(tmp_path: Path) -> None:
    profile = local_profile(tmp_path, "slurm-local")
    with open_client(profile, "fit") as client:
        assert not client.scheduler_info()["workers"]  # adaptive: no job until there is work
        futures = client.map(lambda i: (time.sleep(0.5), os.environ.get("SLURM_JOB_ID"))[1], range(12))
        seen = set(client.gather(futures))
        assert None not in seen and seen <= squeue_ids()
        # The fit-stage job script gave the workers a lifetime: 10 min walltime - 30 s stagger
        # - 60 s margin = 510 s, drawn within +- the stagger.
        lifetimes = client.run(lambda dask_worker: dask_worker.lifetime)
        assert lifetimes and all(480 <= t <= 540 for t in lifetimes.values())
    assert list((tmp_path / "logs").glob("dask-worker-*.err")), "no job logs in the profile's log-directory"
    wait_until_gone(seen)


@pytest.mark.pbs
@needs_qsub
@pytest.mark.timeout(180)
def test_pbs_cluster_through_torque_qsub_wrapper(tmp_path: Path) -> None:
    profile = local_profile(tmp_path, "pbs-local", learn={"jobs": 2})
    with open_client(profile, "learn") as client:
        ids = worker_job_ids(client)
        assert len(set(ids.values())) == 2 and None not in ids.values()
        for job_id in ids.values():
            # sbatch honoured the #PBS lines dask-jobqueue wrote: -N, -l select=...:ncpus=1, -l walltime.
            assert job_field(job_id, "JobName") == "dask-worker"
            assert job_field(job_id, "NumCPUs") == "1"
            assert job_field(job_id, "TimeLimit") == "00:20:00"
    wait_until_gone(set(ids.values()))  # PBSCluster cancelled them with the qdel wrapper
    # The wrapper ignores #PBS -e/-o and writes <script>.o<id> into the working directory.
    assert {p.suffix for p in tmp_path.glob("*.sh.o*")} >= {f".o{j}" for j in ids.values()}


# -- whole campaigns --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return local_reference(tmp_path_factory.mktemp("local-reference"))


def recorded_profile(tmp_path: Path, shipped: str, **sections: dict) -> ClusterProfile:
    """A *-local profile whose workers load the task recorder."""
    jobqueue = {**sections.pop("jobqueue", {}), "worker-extra-args": ["--preload", str(write_recorder(tmp_path))]}
    return local_profile(tmp_path, shipped, jobqueue=jobqueue, **sections)


def run_on(tmp_path: Path, profile: ClusterProfile) -> tuple[str, dict]:
    campaign = write_campaign(tmp_path / "campaign", size=SIZE, chunk_size=CHUNK)
    summary = run_campaign(campaign, cluster=str(profile.source), fits_only=True, progress=False)
    return load_campaign(campaign).store_path, summary


@pytest.mark.timeout(300)
def test_campaign_on_two_slurm_jobs_equals_local_run(tmp_path: Path, reference: str) -> None:
    profile = recorded_profile(tmp_path, "slurm-local", fit={"minimum-jobs": 2, "maximum-jobs": 2})
    store, summary = run_on(tmp_path, profile)
    assert summary["fits"]["chunks"] == SIZE // CHUNK
    by_job = fit_tasks(tmp_path)
    assert sorted(by_job) == list(range(SIZE // CHUNK))  # every chunk was fitted in a SLURM job...
    assert len(set().union(*by_job.values())) == 2     # ...spread over the two worker jobs
    assert CampaignStore.open_readonly(store).incomplete_chunks() == []
    assert_same_store(store, reference)


@pytest.mark.pbs
@needs_qsub
@pytest.mark.timeout(300)
def test_campaign_through_pbs_qsub_equals_local_run(tmp_path: Path, reference: str) -> None:
    profile = recorded_profile(tmp_path, "pbs-local", fit={"minimum-jobs": 2, "maximum-jobs": 2})
    store, _ = run_on(tmp_path, profile)
    assert sorted(fit_tasks(tmp_path)) == list(range(SIZE // CHUNK))
    assert CampaignStore.open_readonly(store).incomplete_chunks() == []
    assert_same_store(store, reference)


@pytest.mark.timeout(300)
def test_walltime_expiry_mid_campaign_loses_no_fit(tmp_path: Path, reference: str) -> None:
    """One-minute jobs whose workers retire after 6-10 s, on a campaign that needs longer than that:
    the adaptive cluster replaces them again and again, and the store still ends complete, its
    first rows equal to the local run (no KilledWorker, no lost fit)."""
    lifetime, stagger = 8, 2
    profile = recorded_profile(tmp_path, "slurm-local", jobqueue={"walltime": "00:01:00"},
                               fit={"lifetime": f"{lifetime}s", "lifetime-stagger": f"{stagger}s",
                                    "minimum-jobs": 2, "maximum-jobs": 2})
    # Enough chunks for two workers to need 1.2 times the longest lifetime, at this machine's speed
    # (measured on the reference run), so that retirements land mid-campaign however fast it is.
    chunk_seconds = float(np.median(zarr.open_group(reference, mode="r")["chunk_seconds"][:]))
    n_chunks = int(np.clip(1.2 * (lifetime + stagger) * 2 / chunk_seconds, SIZE // CHUNK, 40 * SIZE // CHUNK))
    # Chunks are generated from (seed, chunk): the first SIZE rows are the reference's.
    campaign = write_campaign(tmp_path / "campaign", size=n_chunks * CHUNK, chunk_size=CHUNK)
    # SpecCluster waits lost-worker-timeout (15 s) before it replaces a worker that left; shorten
    # the wait so that this test does not idle.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
        run_campaign(campaign, cluster=str(profile.source), fits_only=True, progress=False)
    store = load_campaign(campaign).store_path
    by_job = fit_tasks(tmp_path)
    assert sorted(by_job) == list(range(n_chunks))
    # More jobs than the two at a time ran fits: workers left mid-campaign and were replaced.
    assert len(set().union(*by_job.values())) > 2
    assert CampaignStore.open_readonly(store).incomplete_chunks() == []
    ours, theirs = store_arrays(store), store_arrays(reference)
    assert not (ours["status"] == 0).any()  # no row left PENDING
    for name, values in theirs.items():
        assert np.array_equal(ours[name][: len(values)], values, equal_nan=values.dtype.kind == "f"), name
    # With at most two jobs and tasks always waiting, only lifetimes make workers leave; and none
    # was killed by SLURM's time limit. (The retiring worker's own INFO line is not always flushed
    # to its job log before the job ends, so it is not asserted.)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "DUE TO TIME LIMIT" not in logs


@pytest.mark.timeout(300)
def test_submitted_batch_script_runs_the_campaign_inside_one_job(tmp_path: Path, reference: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`motex submit --now`: one sbatch job runs `motex run --cluster local` with its workers sized
    to the allocation. The test follows it through the fit stage, then cancels the rest."""
    campaign = write_campaign(tmp_path / "campaign", size=SIZE, chunk_size=CHUNK)
    # sbatch exports the environment: the job's local workers load the recorder through dask config.
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PRELOAD", json.dumps([str(write_recorder(tmp_path))]))
    profile = local_profile(tmp_path, "slurm-local", jobqueue={"cores": 2, "memory": "2GiB", "processes": 2})
    script = write_batch_script(campaign, profile, tmp_path / "campaign.slurm.sh")
    job = submit_batch_script(script, profile)
    try:
        deadline = time.monotonic() + 240
        while (len(fit_tasks(tmp_path)) < SIZE // CHUNK and job in squeue_ids()
               and time.monotonic() < deadline):
            time.sleep(1)
        by_job = fit_tasks(tmp_path)
        log = (tmp_path / "logs" / f"motex-campaign-{job}.err").read_text()
    finally:
        subprocess.run(["scancel", job], check=True)  # learning and the report are tested elsewhere
    assert by_job == {c: {job} for c in range(SIZE // CHUNK)}, log[-3000:]
    assert "fit stage on cluster profile 'local' (local): 2 local workers x 1 threads" in log
    assert_same_store(load_campaign(campaign).store_path, reference)
    wait_until_gone({job})


# ------------------------------------------------------------------------- pending worker jobs

@pytest.mark.timeout(240)
def test_a_job_that_can_never_start_ends_the_run_with_one_line(tmp_path: Path) -> None:
    """More cores per job than the node has: SLURM keeps the job pending (PartitionConfig) forever;
    `motex run` stops within 2 minutes with one error line naming the profile key, exit 4."""
    campaign = write_campaign(tmp_path / "c", size=200, chunk_size=100)
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True)
               .stdout.split()[0].rstrip("+"))
    profile = local_profile(tmp_path, "slurm-local", jobqueue={"cores": 64 * cpus, "processes": 1},
                            fit={"minimum-jobs": 1})
    before = squeue_ids()
    t0 = time.monotonic()
    done = subprocess.run(["motex", "run", str(campaign), "--fits-only", "--cluster", str(profile.source)],
                          capture_output=True, text=True, timeout=200, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and done.stderr.rstrip().splitlines()[-1] == errors[0], done.stderr
    assert "PartitionConfig" in errors[0] and "'jobqueue.cores'" in errors[0], errors[0]
    assert elapsed < 120, f"took {elapsed:.0f} s"
    wait_until_gone(squeue_ids() - before)


@pytest.mark.timeout(180)
def test_pending_worker_jobs_are_reported_with_the_schedulers_reason(tmp_path: Path, caplog) -> None:
    """A job held back by SLURM (here: not before a begin time) is reported, state and reason, within
    a minute; a reason that passes does not stop the run."""
    profile = local_profile(tmp_path, "slurm-local", fit={"minimum-jobs": 1},
                            jobqueue={"job-extra-directives": ["--begin=now+600"]})
    caplog.set_level(logging.INFO, logger="motex_dask")
    with open_client(profile, "fit") as client:
        deadline = time.monotonic() + 60
        while "waiting in the SLURM queue" not in caplog.text and time.monotonic() < deadline:
            time.sleep(1)
        ids = {str(job.job_id) for job in client.cluster.workers.values()}
    assert re.search(r"fit stage: 1 worker job\(s\) waiting in the SLURM queue: \d+ PENDING \(BeginTime\); "
                     r"0 workers connected", caplog.text), caplog.text
    wait_until_gone(ids)
