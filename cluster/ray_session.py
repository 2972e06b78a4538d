"""Starting or attaching Ray: a local instance (dashboard on 127.0.0.1) or the cluster named by RAY_ADDRESS."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .errors import ClusterError
from .runtime_env import build_runtime_env

JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a `ray job submit` job


@dataclass
class RaySession:
    """How this process is connected to Ray."""

    mode: str  # "local" (started here), "cluster" (RAY_ADDRESS), "job" (inside ray job submit), "existing"
    dashboard_url: str | None


@contextmanager
def ray_session(project_root: str | None = None) -> Iterator[RaySession]:
    """Use the Ray already initialised in this process, else RAY_ADDRESS's cluster, else start a local Ray.

    A driver attached to a cluster from outside a job ships `project_root` as its working_dir (see runtime_env).
    A local Ray binds its dashboard to 127.0.0.1 and is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield RaySession("existing", None)
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        in_job = JOB_ENV in os.environ
        runtime_env = None if in_job or project_root is None else build_runtime_env(project_root)
        try:
            context = ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address}: {exc}") from None
        mode = "job" if in_job else "cluster"
    else:
        context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1")
        mode = "local"
    try:
        url = context.dashboard_url
        yield RaySession(mode, f"http://{url}" if url and "://" not in url else url)
    finally:
        ray.shutdown()


def trial_slots(cpus: float, gpus: float) -> int:
    """How many trials asking `cpus` CPUs and `gpus` GPUs the connected cluster can run at once."""
    import ray

    total = ray.cluster_resources()
    slots = math.floor(total.get("CPU", 0) / cpus + 1e-9)
    if gpus > 0:
        slots = min(slots, math.floor(total.get("GPU", 0) / gpus + 1e-9))
    return slots


def describe_resources() -> str:
    """The connected cluster's CPUs, GPUs and nodes, in words."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs on {nodes} node{'s' if nodes != 1 else ''}"
