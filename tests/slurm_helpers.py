"""Shared by the SLURM test modules: the test campaign, its local reference run, and a worker
preload that records where every task ran."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from campaign_fixtures import write_campaign
from motex_dask.campaign import run_campaign
from motex_dask.campaign_file import load_campaign

SIZE, CHUNK = 2400, 100
LOCAL_PROFILE = """kind: local
local: {n-workers: 2, threads-per-worker: 1, dashboard-address: "127.0.0.1:0"}
"""
# A worker preload (dask-worker --preload) that records, for every task a worker finishes, the
# task's key, the SLURM job and the node the worker runs in: evidence of where the fits ran.
RECORDER = '''
import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

LOG = Path("@LOG@")  # not relative to __file__: workers import a copy of this file


class RecordTasks(WorkerPlugin):
    def setup(self, worker):
        LOG.mkdir(exist_ok=True)
        self.file = LOG / f"{os.environ['SLURM_JOB_ID']}-{os.getpid()}.txt"

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and finish == "memory":
            with self.file.open("a") as out:
                out.write(f"{key} {os.environ['SLURM_JOB_ID']} {os.environ.get('SLURMD_NODENAME')}\\n")


async def dask_setup(worker):
    await worker.plugin_add(RecordTasks(), name="record-tasks")
'''


def why_no_slurm(conf: str | None) -> str | None:
    """Why no SLURM controller answers for this slurm.conf (None: one does)."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo): run scripts/slurm_local.sh install && scripts/slurm_local.sh up"
    env = {**os.environ, **({"SLURM_CONF": conf} if conf else {})}
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld up? (scripts/slurm_local.sh status)"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no SLURM controller answers (scripts/slurm_local.sh up): {proc.stderr.strip()}"
    return None


def write_recorder(tmp_path: Path) -> Path:
    """The recorder preload, logging into tmp_path/task-log."""
    path = tmp_path / "recorder.py"
    path.write_text(RECORDER.replace("@LOG@", str(tmp_path / "task-log")))
    return path


def fit_tasks(tmp_path: Path, by: str = "job") -> dict[int, set[str]]:
    """Chunk -> the SLURM jobs (by="job") or nodes (by="node") whose workers completed its fit
    task (keys motex-fit-RUN-CHUNK-ATTEMPT)."""
    column = {"job": 1, "node": 2}[by]
    out: dict[int, set[str]] = {}
    for file in (tmp_path / "task-log").glob("*.txt"):
        for line in file.read_text().splitlines():
            fields = line.split(" ")
            if fields[0].startswith("motex-fit-"):
                out.setdefault(int(fields[0].split("-")[3]), set()).add(fields[column])
    return out


def local_reference(folder: Path) -> str:
    """The store of the test campaign fitted on an embedded LocalCluster."""
    (folder / "two.yaml").write_text(LOCAL_PROFILE)
    campaign = write_campaign(folder, size=SIZE, chunk_size=CHUNK)
    summary = run_campaign(campaign, cluster=str(folder / "two.yaml"), fits_only=True, progress=False)
    assert summary["fits"]["chunks"] == SIZE // CHUNK
    return load_campaign(campaign).store_path
