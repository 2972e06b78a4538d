"""`python -m cluster up/down`: a local Ray head and an MLflow tracking server, both bound to 127.0.0.1.

`up` starts each service in its own process group, waits until both answer, and records their process ids, ports
and log files in a state file; `down` stops exactly those process groups (SIGTERM, then SIGKILL) and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from .errors import ClusterError
from .tracking import DEFAULT_ARTIFACTS, health_status, resolve_tracking_uri

DEFAULT_STATE_DIR = os.path.join("runs", "cluster")
STATE_FILE = "state.json"
HOST = "127.0.0.1"


@dataclass
class Services:
    """What `up` started: process groups, addresses, files."""

    ray_pgid: int
    mlflow_pgid: int
    ray_port: int
    dashboard_port: int
    mlflow_port: int
    tracking_uri: str
    backend_store_uri: str
    artifacts: str
    temp_dir: str
    auth_mode: str
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def dashboard_url(self) -> str:
        """Where `ray job submit --address` goes."""
        return f"http://{HOST}:{self.dashboard_port}"

    @property
    def ray_address(self) -> str:
        """The GCS address (RAY_ADDRESS for a driver run from this machine)."""
        return f"{HOST}:{self.ray_port}"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _check_free(port: int, flag: str) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise ClusterError(f"port {port} on {HOST} is in use; pick another with {flag}") from None


def up(state_dir: str = DEFAULT_STATE_DIR, ray_port: int = 6379, dashboard_port: int = 8265, mlflow_port: int = 5000,
       num_cpus: int | None = None, num_gpus: int | None = None, backend_store_uri: str | None = None,
       artifacts: str = DEFAULT_ARTIFACTS, timeout_s: float = 120.0) -> Services:
    """Start the Ray head and the MLflow server, wait until both answer, and record them in the state file."""
    if read_state(state_dir) is not None:
        raise ClusterError(f"services are already up (state in {state_dir}); run `python -m cluster down` first")
    for port, flag in ((ray_port, "--port"), (dashboard_port, "--dashboard-port"), (mlflow_port, "--mlflow-port")):
        _check_free(port, flag)
    os.makedirs(state_dir, exist_ok=True)
    store = resolve_tracking_uri(backend_store_uri or os.path.join(os.getcwd(), "mlruns.db"))
    artifacts = os.path.abspath(artifacts)
    temp_dir = tempfile.mkdtemp(prefix=f"ray-{ray_port}-", dir="/tmp")
    logs = {name: os.path.abspath(os.path.join(state_dir, f"{name}.log")) for name in ("mlflow", "ray")}
    mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--artifacts-destination",
                  artifacts, "--host", HOST, "--port", str(mlflow_port), "--workers", "1"]
    mlflow = _spawn(mlflow_cmd, logs["mlflow"], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    ray_cmd = [_ray_executable(), "start", "--head", "--block", "--port", str(ray_port), "--include-dashboard=true",
               "--dashboard-host", HOST, "--dashboard-port", str(dashboard_port), "--temp-dir", temp_dir,
               "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
               "--disable-usage-stats"]
    ray_cmd += ["--num-cpus", str(num_cpus)] if num_cpus is not None else []
    ray_cmd += ["--num-gpus", str(num_gpus)] if num_gpus is not None else []
    # Jobs run `python` from the head's PATH: make it this interpreter (the project's virtualenv). Ray token
    # authentication stays on unless RAY_AUTH_MODE says otherwise (the GCS listens beyond loopback).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    auth_mode = os.environ.get("RAY_AUTH_MODE", "token")
    ray = _spawn(ray_cmd, logs["ray"], {"RAY_USAGE_STATS_ENABLED": "0", "PATH": path, "RAY_AUTH_MODE": auth_mode})
    services = Services(ray.pid, mlflow.pid, ray_port, dashboard_port, mlflow_port, f"http://{HOST}:{mlflow_port}",
                        store, artifacts, temp_dir, auth_mode, logs)
    _write_state(state_dir, services)
    try:
        _wait_http(services.tracking_uri, "/health", timeout_s, mlflow, logs["mlflow"], "MLflow server")
        _wait_http(services.dashboard_url, "/api/gcs_healthz", timeout_s, ray, logs["ray"], "Ray head")
    except ClusterError:
        down(state_dir)
        raise
    return services


def down(state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 30.0) -> Services:
    """Stop the process groups `up` recorded (SIGTERM, then SIGKILL after `timeout_s`) and forget them."""
    services = read_state(state_dir)
    if services is None:
        raise ClusterError(f"nothing to stop: no state file in {state_dir} (was `python -m cluster up` run here?)")
    groups = [services.ray_pgid, services.mlflow_pgid]
    strays = _descendants_elsewhere(groups)  # e.g. Ray workers, which the raylet starts in sessions of their own
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(_group_alive(pgid) for pgid in groups):
        time.sleep(0.5)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for process in strays:
        _kill_process(process)
    os.remove(os.path.join(state_dir, STATE_FILE))
    shutil.rmtree(services.temp_dir, ignore_errors=True)
    return services


def read_state(state_dir: str = DEFAULT_STATE_DIR) -> Services | None:
    """The services recorded in `state_dir`, or None."""
    path = os.path.join(state_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return Services(**json.load(handle))


def _write_state(state_dir: str, services: Services) -> None:
    path = os.path.join(state_dir, STATE_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(asdict(services), handle, indent=2)
    os.replace(path + ".tmp", path)


def _spawn(cmd: list[str], log_path: str, env: dict[str, str]) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env}, start_new_session=True)


def _ray_executable() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    found = beside if os.path.isfile(beside) else shutil.which("ray")
    if not found:
        raise ClusterError("the `ray` command is not installed (pip install 'ray[default]')")
    return found


def _wait_http(uri: str, path: str, timeout_s: float, process: subprocess.Popen, log_path: str, what: str) -> None:
    import requests

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"the {what} exited during start-up; see {log_path}")
        try:
            if health_status(uri, timeout_s=2, path=path) == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise ClusterError(f"the {what} did not answer {uri}{path} within {timeout_s:.0f} s; see {log_path}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants_elsewhere(pgids: list[int]) -> list:
    """Descendants of the group leaders `pgids` that live in other process groups."""
    import psutil

    found = []
    for pgid in pgids:
        try:
            children = psutil.Process(pgid).children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            try:
                if os.getpgid(child.pid) not in pgids:
                    found.append(child)
            except ProcessLookupError:
                continue
    return found


def _kill_process(process) -> None:
    import psutil

    try:
        process.kill()
    except psutil.Error:
        pass


def _group_alive(pgid: int) -> bool:
    """True while a process of the group runs (zombies, which only wait to be reaped, do not count)."""
    import psutil

    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
