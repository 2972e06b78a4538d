"""`python -m cluster up/down`: a Ray head and an MLflow tracking server (with `--tracking postgres`, also the
PostgreSQL server MLflow stores runs in), every port on 127.0.0.1 unless a networked head is asked for.

`up` starts each service in its own process group, waits until it answers, and records process ids, ports and log
files in a state file as it goes, so `down` also stops a half-started set; `down` stops exactly those process groups
(SIGTERM; the postmaster SIGINT, its fast shutdown; then SIGKILL) and nothing else.

On one machine Ray's node address is 127.0.0.1 (`SINGLE_MACHINE_ENV`), so its GCS, raylet, object manager, workers,
dashboard agent and client server listen on loopback only. A networked head (`node_ip_address`) opens those ports on
that address, and `up` refuses one without Ray's token authentication.
"""

from __future__ import annotations

import ipaddress
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

from . import postgres
from .errors import ClusterError
from .ray_session import SINGLE_MACHINE_ENV
from .tracking import DEFAULT_ARTIFACTS, health_status, resolve_tracking_uri

DEFAULT_STATE_DIR = os.path.join("runs", "cluster")
STATE_FILE = "state.json"
HOST = "127.0.0.1"
TRACKING_STORES = ("sqlite", "postgres")


@dataclass
class UpOptions:
    """What `up` starts, on which ports, with which stores."""

    ray_port: int = 6379
    dashboard_port: int = 8265
    mlflow_port: int = 5000
    num_cpus: int | None = None
    num_gpus: int | None = None
    tracking: str = "sqlite"  # "sqlite": ./mlruns.db or `backend_store_uri`; "postgres": a server started here
    backend_store_uri: str | None = None  # a SQLite file or an existing database's postgresql:// URI
    postgres_port: int | None = None  # None: a free port
    artifacts: str = DEFAULT_ARTIFACTS
    node_ip_address: str | None = None  # None (or a loopback address): one machine, every port on 127.0.0.1
    timeout_s: float = 120.0

    @property
    def networked(self) -> bool:
        """True when the Ray head is to listen on a network address (a multi-node cluster)."""
        return self.node_ip_address is not None and not ipaddress.ip_address(self.node_ip_address).is_loopback


@dataclass
class Services:
    """What `up` started: process groups, addresses, files (the store URI without its password)."""

    ray_port: int
    dashboard_port: int
    mlflow_port: int
    tracking_uri: str
    backend_store_uri: str
    artifacts: str
    temp_dir: str
    auth_mode: str
    node_ip_address: str = HOST
    ray_pgid: int | None = None
    mlflow_pgid: int | None = None
    postgres_pgid: int | None = None
    postgres_port: int | None = None
    postgres_dir: str | None = None
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def dashboard_url(self) -> str:
        """Where `ray job submit --address` goes."""
        return f"http://{HOST}:{self.dashboard_port}"

    @property
    def ray_address(self) -> str:
        """The GCS address (RAY_ADDRESS for a driver; on a networked head, what worker nodes join)."""
        return f"{self.node_ip_address}:{self.ray_port}"

    @property
    def groups(self) -> list[int]:
        """The process groups started, in start order."""
        return [pgid for pgid in (self.postgres_pgid, self.mlflow_pgid, self.ray_pgid) if pgid is not None]


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


def _check_options(options: UpOptions, auth_mode: str) -> None:
    """Refuse what cannot work, before anything starts."""
    if options.tracking == "postgres" and options.backend_store_uri:
        raise ClusterError("give either --tracking postgres (a PostgreSQL server started here) or --backend-store-uri "
                           "(an existing store), not both")
    if options.networked and auth_mode == "disabled":
        raise ClusterError(f"a Ray head on {options.node_ip_address} opens its ports to the network and needs Ray's "
                           "token authentication: unset RAY_AUTH_MODE=disabled")
    ports = [(options.ray_port, "--port"), (options.dashboard_port, "--dashboard-port"),
             (options.mlflow_port, "--mlflow-port")]
    if options.postgres_port is not None:
        ports.append((options.postgres_port, "--postgres-port"))
    for port, flag in ports:
        _check_free(port, flag)
    if (options.backend_store_uri or "").startswith("postgresql"):
        postgres.check_uri(options.backend_store_uri)


