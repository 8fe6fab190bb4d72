"""Where the Dask workers run: an embedded LocalCluster, or SLURM/PBS/SGE jobs through dask-jobqueue.

A cluster profile (``cluster_profiles/NAME.yaml``) names a ``kind`` and its options:

* ``kind: local`` and a ``local:`` section (LocalCluster settings);
* ``kind: slurm | pbs | sge`` and a ``jobqueue:`` section holding dask-jobqueue's own keys
  (those of ``jobqueue.<kind>`` in its jobqueue.yaml), plus ``fit:`` and ``learn:`` sections that
  say how each stage scales.

Defaults live in ``motex_dask/cluster.yaml`` (registered with dask.config, so the usual dask
config files and ``DASK_MOTEX__CLUSTER__...`` variables override them); the profile file overrides
both. The fit stage runs on an adaptive cluster whose workers retire (``--lifetime``) before the
batch system's walltime, so jobs are replaced instead of killed; the learn stage runs on a fixed
set of workers because xgboost.dask hangs when a worker leaves during training.

Security: anyone who can reach a Dask scheduler can run code as its owner. Batch profiles
therefore speak TLS with credentials made for each run (``Security.temporary()``; the workers get
them through files only the owner can read, in the shared temporary directory), unless the
profile says ``tls: false``; the local cluster listens on the loopback interface only.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import yaml
from dask.utils import parse_bytes, parse_timedelta
from distributed import Client, LocalCluster, WorkerPlugin
from distributed.core import rpc
from distributed.security import Security

from .errors import ClusterError, InputError

if TYPE_CHECKING:
    from dask_jobqueue.core import Job, JobQueueCluster

log = logging.getLogger("motex_dask")

dask.config.update_defaults(yaml.safe_load(Path(__file__).with_name("cluster.yaml").read_text()))

#: Batch systems, each a dask-jobqueue cluster class (see `batch_cluster_class`).
BATCH_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
KINDS = ("local", *BATCH_KINDS)
STAGES = ("fit", "learn")
# Profile sections each kind accepts ("description" is free text for people).
_SECTIONS = {"local": ("local",), **{kind: ("tls", "jobqueue", "fit", "learn") for kind in BATCH_KINDS}}
# jobqueue keys that configure the cluster (scheduler), not the worker jobs.
_CLUSTER_KEYS = ("scheduler-options", "shared-temp-directory")
# dask-jobqueue keys that are only kept for backwards compatibility.
_DEPRECATED = ("extra", "env-extra", "job-extra")
# Profile key -> dask-jobqueue keyword, where the two differ (the cluster's `name` is the Dask
# cluster's own name; the job name is `job_name`).
_KWARG_NAMES = {"name": "job_name"}
_WALLTIME = re.compile(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})")
# Packaged profiles: inside the installed package (wheel) or next to it (source tree, editable).
_PACKAGED_DIRS = (Path(__file__).parent / "cluster_profiles", Path(__file__).resolve().parents[1] / "cluster_profiles")
# A run's TLS credentials in files (one self-signed certificate for every role, as Security.temporary).
_CREDENTIAL_FILES = {"ca_file": "ca.pem", "cert": "cert.pem", "key": "key.pem"}


@dataclass(frozen=True)
class ClusterProfile:
    """A validated cluster profile.

    ``options``: for ``local`` the resolved LocalCluster settings; for batch kinds the
    ``jobqueue.<kind>`` keys the profile sets (dask-jobqueue fills the rest from its own config).
    ``fit``/``learn``: batch kinds only, resolved (durations in seconds).
    ``tls``: batch kinds only; Dask traffic encrypted and authenticated with per-run credentials.
    """

    name: str
    kind: str
    options: Mapping[str, Any]
    fit: Mapping[str, Any] = field(default_factory=dict)
    learn: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    tls: bool = False


def load_profile(name_or_path: str | Path, base_dir: Path | None = None) -> ClusterProfile:
    """Find and validate a profile: a path to a YAML file, or NAME looked up as NAME.yaml in
    ``base_dir/cluster_profiles``, ``./cluster_profiles``, then the packaged profiles."""
    path = _find_profile(str(name_or_path), base_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; a cluster profile is YAML text") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the cluster profile ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{line}: {getattr(err, 'problem', err)}") from None
    return _parse_profile(raw, path)


@contextmanager
def open_client(profile: ClusterProfile, stage: str) -> Iterator[Client]:
    """A Client on the profile's cluster for one stage; the cluster (and its jobs) end on exit.

    Batch kinds: ``fit`` adapts between fit.minimum-jobs and fit.maximum-jobs with workers that
    retire before walltime; ``learn`` starts learn.jobs jobs and waits for all their workers.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    if profile.kind == "local":
        opts = profile.options
        # host: scheduler and workers listen on loopback only (no TLS: nobody else can connect).
        cluster = LocalCluster(n_workers=opts["n-workers"], threads_per_worker=opts["threads-per-worker"],
                               memory_limit=opts["memory-limit"], dashboard_address=opts["dashboard-address"],
                               processes=True, host="127.0.0.1")
    else:
        cluster = batch_cluster_class(profile.kind)(**_cluster_kwargs(profile, stage))
    with cluster, Client(cluster) as client, _watch_jobs(cluster, profile, stage):
        if profile.kind == "local":
            client.register_plugin(IgnoreCtrlC(), name="motex-ignore-ctrl-c")
        elif stage == "fit":
            cluster.adapt(minimum_jobs=profile.fit["minimum-jobs"], maximum_jobs=profile.fit["maximum-jobs"])
        else:
            _start_fixed(cluster, client, profile)
        log.info("%s stage on cluster profile '%s' (%s): %s; dashboard %s", stage, profile.name, profile.kind,
                 _describe(profile, stage, client), client.dashboard_link)
        yield client


