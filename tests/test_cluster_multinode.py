"""Dask on a multi-node SLURM: nodes are network namespaces with their own addresses on a bridge.

Needs ``eval "$(scripts/slurm_local.sh up --nodes 3)"`` (as root; .ci/run starts it). Skipped, with
the reason, otherwise. Events that must happen mid-campaign (an intruder while the scheduler runs,
a node lost while it fits) are triggered by a worker preload at a fixed point of the campaign (a
worker on a given node starting a fit), never at a moment on the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from campaign_fixtures import assert_same_store, write_campaign
from motex_dask.campaign import run_campaign
from motex_dask.cluster import ClusterProfile, load_profile, open_client, submit_batch_script, write_batch_script
from motex_dask.campaign_file import load_campaign
from motex_dask.store import CampaignStore, status_report
from slurm_helpers import CHUNK, SIZE, fit_tasks, local_reference, why_no_slurm, write_recorder

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
NODES = 3
CONF = Path(os.environ.get("MOTEX_SLURM_MULTI_DIR", "/tmp/motex-slurm-multi")) / "slurm.conf"
OUTSIDE = "motex-outside"  # a namespace on the bridge that runs no slurmd


def _why_not() -> str | None:
    if not CONF.is_file():
        return f"no multi-node SLURM ({CONF}): run scripts/slurm_local.sh up --nodes {NODES} (as root)"
    why = why_no_slurm(str(CONF))
    if why is None:
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env={**os.environ, "SLURM_CONF": str(CONF)},
                               capture_output=True, text=True).stdout.split()
        why = None if len(set(nodes)) >= NODES else f"the multi-node SLURM has {len(set(nodes))} nodes, not {NODES}"
    return why


NOT_UP = _why_not()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(NOT_UP is not None, reason=NOT_UP or "")]

# A worker preload that makes the campaign's course fixed: no worker starts fitting before a
# worker runs on each of the @NODES@ nodes (so every node gets its share, however slowly the jobs
# start), and the first time a worker on node @NODE@ starts its @NTH@-th fit, it writes the
# scheduler's address to @MARK@ and blocks its event loop until @RELEASE@ exists (or it is
# killed): the test acts while that fit is in flight.
GATE = '''
import os
import time
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

MARK, RELEASE, READY = Path("@MARK@"), Path("@RELEASE@"), Path("@READY@")


class Gate(WorkerPlugin):
    def setup(self, worker):
        self.worker, self.fits = worker, 0
        READY.mkdir(exist_ok=True)
        (READY / os.environ["SLURMD_NODENAME"]).touch()

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith("motex-fit-"):
            return
        while len(list(READY.iterdir())) < @NODES@:
            time.sleep(0.1)
        if os.environ["SLURMD_NODENAME"] != "@NODE@":
            return
        self.fits += 1
        if self.fits != @NTH@:
            return
        try:
            fd = os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one worker stops, once
        except FileExistsError:
            return
        os.write(fd, self.worker.scheduler.address.encode())
        os.close(fd)
        while not RELEASE.exists():
            time.sleep(0.1)


async def dask_setup(worker):
    await worker.plugin_add(Gate(), name="gate")
'''


@pytest.fixture(autouse=True)
def slurm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(CONF))
    monkeypatch.chdir(tmp_path)  # TLS credential files and job logs land in the test's folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return local_reference(tmp_path_factory.mktemp("local-reference"))


def multinode_profile(tmp_path: Path, gate: tuple[str, int] | None = None, **sections: dict) -> ClusterProfile:
    """The shipped slurm-multinode profile, its workers loading the task recorder (and a gate:
    (node, nth fit))."""
    raw = yaml.safe_load((REPO / "cluster_profiles" / "slurm-multinode.yaml").read_text())
    preload = ["--preload", str(write_recorder(tmp_path))]
    if gate is not None:
        node, nth = gate
        code = GATE
        for name, value in (("MARK", tmp_path / "gate-mark"), ("RELEASE", tmp_path / "gate-release"),
                            ("READY", tmp_path / "nodes-ready"), ("NODES", NODES), ("NODE", node), ("NTH", nth)):
            code = code.replace(f"@{name}@", str(value))
        (tmp_path / "gate.py").write_text(code)
        preload += ["--preload", str(tmp_path / "gate.py")]
    raw["jobqueue"].update({"log-directory": str(tmp_path / "logs"), "worker-extra-args": preload})
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = tmp_path / "cluster_profiles" / "multinode-test.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path.stem, base_dir=tmp_path)


def when_gate_closes(tmp_path: Path, action, timeout: float = 240) -> threading.Thread:
    """Run action(scheduler_address) in a thread once a worker has stopped at the gate."""
    errors: list[BaseException] = []

    def wait_and_act() -> None:
        deadline = time.monotonic() + timeout
        mark = tmp_path / "gate-mark"
        while not (mark.exists() and mark.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            action(mark.read_text())
        except BaseException as err:  # reported by the test, not lost in the thread
            errors.append(err)

    thread = threading.Thread(target=wait_and_act, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


# Run from the namespace of a host on the same network: first a plain TCP connection to the
# scheduler's port (reachable), then Dask clients without the run's credentials (refused).
INTRUDER = '''
import socket, sys
from distributed import Client
from distributed.security import Security

address = sys.argv[1]
host, port = address.split("://")[1].rsplit(":", 1)
socket.create_connection((host, int(port)), timeout=5).close()
print("reachable")
for name, url, security in (("plain", "tcp://" + host + ":" + port, None),
                            ("own-certificate", address, Security.temporary())):
    try:
        with Client(url, security=security, timeout=5) as client:
            print(name, "GOT IN", client.run(lambda: 1))
    except Exception as err:
        print(name, "refused:", type(err).__name__)
'''


def try_to_intrude(address: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", OUTSIDE, sys.executable, "-c", INTRUDER, address],
                          capture_output=True, text=True, timeout=120, env=os.environ)
    return proc.stdout + proc.stderr


def run_campaign_on(tmp_path: Path, profile: ClusterProfile) -> str:
    campaign = write_campaign(tmp_path / "campaign", size=SIZE, chunk_size=CHUNK)
    summary = run_campaign(campaign, cluster=str(profile.source), fits_only=True, progress=False)
    assert summary["fits"]["chunks"] == SIZE // CHUNK
    return load_campaign(campaign).store_path


@pytest.mark.timeout(300)
def test_campaign_on_three_nodes_equals_local_run_and_refuses_an_intruder(tmp_path: Path, reference: str) -> None:
    """Fits on three nodes over TLS; while node1 is mid-fit, a client from another namespace
    without the run's credentials reaches the scheduler's port and is refused."""
    profile = multinode_profile(tmp_path, gate=("node1", 1), fit={"minimum-jobs": NODES, "maximum-jobs": NODES})
    assert profile.tls
    seen: list[str] = []

    def intrude(address: str) -> None:
        seen.append(address)
        seen.append(try_to_intrude(address))
        (tmp_path / "gate-release").touch()

    thread = when_gate_closes(tmp_path, intrude)
    try:
        store = run_campaign_on(tmp_path, profile)
    finally:
        (tmp_path / "gate-release").touch()
    thread.join(30)
    assert not thread.errors, thread.errors
    address, report = seen
    assert address.startswith("tls://10.213.0.1:"), address  # the bridge, not loopback
    assert "reachable" in report and "GOT IN" not in report, report
    assert "plain refused" in report and "own-certificate refused" in report, report
    by_node = fit_tasks(tmp_path, by="node")
    assert sorted(by_node) == list(range(SIZE // CHUNK))
    assert set().union(*by_node.values()) == {f"node{k}" for k in range(1, NODES + 1)}
    # The store says the same: `motex status --json` counts the chunks each node fitted.
    status = subprocess.run([sys.executable, "-m", "motex_dask.cli", "status", store, "--json"],
                            capture_output=True, text=True, check=True)
    hosts = json.loads(status.stdout)["hosts"]
    assert set(hosts) == {f"node{k}" for k in range(1, NODES + 1)} and sum(hosts.values()) == SIZE // CHUNK
    assert CampaignStore.open_readonly(store).incomplete_chunks() == []
    assert_same_store(store, reference)


@pytest.mark.timeout(300)
def test_learn_stage_trains_on_workers_of_two_nodes(tmp_path: Path, planted_store) -> None:
    from conftest import PLANTED_SETTINGS
    from motex_dask.learn import load_features, train

    profile = multinode_profile(tmp_path, learn={"jobs": 2})
    features = load_features(planted_store.path)
    with open_client(profile, "learn") as client:
        nodes = client.run(lambda: os.environ["SLURMD_NODENAME"])
        assert len(set(nodes.values())) == 2, nodes
        assert all(address.startswith("tls://10.213.0.") for address in nodes)
        trained = train(client, features, replace(PLANTED_SETTINGS, n_trials=2, bootstrap=10))
    assert trained.booster.num_boosted_rounds() > 0


@pytest.fixture
def node3_back() -> Iterator[None]:
    """Start node3's slurmd again after a test that killed it."""
    yield
    subprocess.run([str(SCRIPT), "revive-node", "3", "--nodes", str(NODES)], check=True, timeout=120,
                   env={**os.environ, "SLURM_CONF": str(CONF)})


