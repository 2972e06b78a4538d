"""The runtime_env a sweep ships to a cluster: the project's code, without history, caches, venvs or run outputs.

Ray also honours `.gitignore` and `.rayignore` in the working dir; `EXCLUDES` keeps the upload small even without
them. Ray refuses packages over its gRPC message limit (512 MiB by default) and the upload is slow long before that,
so `build_runtime_env` warns, naming the largest entries, once the files to upload pass half of the limit.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml

from .errors import ClusterError

EXCLUDES = [
    ".git", ".venv", "venv", "**/__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info",
    "mlruns", "mlruns.db", "mlartifacts", "runs", "sweep_storage", "ray_results", "reports", ".torch_extensions",
    "*.tmp", ".ipynb_checkpoints",
]
_LOG = logging.getLogger(__name__)
# RAY_JOB_STOP_WAIT_TIME_S: how long `ray job stop` waits after SIGTERM before it kills the driver (Ray's default is
# 3 s); the sweep needs longer to stop its trials and mark its MLflow runs KILLED.
ENV_VARS = {"MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_JOB_STOP_WAIT_TIME_S": "60"}


def upload_limit() -> int:
    """Ray's limit on one uploaded package, in bytes."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return GCS_STORAGE_MAX_SIZE


def upload_files(root: str, excludes: list[str] = EXCLUDES) -> dict[str, int]:
    """The files Ray would upload from `root` (its own exclusion rules plus `excludes`), with their sizes."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    base = Path(root).absolute()
    sizes: dict[str, int] = {}

    def add(path: Path) -> None:
        if path.is_file() and not path.is_symlink():
            sizes[str(path.relative_to(base))] = path.stat().st_size

    _dir_travel(base, [_get_excludes(base, excludes)], add, include_gitignore=True, logger=_LOG)
    return sizes


def build_runtime_env(root: str, env_vars: dict[str, str] | None = None, warn=None, limit: int | None = None) -> dict:
    """A runtime_env dict shipping `root` as the working dir; warns when the upload passes half of `limit`."""
    sizes = upload_files(root)
    total = sum(sizes.values())
    limit = limit or upload_limit()
    if total > limit // 2:
        (warn or _stderr)(size_warning(sizes, total, limit))
    return {"working_dir": str(root), "excludes": list(EXCLUDES), "env_vars": {**ENV_VARS, **(env_vars or {})}}


def size_warning(sizes: dict[str, int], total: int, limit: int) -> str:
    """A one-line warning naming the largest top-level entries of an oversized upload."""
    top: dict[str, int] = {}
    for name, size in sizes.items():
        head = name.split(os.sep, 1)[0]
        top[head] = top.get(head, 0) + size
    largest = ", ".join(f"{n} ({s / 2**20:.0f} MiB)" for n, s in sorted(top.items(), key=lambda kv: -kv[1])[:3])
    return (f"warning: the job upload is {total / 2**20:.0f} MiB (Ray's limit is {limit / 2**20:.0f} MiB); "
            f"largest: {largest}. Add them to .rayignore or cluster.runtime_env.EXCLUDES")


def write_runtime_env(root: str, path: str) -> dict:
    """Write the runtime_env as YAML for `ray job submit --runtime-env PATH`; returns it."""
    env = build_runtime_env(root)
    env["working_dir"] = "."
    try:
        Path(path).write_text(yaml.safe_dump(env, sort_keys=False))
    except OSError as exc:
        raise ClusterError(f"cannot write the runtime_env file '{path}': {exc.strerror or exc}") from None
    return env


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