# -- pending worker jobs ------------------------------------------------------------------------

#: Seconds between looks at the worker jobs' queue state; a pending job is reported at most every
#: JOB_REPORT_SECONDS (so at least once a minute while jobs wait).
JOB_POLL_SECONDS = 15.0
JOB_REPORT_SECONDS = 60.0
#: SLURM reasons (squeue %r) for a pending job that can never start as asked, and the profile key
#: to change (PartitionConfig: the job asks more CPUs or memory per node than the partition has).
NEVER_STARTS = {
    "PartitionConfig": "jobqueue.cores", "PartitionTimeLimit": "jobqueue.walltime",
    "PartitionNodeLimit": "jobqueue.job-extra-directives", "BadConstraints": "jobqueue.job-extra-directives",
    "InvalidAccount": "jobqueue.account", "InvalidQOS": "jobqueue.job-extra-directives",
    "QOSMaxCpuPerJobLimit": "jobqueue.cores", "AssocMaxCpuPerJobLimit": "jobqueue.cores",
    "QOSMaxMemoryPerJob": "jobqueue.memory", "QOSMaxWallDurationPerJobLimit": "jobqueue.walltime",
    "AssocMaxWallDurationPerJobLimit": "jobqueue.walltime", "QOSMaxNodePerJobLimit": "jobqueue.job-extra-directives",
    "AssocMaxNodePerJobLimit": "jobqueue.job-extra-directives",
}


@dataclass(frozen=True)
class QueuedJob:
    """A worker job as the batch system reports it."""

    job_id: str
    state: str
    reason: str = ""
    partition: str = ""


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout


def queued_jobs(job_ids: list[str]) -> list[QueuedJob]:
    """SLURM's state and reason (squeue) for those of the given jobs still in its queue."""
    if not job_ids:
        return []
    out = _run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%P"])
    return [QueuedJob(*line.split("|", 3)) for line in out.splitlines() if line.count("|") == 3]


def _largest_node(partition: str) -> tuple[int, int] | None:
    """(CPUs, memory MB) of the largest SLURM node in a partition, when sinfo tells."""
    try:
        rows = [line.split() for line in _run(["sinfo", "-h", "-p", partition, "-o", "%c %m"]).splitlines()]
        return max((int(c.rstrip("+")), int(m.rstrip("+"))) for c, m in rows)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _never_starts(job: QueuedJob, profile: ClusterProfile, stage: str) -> str:
    """The error line for a job that can never start: the reason and the profile key to change."""
    key = NEVER_STARTS[job.reason]
    cores, memory = _jobqueue_value(profile, "cores"), _jobqueue_value(profile, "memory")
    detail = ""
    if job.reason == "PartitionConfig":
        largest = _largest_node(job.partition)
        if largest is not None:
            if cores <= largest[0] and parse_bytes(str(memory)) > largest[1] * 2**20:
                key = "jobqueue.memory"
            detail = (f"; each job asks cores={cores}, memory={memory}, the largest node of partition "
                      f"'{job.partition}' has {largest[0]} CPUs and {largest[1]} MB")
    if stage == "learn" and key == "jobqueue.walltime" and profile.learn["walltime"] is not None:
        key = "learn.walltime"
    return (f"{stage} stage: SLURM can never start worker job {job.job_id} as asked (reason {job.reason}"
            f"{detail}); change '{key}' in {profile.source}; the fits done so far are kept")


