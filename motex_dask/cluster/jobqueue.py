"""dask-jobqueue, imported on first use: its cluster classes, option values and job arguments."""

from __future__ import annotations

import functools
import signal
import threading
import types
from typing import TYPE_CHECKING, Any

import dask

from ..errors import InputError

if TYPE_CHECKING:
    from dask_jobqueue.core import Job, JobQueueCluster

    from .profile import ClusterProfile

#: Batch systems, each a dask-jobqueue cluster class (see `batch_cluster_class`).
BATCH_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
#: Profile keys that configure the cluster object, not its jobs.
CLUSTER_KEYS = ("scheduler-options", "shared-temp-directory")
#: Keys whose dask-jobqueue name differs from the profile's.
_KWARG_NAMES = {"name": "job_name"}


@functools.cache
def jobqueue() -> types.ModuleType:
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
    return getattr(jobqueue(), BATCH_KINDS[kind])


def jobqueue_value(profile: ClusterProfile, key: str) -> Any:
    """A jobqueue option as the jobs will see it: the profile's, else dask-jobqueue's config."""
    value = profile.options.get(key)
    jobqueue()  # registers dask-jobqueue's config
    return value if value is not None else dask.config.get(f"jobqueue.{profile.kind}.{key}", None)


def job_kwargs(profile: ClusterProfile, stage: str | None) -> dict[str, Any]:
    """dask-jobqueue keyword arguments for one stage's jobs (stage None: a whole-campaign job)."""
    opts = {k: v for k, v in profile.options.items() if v is not None and k not in CLUSTER_KEYS}
    # Pass processes explicitly: dask-jobqueue only groups a job's workers when it is given, and
    # single-threaded workers suit the fits as they suit the local profile.
    opts["processes"] = jobqueue_value(profile, "processes") or jobqueue_value(profile, "cores")
    if stage == "learn":
        opts["processes"] = profile.learn["processes"]
        if profile.learn["walltime"] is not None:
            opts["walltime"] = profile.learn["walltime"]
    if stage == "fit" and profile.fit["lifetime"] is not None:
        opts["worker-extra-args"] = [
            *(jobqueue_value(profile, "worker-extra-args") or []),
            "--lifetime", f"{profile.fit['lifetime']:.0f}s",
            "--lifetime-stagger", f"{profile.fit['lifetime-stagger']:.0f}s",
            *(["--lifetime-restart"] if profile.fit["lifetime-restart"] else []),
        ]
    return {_KWARG_NAMES.get(k, k.replace("-", "_")): v for k, v in opts.items()}


def make_job(profile: ClusterProfile, kwargs: dict[str, Any], scheduler: str) -> Job:
    """One dask-jobqueue job object (for its script and sizes); bad options are an InputError."""
    try:
        return batch_cluster_class(profile.kind).job_cls(scheduler=scheduler, name="<worker-name>", **kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"{profile.source}: dask-jobqueue rejected the jobqueue options: {err}") from None
