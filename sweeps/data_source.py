"""The task data a trial reads: fetched into the node's cache when `data_dir` is a URI, and checked against what the
driver planned with (the data fingerprint that is part of every content key), so a node with other data fails with one
line naming the node and the file instead of training under a content key that is not its own."""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache

from cluster.storage import copy_source, fetch_copy, file_sha256
from tickets.config import TrajectoryConfig
from tickets.errors import TicketsError
from tickets.provenance import data_fingerprint
from tickets.tasks import get_kind, get_task

from .errors import SweepError


def data_plan(recipe: TrajectoryConfig) -> dict:
    """What the driver planned `recipe` with: the data's URI (when `data_dir` is a node-cache copy of one), its
    fingerprint, and the sha256 of each file read (by path relative to `data_dir`)."""
    return dict(_plan(get_task(recipe.task).name, recipe.data_dir))


@lru_cache(maxsize=None)
def _plan(task_name: str, data_dir: str | None) -> dict:
    task = get_task(task_name)
    files = {}
    if data_dir is not None:
        for _, path in get_kind(task.kind).data_files(task, data_dir):
            files[os.path.relpath(path, data_dir)] = file_sha256(str(path))
    return {"uri": copy_source(data_dir), "fingerprint": data_fingerprint(task, data_dir), "files": files}


def local_recipe(recipe: TrajectoryConfig, plan: dict) -> TrajectoryConfig:
    """`recipe` reading this node's copy of the data (fetched into the node cache when the data is a URI)."""
    return recipe if plan["uri"] is None else replace(recipe, data_dir=fetch_copy(plan["uri"]))


def check_data(recipe: TrajectoryConfig, plan: dict, node: str) -> None:
    """Fail, naming this node and the first file that differs, unless the data `recipe` reads here has the
    fingerprint the driver planned with."""
    task = get_task(recipe.task)
    try:
        if data_fingerprint(task, recipe.data_dir) == plan["fingerprint"]:
            return
    except TicketsError as exc:
        raise SweepError(f"node {node}: {exc}") from None
    where = plan["uri"] or recipe.data_dir or "the Hugging Face Hub"
    for name, planned in sorted(plan["files"].items()):
        path = os.path.join(recipe.data_dir, name)
        if not os.path.isfile(path) or file_sha256(path) != planned:
            raise SweepError(f"node {node}: data file '{path}' is not the one the driver planned with (sha256 "
                             f"{planned[:12]}...); every node must read the same data ({where})")
    raise SweepError(f"node {node}: the {task.name} data in {where} is not what the driver planned with")
