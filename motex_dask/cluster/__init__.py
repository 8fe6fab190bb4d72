"""Where the Dask workers run: an embedded LocalCluster, or SLURM/PBS/SGE jobs through dask-jobqueue.

A cluster profile (``cluster_profiles/NAME.yaml``) names a ``kind`` and its options:

* ``kind: local`` and a ``local:`` section (LocalCluster settings);
* ``kind: slurm | pbs | sge`` and a ``jobqueue:`` section holding dask-jobqueue's own keys
  (those of ``jobqueue.<kind>`` in its jobqueue.yaml), plus ``fit:`` and ``learn:`` sections that
  say how each stage scales.

Defaults live in ``motex_dask/cluster.yaml`` (the usual dask config files and
``DASK_MOTEX__CLUSTER__...`` variables override them); the profile file overrides both. The fit
stage runs on an adaptive cluster whose workers retire (``--lifetime``) before the batch system's
walltime, so jobs are replaced instead of killed; the learn stage runs on a fixed set of workers
because xgboost.dask hangs when a worker leaves during training.

Security: anyone who can reach a Dask scheduler can run code as its owner. Batch profiles
therefore speak TLS with credentials made for each run (``Security.temporary()``; the workers get
them through files only the owner can read, in the shared temporary directory), unless the
profile says ``tls: false``; the local cluster listens on the loopback interface only.

Modules, in the order they build on each other: ``jobqueue`` (dask-jobqueue, imported on first
use), ``profile`` (reading and validating profiles), ``security`` (TLS credentials), ``queue``
(pending SLURM jobs), ``scripts`` (batch scripts and their submission), ``client`` (clusters).
"""

from .client import allocation_client, open_client
from .profile import KINDS, STAGES, ClusterProfile, load_profile
from .scripts import job_script, submit_batch_script, write_batch_script

__all__ = ["KINDS", "STAGES", "ClusterProfile", "allocation_client", "job_script", "load_profile", "open_client",
           "submit_batch_script", "write_batch_script"]
