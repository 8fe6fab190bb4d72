"""Clients on a profile's cluster: a LocalCluster, an adaptive (fit) or fixed (learn) dask-jobqueue
cluster, or the Dask cluster inside one multi-node allocation."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import parse_bytes
from distributed import Client, LocalCluster, WorkerPlugin
from distributed.core import rpc
from distributed.security import Security

from ..errors import ClusterError
from .jobqueue import batch_cluster_class, job_kwargs, jobqueue, jobqueue_value
from .profile import STAGES, ClusterProfile
from .queue import watch_jobs
from .security import read_credentials

if TYPE_CHECKING:
    from dask_jobqueue.core import JobQueueCluster

log = logging.getLogger("motex_dask")


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
    with cluster, Client(cluster) as client, watch_jobs(cluster, profile, stage):
        if profile.kind == "local":
            client.register_plugin(IgnoreCtrlC(), name="motex-ignore-ctrl-c")
        elif stage == "fit":
            cluster.adapt(minimum_jobs=profile.fit["minimum-jobs"], maximum_jobs=profile.fit["maximum-jobs"])
        else:
            _start_fixed(cluster, client, profile)
        log.info("%s stage on cluster profile '%s' (%s): %s; dashboard %s", stage, profile.name, profile.kind,
                 _describe(profile, stage, client), client.dashboard_link)
        yield client


class IgnoreCtrlC(WorkerPlugin):
    """Ctrl-C in a terminal reaches the local worker processes too (one process group); the run
    stops them itself, so they ignore it instead of each printing a traceback."""

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # a worker process's event loop
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def allocation_client(profile: ClusterProfile, credentials: Path | None) -> Iterator[Client | None]:
    """Inside one multi-node allocation (every ``srun`` task calls this): task 0 runs the
    scheduler, task 1 the client (yields a Client on the whole allocation), the others workers.

    On every task but 1 this returns once the client has closed the cluster, yielding None.
    dask-jobqueue's SLURMRunner assigns the roles and shares the address through a file.
    """
    security = read_credentials(credentials) if credentials is not None else None
    protocol = "tls://" if security is not None else "tcp://"
    interface = jobqueue_value(profile, "interface")
    cores = jobqueue_value(profile, "cores")
    processes = jobqueue_value(profile, "processes") or cores
    common = {"interface": interface, "security": security, "protocol": protocol}
    worker = {**common, "nthreads": max(cores // processes, 1),
              "memory_limit": parse_bytes(jobqueue_value(profile, "memory")) // processes,
              "local_directory": jobqueue_value(profile, "local-directory")}
    scheduler = {**common, "dashboard_address": ":0",
                 **{str(k).replace("-", "_"): v for k, v in (jobqueue_value(profile, "scheduler-options") or {}).items()}}
    folder = Path(jobqueue_value(profile, "log-directory") or Path.cwd())
    # The runner's scheduler and worker tasks run inside its constructor and end by sending
    # themselves SIGINT; ignored here, so that they return normally.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = jobqueue().slurm.SLURMRunner(scheduler_file=str(folder / "motex-scheduler-{job_id}.json"),
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


def _cluster_kwargs(profile: ClusterProfile, stage: str) -> dict[str, Any]:
    kwargs = job_kwargs(profile, stage)
    scheduler = profile.options.get("scheduler-options")
    if scheduler is not None:
        kwargs["scheduler_options"] = {str(k).replace("-", "_"): v for k, v in scheduler.items()}
    if profile.tls:
        # New credentials for every cluster: a certificate from an earlier run opens nothing.
        # dask-jobqueue writes the workers' copy (mode 0600) into the shared temporary directory.
        kwargs["security"] = Security.temporary()
        kwargs["protocol"] = "tls://"
        folder = (jobqueue_value(profile, "shared-temp-directory") or jobqueue_value(profile, "log-directory")
                  or os.getcwd())
        Path(os.path.expandvars(folder)).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["shared_temp_directory"] = folder
    elif profile.options.get("shared-temp-directory") is not None:
        kwargs["shared_temp_directory"] = profile.options["shared-temp-directory"]
    return kwargs


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
