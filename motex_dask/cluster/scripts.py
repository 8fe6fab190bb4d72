"""Batch scripts: the worker job script of a stage, a whole campaign in one job or one multi-node
allocation, and their submission (sbatch or qsub)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from dask.utils import parse_bytes

from ..errors import InputError
from .jobqueue import BATCH_KINDS, batch_cluster_class, job_kwargs, jobqueue_value, make_job
from .profile import ClusterProfile
from .security import write_credentials


def job_script(profile: ClusterProfile, stage: str = "fit") -> str:
    """The worker job script the profile submits for a stage (for ``motex run --dry-run``)."""
    if profile.kind == "local":
        return f"# cluster profile '{profile.name}' is kind local: workers run on this machine, no job is submitted\n"
    return make_job(profile, job_kwargs(profile, stage), "tcp://<scheduler-address>:8786").job_script()


def write_batch_script(campaign_path: Path, profile: ClusterProfile, out: Path, nodes: int | None = None) -> Path:
    """Write a batch script that runs the whole campaign inside one allocation.

    Without ``nodes``: one job of the profile's size runs ``motex run CAMPAIGN --cluster local``,
    the local workers sized to it. With ``nodes`` (SLURM): one allocation of that many nodes, each
    the size of one profile job, where ``srun`` starts scheduler, client and workers (see
    `allocation_client`); with TLS its credentials are made now, for this script only.
    """
    if profile.kind == "local":
        raise InputError(f"cluster profile '{profile.name}' is kind local; `motex submit` needs a batch "
                         f"profile ({', '.join(BATCH_KINDS)}), e.g. --cluster slurm")
    campaign_path = Path(campaign_path).resolve()
    out = Path(out).resolve()
    if nodes is not None:
        return _write_allocation_script(campaign_path, profile, out, nodes)
    kwargs = job_kwargs(profile, None)
    kwargs["job_name"] = f"motex-{campaign_path.stem}"
    kwargs.setdefault("log_directory", str(out.parent))
    job = make_job(profile, kwargs, "unused")  # only its header and sizes are used
    prologue = jobqueue_value(profile, "job-script-prologue") or []
    python = jobqueue_value(profile, "python") or sys.executable
    # The local profile reads these through dask.config, so the workers match the allocation.
    env = {"DASK_MOTEX__CLUSTER__LOCAL__N_WORKERS": job.worker_processes,
           "DASK_MOTEX__CLUSTER__LOCAL__THREADS_PER_WORKER": job.worker_process_threads,
           "DASK_MOTEX__CLUSTER__LOCAL__MEMORY_LIMIT": job.worker_process_memory}
    lines = [
        job.shebang, "", job.job_header, *prologue,
        *(f"export {key}={shlex.quote(str(value))}" for key, value in env.items()),
        f"cd {shlex.quote(str(campaign_path.parent))}",
        f"exec {shlex.quote(python)} -m motex_dask.cli run {shlex.quote(str(campaign_path))} --cluster local",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.chmod(0o755)
    return out


def _write_allocation_script(campaign_path: Path, profile: ClusterProfile, out: Path, nodes: int) -> Path:
    if profile.kind != "slurm":
        raise InputError(f"--nodes runs scheduler, client and workers in one allocation with srun: it needs a "
                         f"slurm profile (profile '{profile.name}' is {profile.kind}); leave out --nodes to run "
                         "the campaign in one job")
    if nodes < 1:
        raise InputError(f"--nodes must be a whole number >= 1 (got {nodes})")
    cores = jobqueue_value(profile, "cores")
    processes = jobqueue_value(profile, "processes") or cores
    value = {key: jobqueue_value(profile, key) for key in
             ("queue", "account", "walltime", "memory", "log-directory", "job-extra-directives",
              "job-script-prologue", "python")}
    logs = Path(value["log-directory"] or out.parent).resolve()
    # Ranks 0 and 1 are the scheduler and the client; `processes` workers on every node after them.
    # cyclic: rank r on node r mod N, so the workers spread over every node.
    ntasks = nodes * processes + 2
    header = [f"#SBATCH -J motex-{campaign_path.stem}", f"#SBATCH -e {logs}/motex-{campaign_path.stem}-%j.err",
              f"#SBATCH -o {logs}/motex-{campaign_path.stem}-%j.out", f"#SBATCH --nodes={nodes}",
              f"#SBATCH --ntasks={ntasks}", f"#SBATCH --cpus-per-task={max(cores // processes, 1)}",
              f"#SBATCH --mem={_slurm_memory(value['memory'])}", "#SBATCH --distribution=cyclic",
              *(f"#SBATCH -p {value['queue']}" for _ in [0] if value["queue"]),
              *(f"#SBATCH -A {value['account']}" for _ in [0] if value["account"]),
              *(f"#SBATCH -t {value['walltime']}" for _ in [0] if value["walltime"]),
              *(f"#SBATCH {line}" for line in value["job-extra-directives"] or [])]
    python = value["python"] or sys.executable
    run = [python, "-m", "motex_dask.cli", "run", str(campaign_path), "--cluster", str(profile.source or profile.name),
           "--allocation"]
    if profile.tls:
        credentials = out.with_name(out.name + ".tls")
        write_credentials(credentials)
        run += ["--credentials", str(credentials)]
    lines = ["#!/usr/bin/env bash", "", *header, *(value["job-script-prologue"] or []),
             f"cd {shlex.quote(str(campaign_path.parent))}",
             f"exec srun {shlex.join(run)}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)  # sbatch cannot open -e/-o files in a missing folder
    out.write_text("\n".join(lines) + "\n")
    out.chmod(0o755)
    return out


def _slurm_memory(memory: str) -> str:
    """A Dask size as sbatch --mem megabytes."""
    return f"{parse_bytes(memory) // 2**20}M"


def submit_batch_script(path: Path, profile: ClusterProfile) -> str:
    """Submit a script written by `write_batch_script` (sbatch or qsub); returns the job id."""
    if profile.kind == "local":
        raise InputError(f"cluster profile '{profile.name}' is kind local: there is no batch system to submit to")
    path = Path(path).resolve()
    job_cls = batch_cluster_class(profile.kind).job_cls
    cmd = [*shlex.split(job_cls.submit_command), str(path)]
    try:
        proc = subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InputError(f"{cmd[0]} not found: profile '{profile.name}' submits with {cmd[0]}; run this on a "
                         f"{profile.kind} login node, or leave out --now and submit {path} there") from None
    match = re.search(job_cls.job_id_regexp, proc.stdout)
    if proc.returncode != 0 or match is None:
        raise InputError(f"{cmd[0]} did not accept {path} (profile {profile.source or profile.name}): "
                         f"{(proc.stderr + proc.stdout).strip()}")
    return match.group("job_id")
