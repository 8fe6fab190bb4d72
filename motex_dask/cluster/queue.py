"""Worker jobs waiting in a SLURM queue: reported now and then, and a job that can never start
(e.g. it asks more than any node has) stops the run with one line naming the profile key to change."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_bytes

from ..errors import ClusterError
from .jobqueue import jobqueue_value
from .profile import ClusterProfile

if TYPE_CHECKING:
    from dask_jobqueue.core import JobQueueCluster

log = logging.getLogger("motex_dask")

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
    cores, memory = jobqueue_value(profile, "cores"), jobqueue_value(profile, "memory")
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
def watch_jobs(cluster: Any, profile: ClusterProfile, stage: str) -> Iterator[None]:
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