@pytest.mark.timeout(300)
def test_node_lost_mid_campaign_loses_no_fit(tmp_path: Path, reference: str, node3_back: None) -> None:
    """node3's second fit is in flight when every process of its namespace (slurmd, the worker
    job) is killed: the other nodes take its work and the store ends complete and equal to the
    local run."""
    profile = multinode_profile(tmp_path, gate=("node3", 2), fit={"minimum-jobs": NODES, "maximum-jobs": NODES})
    killed: list[str] = []

    def kill_node3(address: str) -> None:
        subprocess.run([str(SCRIPT), "kill-node", "3", "--nodes", str(NODES)], check=True, timeout=60)
        killed.append(address)

    thread = when_gate_closes(tmp_path, kill_node3)
    store = run_campaign_on(tmp_path, profile)
    thread.join(30)
    assert not thread.errors, thread.errors
    assert killed, "node3 never reached its second fit"
    by_node = fit_tasks(tmp_path, by="node")
    assert sorted(by_node) == list(range(SIZE // CHUNK))
    assert "node3" in set().union(*by_node.values())  # it worked before it was lost
    assert CampaignStore.open_readonly(store).incomplete_chunks() == []
    assert_same_store(store, reference)


@pytest.mark.timeout(300)
def test_submit_nodes_runs_scheduler_client_and_workers_in_one_allocation(
        tmp_path: Path, reference: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`motex submit --nodes 3 --now`: one 3-node allocation in which srun starts the scheduler,
    the client (the whole campaign: fits, learning, outputs) and workers over TLS; the fits run on
    all three nodes, and the job ends by itself once the campaign is done."""
    # The same catalogue as the reference; a small learn stage (no search, few replicates).
    campaign = write_campaign(tmp_path / "campaign", size=SIZE, chunk_size=CHUNK,
                              learn={"tune": False, "max_rounds": 200, "bootstrap": 10})
    # sbatch and srun pass the environment on: the runner's workers load the recorder through dask config.
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PRELOAD", json.dumps([str(write_recorder(tmp_path))]))
    raw = yaml.safe_load((REPO / "cluster_profiles" / "slurm-multinode.yaml").read_text())
    raw["jobqueue"]["log-directory"] = str(tmp_path / "logs")
    (tmp_path / "multinode-test.yaml").write_text(yaml.safe_dump(raw))
    profile = load_profile(tmp_path / "multinode-test.yaml")
    script = write_batch_script(campaign, profile, tmp_path / "campaign.slurm.sh", nodes=NODES)
    text = script.read_text()
    assert f"#SBATCH --nodes={NODES}" in text and "srun " in text and "--credentials" in text
    assert oct((tmp_path / "campaign.slurm.sh.tls").stat().st_mode & 0o777) == "0o700"
    job = submit_batch_script(script, profile)
    try:
        deadline = time.monotonic() + 270
        while job in squeue_ids() and time.monotonic() < deadline:
            time.sleep(1)
        finished = job not in squeue_ids()
    finally:
        subprocess.run(["scancel", job], check=True)
    by_node = fit_tasks(tmp_path, by="node")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.err"))
    assert finished, logs[-3000:]
    assert "Traceback" not in logs and "outputs in " in logs, logs[-3000:]
    assert sorted(by_node) == list(range(SIZE // CHUNK)), logs[-3000:]
    assert set().union(*by_node.values()) == {f"node{k}" for k in range(1, NODES + 1)}
    assert set().union(*fit_tasks(tmp_path, by="job").values()) == {job}  # one allocation
    hosts = status_report(load_campaign(campaign).store_path)["hosts"]
    assert set(hosts) == {f"node{k}" for k in range(1, NODES + 1)}, hosts
    # The scheduler (task 0, on node1) listened for TLS on the bridge.
    assert "allocation of 3 nodes: 3 workers; scheduler tls://10.213.0.11:" in logs, logs[-3000:]
    assert_same_store(load_campaign(campaign).store_path, reference)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())