def up(state_dir: str = DEFAULT_STATE_DIR, options: UpOptions | None = None) -> Services:
    """Start the tracking services and the Ray head, wait until each answers, and record them in the state file."""
    options = options or UpOptions()
    if read_state(state_dir) is not None:
        raise ClusterError(f"services are already up (state in {state_dir}); run `python -m cluster down` first")
    auth_mode = os.environ.get("RAY_AUTH_MODE", "token")
    _check_options(options, auth_mode)
    os.makedirs(state_dir, exist_ok=True)
    logs = {name: os.path.abspath(os.path.join(state_dir, f"{name}.log")) for name in ("postgres", "mlflow", "ray")}
    if options.tracking != "postgres":
        logs.pop("postgres")
    node_ip = options.node_ip_address if options.networked else HOST
    services = Services(options.ray_port, options.dashboard_port, options.mlflow_port,
                        f"http://{HOST}:{options.mlflow_port}", "", os.path.abspath(options.artifacts),
                        tempfile.mkdtemp(prefix=f"ray-{options.ray_port}-", dir="/tmp"), auth_mode, node_ip, logs=logs)
    _write_state(state_dir, services)
    try:
        store, store_env = _start_postgres(state_dir, options, services)
        services.backend_store_uri = postgres.redact(store)
        _write_state(state_dir, services)
        services.mlflow_pgid = start_mlflow_server(store, store_env, services.artifacts, services.mlflow_port,
                                                   services.logs["mlflow"], options.timeout_s).pid
        _write_state(state_dir, services)
        _start_ray(options, services)
        _write_state(state_dir, services)
    except BaseException:
        _write_state(state_dir, services)
        down(state_dir)
        raise
    return services


def _start_postgres(state_dir: str, options: UpOptions, services: Services) -> tuple[str, dict[str, str]]:
    """The backend store URI and the environment MLflow needs for it; with --tracking postgres, the server started."""
    if options.tracking != "postgres":
        return resolve_tracking_uri(options.backend_store_uri or os.path.join(os.getcwd(), "mlruns.db")), {}
    server, process = postgres.launch(os.path.join(state_dir, "postgres"), options.postgres_port or free_port(),
                                      services.logs["postgres"], options.timeout_s)
    services.postgres_pgid, services.postgres_port, services.postgres_dir = process.pid, server.port, server.folder
    return server.uri, server.env


def start_mlflow_server(store: str, store_env: dict[str, str], artifacts: str, port: int, log_path: str,
                        timeout_s: float = 120.0) -> subprocess.Popen:
    """An MLflow server on 127.0.0.1:`port` in a process group of its own, storing runs in `store` (its URI passed
    by environment, so no password shows in `ps`) and serving artifacts (mlflow-artifacts: URIs) from `artifacts`;
    returned once it answers /health, killed when it does not."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", artifacts, "--host", HOST,
           "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": store, **store_env}
    mlflow = _spawn(cmd, log_path, env)
    try:
        _wait_http(f"http://{HOST}:{port}", "/health", timeout_s, mlflow, log_path, "MLflow server")
    except BaseException:
        _signal_group(mlflow.pid, signal.SIGKILL)
        mlflow.wait()
        raise
    return mlflow


def _start_ray(options: UpOptions, services: Services) -> None:
    """The Ray head: dashboard on 127.0.0.1; its other ports on loopback, or on a networked head's address."""
    cmd = [_ray_executable(), "start", "--head", "--block", "--port", str(options.ray_port),
           "--node-ip-address", services.node_ip_address, "--include-dashboard=true", "--dashboard-host", HOST,
           "--dashboard-port", str(options.dashboard_port), "--temp-dir", services.temp_dir,
           "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
           "--disable-usage-stats"]
    cmd += ["--num-cpus", str(options.num_cpus)] if options.num_cpus is not None else []
    cmd += ["--num-gpus", str(options.num_gpus)] if options.num_gpus is not None else []
    # Jobs run `python` from the head's PATH: make it this interpreter (the project's virtualenv). Ray token
    # authentication stays on unless RAY_AUTH_MODE says otherwise.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {"RAY_USAGE_STATS_ENABLED": "0", "PATH": path, "RAY_AUTH_MODE": services.auth_mode}
    if not options.networked:
        env.update(SINGLE_MACHINE_ENV)
    ray = _spawn(cmd, services.logs["ray"], env)
    services.ray_pgid = ray.pid
    _wait_http(services.dashboard_url, "/api/gcs_healthz", options.timeout_s, ray, services.logs["ray"], "Ray head")


def down(state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 15.0) -> Services:
    """Stop the process groups `up` recorded (SIGTERM, the postmaster SIGINT; SIGKILL after `timeout_s`), forget
    them."""
    services = read_state(state_dir)
    if services is None:
        raise ClusterError(f"nothing to stop: no state file in {state_dir} (was `python -m cluster up` run here?)")
    groups = services.groups
    strays = _descendants_elsewhere(groups)  # e.g. Ray workers, which the raylet starts in sessions of their own
    for pgid in groups:
        if pgid == services.postgres_pgid:
            _signal_leader(pgid, postgres.STOP_SIGNAL)
        else:
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


def _signal_leader(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