class _JobWatch(threading.Thread):
    """Looks at the cluster's pending worker jobs: logs their state and reason now and then, and
    stops the run (Ctrl-C to the main thread, turned into a ClusterError) when one can never start."""

    def __init__(self, cluster: JobQueueCluster, profile: ClusterProfile, stage: str):
        super().__init__(name="motex-job-watch", daemon=True)
        self.cluster, self.profile, self.stage = cluster, profile, stage
        self.stop = threading.Event()
        self.error: ClusterError | None = None
        self.owner = threading.current_thread()

    def run(self) -> None:
        reported = -float("inf")
        while not self.stop.wait(JOB_POLL_SECONDS):
            try:
                ids = [str(job.job_id) for job in list(self.cluster.workers.values()) if getattr(job, "job_id", None)]
                pending = [j for j in queued_jobs(ids) if j.state not in ("RUNNING", "COMPLETING")]
            except (OSError, subprocess.SubprocessError, RuntimeError) as err:  # a slow or missing squeue
                log.debug("could not read the worker jobs' queue state: %s", err)
                continue
            never = [j for j in pending if j.reason in NEVER_STARTS]
            if never:
                self.error = ClusterError(_never_starts(never[0], self.profile, self.stage))
                if self.owner is threading.main_thread():  # interrupts the wait for workers or results
                    signal.pthread_kill(self.owner.ident, signal.SIGINT)
                else:
                    log.error("%s", self.error)
                return
            if pending and time.monotonic() - reported >= JOB_REPORT_SECONDS:
                reported = time.monotonic()
                workers = len(self.cluster.scheduler_info.get("workers", {}))
                states = ", ".join(f"{j.job_id} {j.state}" + (f" ({j.reason})" if j.reason else "") for j in pending)
                log.info("%s stage: %d worker job(s) waiting in the SLURM queue: %s; %d workers connected",
                         self.stage, len(pending), states, workers)


@contextmanager
def _watch_jobs(cluster: Any, profile: ClusterProfile, stage: str) -> Iterator[None]:
    """Watch the worker jobs of a SLURM cluster while the block runs (see `_JobWatch`)."""
    if profile.kind != "slurm":  # PBS and SGE report no reason a job waits
        yield
        return
    watch = _JobWatch(cluster, profile, stage)
    watch.start()
    try:
        yield
    except KeyboardInterrupt:
        if watch.error is not None:  # our own interrupt: the job can never start
            raise watch.error from None
        raise
    finally:
        watch.stop.set()
        watch.join(timeout=5)


