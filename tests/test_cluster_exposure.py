"""What listens where: on one machine every port of the local Ray of `python -m sweeps` is on loopback; a networked
head without token authentication is refused. (Every port of `cluster up` on one machine:
tests/test_cluster_services.py, with a job run on it; of its PostgreSQL server: tests/test_cluster_postgres.py.)"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile

import psutil
import pytest

from cluster.services import free_port, read_state
from conftest import REPO

# A driver that attaches (RAY_ADDRESS) or starts a local Ray through cluster.ray_session, runs tasks so workers
# exist, and prints every socket listening in the process trees of itself and of the pids given as arguments.
PROBE = """
import json, os, sys
import ray
sys.path.insert(0, os.path.join(os.environ["PROBE_REPO"], "tests"))
from cluster.ray_session import ray_session
from test_cluster_exposure import listening, process_tree

with ray_session() as session:
    @ray.remote
    def pid():
        return os.getpid()

    ray.get([pid.remote() for _ in range(2)])
    roots = [int(arg) for arg in sys.argv[1:]] + [os.getpid()]
    print("LISTENING " + json.dumps(listening(process_tree(roots))))
"""


def process_tree(roots: list[int]) -> set[int]:
    """The pids of `roots` and all their descendants that are alive now."""
    pids = set()
    for root in roots:
        try:
            process = psutil.Process(root)
            pids.add(root)
            pids.update(child.pid for child in process.children(recursive=True))
        except psutil.Error:
            continue
    return pids


def listening(pids: set[int]) -> list[list]:
    """[address, port, process name] of every TCP socket one of `pids` listens on."""
    found = []
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            found.append([conn.laddr.ip, conn.laddr.port, name])
    return found


def on_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped IPv6 forms."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def run_probe(tmp_path, roots: list[int], env: dict[str, str]) -> list[list]:
    """Run PROBE in a fresh interpreter; the listening sockets it saw."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(script), *map(str, roots)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**clean, "PROBE_REPO": str(REPO), **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("LISTENING "))
    return json.loads(line[len("LISTENING "):])


@pytest.mark.slow
def test_the_local_ray_of_a_sweep_listens_on_loopback_only(tmp_path):
    """Promise: the Ray that `python -m sweeps` starts for itself (cluster.ray_session, no RAY_ADDRESS) opens no
    port beyond loopback, workers included."""
    temp = tempfile.mkdtemp(prefix="rx", dir="/tmp")  # Ray's socket paths must stay short
    try:
        found = run_probe(tmp_path, [], {"RAY_TMPDIR": temp})
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    names = {name for _, _, name in found}
    assert {"gcs_server", "raylet"} <= names
    assert [entry for entry in found if not on_loopback(entry[0])] == []


def _network_address() -> str:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not on_loopback(address.address):
                return address.address
    pytest.skip("this machine has no network address")


def test_a_networked_head_without_token_authentication_is_refused(tmp_path):
    """Promise: `cluster up --node-ip-address ADDR` (a head other nodes can join) with RAY_AUTH_MODE=disabled stops
    with one line naming the problem, exit 2, and starts nothing."""
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "cluster", "up", "--state-dir", str(state), "--node-ip-address",
                           _network_address(), "--port", str(free_port())], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "token authentication" in done.stderr
    assert read_state(str(state)) is None
