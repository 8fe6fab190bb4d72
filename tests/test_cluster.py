"""Cluster profiles, job scripts and batch scripts; the local cluster. No batch system needed."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import dask
import pytest
import yaml

from motex_dask.cluster import (ClusterProfile, job_script, load_profile, open_client, write_batch_script)
from motex_dask.errors import InputError

SHIPPED = ("local", "slurm", "pbs", "sge", "slurm-local", "pbs-local")


def write_profile(directory: Path, name: str, profile: dict) -> Path:
    path = directory / "cluster_profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile))
    return path


SLURM = {"kind": "slurm", "jobqueue": {"cores": 4, "memory": "8GiB", "walltime": "00:30:00", "queue": "short"}}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.kind == name.split("-")[0]
    assert profile.source is not None and profile.source.name == f"{name}.yaml"


def test_batch_profile_resolves_fit_lifetime_from_walltime() -> None:
    profile = load_profile("slurm")
    # walltime 01:00:00 - stagger 2m - margin 3m
    assert profile.fit == {"minimum-jobs": 0, "maximum-jobs": 10, "lifetime": 3300.0, "lifetime-stagger": 120,
                           "lifetime-restart": False}
    assert profile.learn["jobs"] == 2 and profile.learn["walltime"] == "04:00:00"


def test_campaign_folder_profile_wins_over_packaged(tmp_path: Path) -> None:
    write_profile(tmp_path, "slurm", SLURM)
    profile = load_profile("slurm", base_dir=tmp_path)
    assert profile.source == tmp_path / "cluster_profiles" / "slurm.yaml"
    assert profile.options["queue"] == "short"
    assert load_profile(str(profile.source)).options == profile.options  # an explicit path


def test_dask_config_supplies_defaults_the_profile_leaves_open() -> None:
    with dask.config.set({"motex.cluster.local.n-workers": 3, "motex.cluster.fit.maximum-jobs": 7}):
        assert load_profile("local").options["n-workers"] == 3
        assert load_profile("slurm").fit["maximum-jobs"] == 10  # the profile sets it
        assert load_profile("slurm-local").fit["maximum-jobs"] == 2
    assert load_profile("local").options["n-workers"] is None


def test_environment_sizes_the_local_profile() -> None:
    # The mechanism `motex submit` scripts rely on: DASK_MOTEX__CLUSTER__LOCAL__* variables.
    env = {**os.environ, "DASK_MOTEX__CLUSTER__LOCAL__N_WORKERS": "3",
           "DASK_MOTEX__CLUSTER__LOCAL__THREADS_PER_WORKER": "2",
           "DASK_MOTEX__CLUSTER__LOCAL__MEMORY_LIMIT": "1.50GiB"}
    code = "from motex_dask.cluster import load_profile; o = load_profile('local').options; " \
           "print(o['n-workers'], o['threads-per-worker'], o['memory-limit'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "2", "1.50GiB"]


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "lsf"}, "'kind' must be one of local, slurm, pbs, sge"),
    ({"jobqueue": {**SLURM["jobqueue"], "walltme": "1:00:00"}}, "unknown key 'jobqueue.walltme'; did you mean 'jobqueue.walltime'?"),
    ({"jobqueue": {"memory": "8GiB"}}, "'jobqueue.cores' is required"),
    ({"jobqueue": {**SLURM["jobqueue"], "memory": "lots"}}, "'jobqueue.memory' must be a size"),
    ({"jobqueue": {**SLURM["jobqueue"], "processes": 5}}, "'jobqueue.processes' must be a whole number from 1 to cores=4"),
    ({"jobqueue": {**SLURM["jobqueue"], "walltime": "90m"}}, "'jobqueue.walltime' must be written [D-]HH:MM:SS"),
    ({"fit": {"lifetime": "29m", "lifetime-stagger": "1m"}}, "must be shorter than the walltime (1800 s)"),
    ({"fit": {"lifetime-margin": "30m"}}, "leaves no worker lifetime"),
    ({"fit": {"minimum-jobs": 3, "maximum-jobs": 2}}, "0 <= minimum-jobs <= maximum-jobs"),
    ({"learn": {"jobs": 0}}, "'learn.jobs' must be a whole number >= 1"),
    ({"learn": {"walltime": "2h"}}, "'learn.walltime' must be written"),
    ({"local": {"n-workers": 2}}, "unknown key 'local'"),
])
def test_bad_profiles_name_file_and_key(tmp_path: Path, change: dict, message: str) -> None:
    path = write_profile(tmp_path, "bad", {**SLURM, **change})
    with pytest.raises(InputError) as err:
        load_profile("bad", base_dir=tmp_path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_profile_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cluster profile 'slurmm' not found .*known profiles: .*slurm"):
        load_profile("slurmm", base_dir=tmp_path)
    with pytest.raises(InputError, match="file not found"):
        load_profile(str(tmp_path / "nope.yaml"))


def test_invalid_yaml_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: slurm\njobqueue: {cores: 4\n")
    with pytest.raises(InputError, match=r"broken.yaml: not valid YAML \(line 3\)"):
        load_profile(str(path))


def test_fit_job_script_retires_workers_before_walltime() -> None:
    script = job_script(load_profile("slurm"))
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH --cpus-per-task=8", "#SBATCH --mem=16G", "#SBATCH -t 01:00:00"):
        assert line in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "--nworkers 8" in script and "--nthreads 1" in script
    assert "--lifetime 3300s --lifetime-stagger 120s" in script
    assert "--lifetime-restart" not in script


def test_learn_job_script_has_fixed_long_lived_workers() -> None:
    script = job_script(load_profile("slurm"), stage="learn")
    assert "#SBATCH -t 04:00:00" in script
    assert "--nthreads 8" in script and "--nworkers" not in script
    assert "--lifetime" not in script


def test_pbs_and_sge_job_scripts() -> None:
    pbs = job_script(load_profile("pbs"))
    assert "#PBS -l select=1:ncpus=8:mem=16GB" in pbs and "#PBS -l walltime=01:00:00" in pbs
    sge = job_script(load_profile("sge"))
    assert "#$ -l h_rt=01:00:00" in sge
    assert "no job is submitted" in job_script(load_profile("local"))


def test_batch_script_runs_whole_campaign_in_one_allocation(tmp_path: Path) -> None:
    campaign = tmp_path / "camp.yaml"
    script = write_batch_script(campaign, load_profile("slurm"), tmp_path / "jobs" / "camp.sh")
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert "#SBATCH -J motex-camp" in text and "#SBATCH -t 01:00:00" in text
    assert f"#SBATCH -o {tmp_path / 'jobs'}/motex-camp-%J.out" in text
    assert "export DASK_MOTEX__CLUSTER__LOCAL__N_WORKERS=8" in text
    assert "export DASK_MOTEX__CLUSTER__LOCAL__THREADS_PER_WORKER=1" in text
    assert text.rstrip().endswith(f"exec {sys.executable} -m motex_dask.cli run {campaign} --cluster local")
    with pytest.raises(InputError, match="is kind local"):
        write_batch_script(campaign, load_profile("local"), tmp_path / "x.sh")


def test_local_cluster_runs_tasks(tmp_path: Path) -> None:
    local = ClusterProfile("tiny", "local", {"n-workers": 2, "threads-per-worker": 1, "memory-limit": "auto",
                                             "dashboard-address": "127.0.0.1:0"})
    with open_client(local, "fit") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, range(10)).result() == 45
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        # The link `motex run` prints serves the dashboard (bokeh installed), task stream included.
        base = client.dashboard_link.rsplit("/", 1)[0]
        for page in ("status", "individual-task-stream"):
            with urllib.request.urlopen(f"{base}/{page}", timeout=30) as response:
                body = response.read().decode()
            assert response.status == 200 and "bokeh" in body.lower(), page
            assert "Dask needs bokeh" not in body, page
    with pytest.raises(ValueError, match="stage must be one of"):
        with open_client(local, "explain"):
            pass


def test_dry_run_prints_both_stage_job_scripts(capsys):
    """`motex run --dry-run` shows what would be submitted, and submits nothing."""
    from motex_dask.cli import main

    campaign = Path(__file__).resolve().parents[1] / "workflows" / "c60.yaml"
    assert main(["run", str(campaign), "--cluster", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    fit, learn = out.split("# --- learn stage worker job ---")
    assert "#SBATCH" in fit and "--lifetime" in fit  # fit workers retire before walltime
    assert "#SBATCH" in learn and "--lifetime" not in learn  # learn workers must stay put