class IgnoreCtrlC(WorkerPlugin):
    """Ctrl-C in a terminal reaches the local worker processes too (one process group); the run
    stops them itself, so they ignore it instead of each printing a traceback."""

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # a worker process's event loop
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def job_script(profile: ClusterProfile, stage: str = "fit") -> str:
    """The worker job script the profile submits for a stage (for ``motex run --dry-run``)."""
    if profile.kind == "local":
        return f"# cluster profile '{profile.name}' is kind local: workers run on this machine, no job is submitted\n"
    return _job(profile, _job_kwargs(profile, stage), "tcp://<scheduler-address>:8786").job_script()


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
    kwargs = _job_kwargs(profile, None)
    kwargs["job_name"] = f"motex-{campaign_path.stem}"
    kwargs.setdefault("log_directory", str(out.parent))
    job = _job(profile, kwargs, "unused")  # only its header and sizes are used
    prologue = _jobqueue_value(profile, "job-script-prologue") or []
    python = _jobqueue_value(profile, "python") or sys.executable
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
    cores = _jobqueue_value(profile, "cores")
    processes = _jobqueue_value(profile, "processes") or cores
    value = {key: _jobqueue_value(profile, key) for key in
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


def write_credentials(folder: Path) -> Security:
    """Make a run's TLS credentials and write them to ``folder`` (readable by the owner only)."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    config = Security.temporary().get_tls_config_for_role("client")
    for key, name in _CREDENTIAL_FILES.items():
        path = folder / name
        path.touch(mode=0o600)
        path.write_text(config[key])
    return read_credentials(folder)


def read_credentials(folder: Path) -> Security:
    """The Security of credentials written by `write_credentials`: every role, TLS required."""
    files = {key: str(Path(folder) / name) for key, name in _CREDENTIAL_FILES.items()}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise InputError(f"{folder}: TLS credentials missing ({', '.join(missing)}); write the batch script "
                         "again with `motex submit`")
    roles = {f"tls_{role}_{part}": files[part] for role in ("scheduler", "worker", "client") for part in ("cert", "key")}
    return Security(tls_ca_file=files["ca_file"], require_encryption=True, **roles)


@contextmanager
def allocation_client(profile: ClusterProfile, credentials: Path | None) -> Iterator[Client | None]:
    """Inside one multi-node allocation (every ``srun`` task calls this): task 0 runs the
    scheduler, task 1 the client (yields a Client on the whole allocation), the others workers.

    On every task but 1 this returns once the client has closed the cluster, yielding None.
    dask-jobqueue's SLURMRunner assigns the roles and shares the address through a file.
    """
    security = read_credentials(credentials) if credentials is not None else None
    protocol = "tls://" if security is not None else "tcp://"
    interface = _jobqueue_value(profile, "interface")
    cores = _jobqueue_value(profile, "cores")
    processes = _jobqueue_value(profile, "processes") or cores
    common = {"interface": interface, "security": security, "protocol": protocol}
    worker = {**common, "nthreads": max(cores // processes, 1),
              "memory_limit": parse_bytes(_jobqueue_value(profile, "memory")) // processes,
              "local_directory": _jobqueue_value(profile, "local-directory")}
    scheduler = {**common, "dashboard_address": ":0",
                 **{str(k).replace("-", "_"): v for k, v in (_jobqueue_value(profile, "scheduler-options") or {}).items()}}
    folder = Path(_jobqueue_value(profile, "log-directory") or Path.cwd())
    # The runner's scheduler and worker tasks run inside its constructor and end by sending
    # themselves SIGINT; ignored here, so that they return normally.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = _jobqueue().slurm.SLURMRunner(scheduler_file=str(folder / "motex-scheduler-{job_id}.json"),
                                               scheduler_options=scheduler, worker_options=worker)
    finally:
        signal.signal(signal.SIGINT, previous)
    if runner.role.name != "client":
        yield None
        return
    if security is not None:  # the runner's own link to the scheduler (to end it) has no credentials
        runner.scheduler_comm = rpc(runner.scheduler_address, connection_args=security.get_connection_args("client"))
    with runner, Client(runner, security=security) as client:
        client.wait_for_workers(runner.n_workers)
        log.info("allocation of %d nodes: %d workers; scheduler %s",
                 len({w["host"] for w in client.scheduler_info()["workers"].values()}), runner.n_workers,
                 client.scheduler.address)
        yield client


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


@functools.cache
def _jobqueue() -> types.ModuleType:
    """dask_jobqueue, imported on first use (it also registers its `jobqueue.*` config).

    Its import sets a Ctrl-C handler that exits silently; the handler in place before is put back,
    so an interrupted campaign still reports itself (and importing motex_dask changes no handler).
    """
    before = signal.getsignal(signal.SIGINT)
    import dask_jobqueue

    if before is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, before)
    return dask_jobqueue


def batch_cluster_class(kind: str) -> type[JobQueueCluster]:
    """The dask-jobqueue cluster class of a batch kind (slurm, pbs, sge)."""
    return getattr(_jobqueue(), BATCH_KINDS[kind])


# -- profiles -----------------------------------------------------------------------------------


def _find_profile(name: str, base_dir: Path | None) -> Path:
    given = Path(name).expanduser()
    if given.suffix in (".yaml", ".yml") or len(given.parts) > 1:
        if not given.is_file():
            raise InputError(f"cluster profile {given}: file not found")
        return given
    dirs = [d for d in (base_dir and Path(base_dir) / "cluster_profiles", Path.cwd() / "cluster_profiles",
                        *_PACKAGED_DIRS) if d]
    for d in dirs:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise InputError(f"cluster profile '{name}' not found (looked for {name}.yaml in "
                     f"{', '.join(str(d) for d in dict.fromkeys(dirs))}); known profiles: {', '.join(known) or 'none'}")


def _parse_profile(raw: Any, path: Path) -> ClusterProfile:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a cluster profile must be a YAML mapping with a 'kind' key")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{path}: 'kind' must be one of {', '.join(KINDS)} (got {kind!r})")
    _check_keys(raw, ("kind", "description", *_SECTIONS[kind]), path, "")
    if kind == "local":
        return ClusterProfile(path.stem, kind, _resolve_local(raw, path), source=path)
    jobqueue = _section(raw, "jobqueue", _jobqueue_keys(kind), path)
    tls = raw.get("tls", dask.config.get("motex.cluster.tls"))
    if not isinstance(tls, bool):
        raise InputError(f"{path}: 'tls' must be true (encrypt and authenticate Dask traffic with per-run "
                         f"credentials) or false (plain TCP, for a network only you can reach); got {tls!r}")
    if not tls and _jobqueue_value(ClusterProfile(path.stem, kind, jobqueue), "protocol") == "tls://":
        raise InputError(f"{path}: 'jobqueue.protocol' is tls:// but 'tls' is false; drop one of them")
    profile = ClusterProfile(path.stem, kind, jobqueue, source=path, tls=tls)
    for key in ("cores", "memory"):
        if _jobqueue_value(profile, key) is None:
            raise InputError(f"{path}: 'jobqueue.{key}' is required: the {key} of one {kind} job")
    cores = _jobqueue_value(profile, "cores")
    if not isinstance(cores, int) or cores < 1:
        raise InputError(f"{path}: 'jobqueue.cores' must be a whole number >= 1 (got {cores!r})")
    _parse(parse_bytes, _jobqueue_value(profile, "memory"), path, "jobqueue.memory", "a size such as 16GiB")
    processes = _jobqueue_value(profile, "processes")
    if processes is not None and (not isinstance(processes, int) or not 1 <= processes <= cores):
        raise InputError(f"{path}: 'jobqueue.processes' must be a whole number from 1 to cores={cores} (got {processes!r})")
    walltime = _walltime_seconds(_jobqueue_value(profile, "walltime"), path, "jobqueue.walltime")
    fit = _resolve_fit(_merged(raw, "fit", path), walltime, path)
    learn = _resolve_learn(_merged(raw, "learn", path), cores, path)
    return ClusterProfile(path.stem, kind, jobqueue, fit, learn, path, tls)


def _resolve_local(raw: dict, path: Path) -> dict[str, Any]:
    opts = _merged(raw, "local", path)
    n, threads = opts["n-workers"], opts["threads-per-worker"]
    if n is not None and (not isinstance(n, int) or n < 1):
        raise InputError(f"{path}: 'local.n-workers' must be a whole number >= 1 or null for one per CPU (got {n!r})")
    if not isinstance(threads, int) or threads < 1:
        raise InputError(f"{path}: 'local.threads-per-worker' must be a whole number >= 1 (got {threads!r})")
    if opts["memory-limit"] != "auto":
        _parse(parse_bytes, opts["memory-limit"], path, "local.memory-limit", "a size such as 4GiB, or auto")
    return opts


def _resolve_fit(fit: dict[str, Any], walltime: float | None, path: Path) -> dict[str, Any]:
    lo, hi = fit["minimum-jobs"], fit["maximum-jobs"]
    if not isinstance(lo, int) or not isinstance(hi, int) or not 0 <= lo <= hi or hi < 1:
        raise InputError(f"{path}: 'fit.minimum-jobs' and 'fit.maximum-jobs' must be whole numbers with "
                         f"0 <= minimum-jobs <= maximum-jobs and maximum-jobs >= 1 (got {lo!r}, {hi!r})")
    stagger = _parse(parse_timedelta, fit["lifetime-stagger"], path, "fit.lifetime-stagger", "a duration such as 2m")
    margin = _parse(parse_timedelta, fit["lifetime-margin"], path, "fit.lifetime-margin", "a duration such as 3m")
    if fit["lifetime"] == "auto":
        lifetime = None if walltime is None else walltime - stagger - margin
        if lifetime is not None and lifetime <= 0:
            raise InputError(f"{path}: the walltime ({walltime:.0f} s) leaves no worker lifetime after "
                             f"fit.lifetime-stagger + fit.lifetime-margin ({stagger + margin:.0f} s); "
                             "lengthen the walltime or set fit.lifetime explicitly")
    else:
        lifetime = _parse(parse_timedelta, fit["lifetime"], path, "fit.lifetime", "a duration such as 55m, or auto")
        if lifetime <= stagger:
            raise InputError(f"{path}: 'fit.lifetime' must be longer than fit.lifetime-stagger (got {lifetime:.0f} s)")
        if walltime is not None and lifetime + stagger >= walltime:
            raise InputError(f"{path}: fit.lifetime + fit.lifetime-stagger ({lifetime + stagger:.0f} s) must be "
                             f"shorter than the walltime ({walltime:.0f} s), so workers retire before the "
                             "batch system kills their job")
    if not isinstance(fit["lifetime-restart"], bool):
        raise InputError(f"{path}: 'fit.lifetime-restart' must be true or false")
    return {"minimum-jobs": lo, "maximum-jobs": hi, "lifetime": lifetime, "lifetime-stagger": stagger,
            "lifetime-restart": fit["lifetime-restart"]}


def _resolve_learn(learn: dict[str, Any], cores: int, path: Path) -> dict[str, Any]:
    jobs, processes = learn["jobs"], learn["processes"]
    if not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"{path}: 'learn.jobs' must be a whole number >= 1 (got {jobs!r})")
    if not isinstance(processes, int) or not 1 <= processes <= cores:
        raise InputError(f"{path}: 'learn.processes' must be a whole number from 1 to cores={cores} (got {processes!r})")
    _walltime_seconds(learn["walltime"], path, "learn.walltime")
    wait = _parse(parse_timedelta, learn["wait-timeout"], path, "learn.wait-timeout", "a duration such as 10m")
    return {"jobs": jobs, "processes": processes, "walltime": learn["walltime"], "wait-timeout": wait}


def _jobqueue_keys(kind: str) -> list[str]:
    _jobqueue()  # registers dask-jobqueue's config
    keys = [k.replace("_", "-") for k in dask.config.get(f"jobqueue.{kind}")]
    # Where `account` exists, `project` is its deprecated spelling (SGE's -P project is not).
    deprecated = (*_DEPRECATED, "project") if "account" in keys else _DEPRECATED
    return [k for k in keys if k not in deprecated]


def _check_keys(mapping: dict, allowed: tuple[str, ...] | list[str], path: Path, prefix: str) -> None:
    for key in mapping:
        if str(key).replace("_", "-") not in allowed:
            close = difflib.get_close_matches(str(key).replace("_", "-"), list(allowed), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
            raise InputError(f"{path}: unknown key '{prefix}{key}'; {hint}")


def _section(raw: dict, name: str, allowed: list[str], path: Path) -> dict[str, Any]:
    """One section of the profile with canonical (hyphenated) keys; unknown keys are errors."""
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        raise InputError(f"{path}: '{name}' must be a mapping of options (got {section!r})")
    _check_keys(section, allowed, path, f"{name}.")
    return {str(k).replace("_", "-"): v for k, v in section.items()}


def _merged(raw: dict, name: str, path: Path) -> dict[str, Any]:
    """motex.cluster.<name> from dask.config, overridden by the profile's non-null values."""
    defaults = {k.replace("_", "-"): v for k, v in dask.config.get(f"motex.cluster.{name}").items()}
    given = _section(raw, name, list(defaults), path)
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def _parse(parser: Any, value: Any, path: Path, key: str, expected: str) -> Any:
    try:
        return parser(value)
    except Exception:  # dask's parsers raise ValueError, TypeError, KeyError, AttributeError, …
        raise InputError(f"{path}: '{key}' must be {expected} (got {value!r})") from None


def _walltime_seconds(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    match = _WALLTIME.fullmatch(str(value))
    if match is None:
        raise InputError(f"{path}: '{key}' must be written [D-]HH:MM:SS, e.g. 01:00:00 (got {value!r})")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


# -- clusters and jobs --------------------------------------------------------------------------


def _jobqueue_value(profile: ClusterProfile, key: str) -> Any:
    """A jobqueue option as the jobs will see it: the profile's, else dask-jobqueue's config."""
    value = profile.options.get(key)
    _jobqueue()  # registers dask-jobqueue's config
    return value if value is not None else dask.config.get(f"jobqueue.{profile.kind}.{key}", None)


def _job_kwargs(profile: ClusterProfile, stage: str | None) -> dict[str, Any]:
    """dask-jobqueue keyword arguments for one stage's jobs (stage None: a whole-campaign job)."""
    opts = {k: v for k, v in profile.options.items() if v is not None and k not in _CLUSTER_KEYS}
    # Pass processes explicitly: dask-jobqueue only groups a job's workers when it is given, and
    # single-threaded workers suit the fits as they suit the local profile.
    opts["processes"] = _jobqueue_value(profile, "processes") or _jobqueue_value(profile, "cores")
    if stage == "learn":
        opts["processes"] = profile.learn["processes"]
        if profile.learn["walltime"] is not None:
            opts["walltime"] = profile.learn["walltime"]
    if stage == "fit" and profile.fit["lifetime"] is not None:
        opts["worker-extra-args"] = [
            *(_jobqueue_value(profile, "worker-extra-args") or []),
            "--lifetime", f"{profile.fit['lifetime']:.0f}s",
            "--lifetime-stagger", f"{profile.fit['lifetime-stagger']:.0f}s",
            *(["--lifetime-restart"] if profile.fit["lifetime-restart"] else []),
        ]
    return {_KWARG_NAMES.get(k, k.replace("-", "_")): v for k, v in opts.items()}


def _cluster_kwargs(profile: ClusterProfile, stage: str) -> dict[str, Any]:
    kwargs = _job_kwargs(profile, stage)
    scheduler = profile.options.get("scheduler-options")
    if scheduler is not None:
        kwargs["scheduler_options"] = {str(k).replace("-", "_"): v for k, v in scheduler.items()}
    if profile.tls:
        # New credentials for every cluster: a certificate from an earlier run opens nothing.
        # dask-jobqueue writes the workers' copy (mode 0600) into the shared temporary directory.
        kwargs["security"] = Security.temporary()
        kwargs["protocol"] = "tls://"
        folder = (_jobqueue_value(profile, "shared-temp-directory") or _jobqueue_value(profile, "log-directory")
                  or os.getcwd())
        Path(os.path.expandvars(folder)).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["shared_temp_directory"] = folder
    elif profile.options.get("shared-temp-directory") is not None:
        kwargs["shared_temp_directory"] = profile.options["shared-temp-directory"]
    return kwargs


def _job(profile: ClusterProfile, kwargs: dict[str, Any], scheduler: str) -> Job:
    try:
        return batch_cluster_class(profile.kind).job_cls(scheduler=scheduler, name="<worker-name>", **kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"{profile.source}: dask-jobqueue rejected the jobqueue options: {err}") from None


def _describe(profile: ClusterProfile, stage: str, client: Client) -> str:
    workers = client.scheduler_info()["workers"].values()
    if profile.kind == "local":
        return f"{len(workers)} local workers x {profile.options['threads-per-worker']} threads"
    if stage == "learn":
        return f"{len(workers)} workers in {profile.learn['jobs']} jobs"
    lifetime = profile.fit["lifetime"]
    return (f"adaptive, {profile.fit['minimum-jobs']}-{profile.fit['maximum-jobs']} jobs, worker lifetime "
            + ("none" if lifetime is None else f"{lifetime:.0f} s +- {profile.fit['lifetime-stagger']:.0f} s"))


def _start_fixed(cluster: JobQueueCluster, client: Client, profile: ClusterProfile) -> None:
    """Start learn.jobs jobs and wait for every worker: xgboost.dask needs a stable set."""
    cluster.scale(jobs=profile.learn["jobs"])
    expected = len(cluster.plan)
    timeout = profile.learn["wait-timeout"]
    try:
        client.wait_for_workers(expected, timeout=timeout)
    except TimeoutError:
        have = len(client.scheduler_info()["workers"])
        raise ClusterError(f"learn stage: {have} of {expected} workers started within {timeout:.0f} s "
                           f"(profile {profile.source}); check the queue and the job logs, or raise "
                           "learn.wait-timeout; the fits are kept") from None
