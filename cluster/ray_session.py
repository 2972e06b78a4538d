"""Starting or attaching Ray: a local instance (every port on 127.0.0.1) or the cluster named by RAY_ADDRESS."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

from .errors import ClusterError
from .runtime_env import build_runtime_env

JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a `ray job submit` job
# Ray's switch for machines where it supports no multi-node cluster (Windows, macOS): with it, Ray takes 127.0.0.1 as
# the node's address and binds every port there. A Ray for one machine sets it on Linux too.
SINGLE_MACHINE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class RaySession:
    """How this process is connected to Ray."""

    mode: str  # "local" (started here), "cluster" (RAY_ADDRESS), "job" (inside ray job submit), "existing"
    dashboard_url: str | None


@contextmanager
def ray_session(project_root: str | None = None) -> Iterator[RaySession]:
    """Use the Ray already initialised in this process, else RAY_ADDRESS's cluster, else start a local Ray.

    A driver attached to a cluster from outside a job ships `project_root` as its working_dir (see runtime_env); one
    attached to a head on loopback (`cluster up` on one machine) keeps 127.0.0.1 as its own address too.
    A local Ray takes 127.0.0.1 as its node address, so its dashboard, GCS, raylet, workers and agents listen on
    loopback only; it is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield RaySession("existing", None)
        return
    with _caller_sigterm_handler():
        mode, context = _start_or_attach(project_root)
    try:
        url = context.dashboard_url
        yield RaySession(mode, f"http://{url}" if url and "://" not in url else url)
    finally:
        ray.shutdown()


def _start_or_attach(project_root: str | None):
    """Attach to RAY_ADDRESS's cluster or start a local Ray; returns the mode and Ray's context."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        in_job = JOB_ENV in os.environ
        runtime_env = None if in_job or project_root is None else build_runtime_env(project_root)
        try:
            with single_machine() if on_loopback(address) else nullcontext():
                context = ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address}: {exc}") from None
        mode = "job" if in_job else "cluster"
    else:
        with single_machine():
            context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1")
        mode = "local"
    return mode, context


@contextmanager
def _caller_sigterm_handler() -> Iterator[None]:
    """Keep this process's SIGTERM handler: ray.init replaces it with one that exits at once (code 1), which would
    leave the caller no chance to stop cleanly (`ray job stop` sends SIGTERM); Ray's processes are shut down when
    the session ends either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:  # None: a handler installed outside Python, which Python cannot put back
            signal.signal(signal.SIGTERM, handler)


def on_loopback(address: str) -> bool:
    """True when a Ray address (`HOST:PORT`, `ray://HOST:PORT`) names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def single_machine() -> Iterator[None]:
    """While inside, a Ray started by this process takes 127.0.0.1 as its node's address (Ray's mode for machines
    without multi-node support), so every process it starts listens on loopback only."""
    from ray._private import ray_constants

    saved_env = {name: os.environ.get(name) for name in SINGLE_MACHINE_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER  # read from the environment when Ray was imported
    os.environ.update(SINGLE_MACHINE_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for name, value in saved_env.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def fits_one_trial(cpus: float, gpus: float) -> bool:
    """True when some live node of the connected cluster has `cpus` CPUs and `gpus` GPUs (one trial's bundle)."""
    import ray

    return any(node["Resources"].get("CPU", 0) + 1e-9 >= cpus and node["Resources"].get("GPU", 0) + 1e-9 >= gpus
               for node in ray.nodes() if node.get("Alive"))


def describe_resources() -> str:
    """The connected cluster's CPUs, GPUs and nodes, in words."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs on {nodes} node{'s' if nodes != 1 else ''}"
