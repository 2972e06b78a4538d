"""The instant engine of bench/scheduler_scale.py: what a sweep trial runs in place of training, a bare Tune no-op
trial of the same shape, and a count of every MlflowClient call, in the driver and in every Ray worker.

`install` (Ray's `worker_process_setup_hook` in the benchmark's workers) replaces the engine calls of `sweeps.trial`
(`run_trajectory`, `run_branch`) by functions that wait `SCALE_LEVEL_S` seconds per level, as if training, and write a
real result: a small real mask file and a metrics.json with every field a sweep reads, atomically, as the engine does. Nothing else of the sweep is replaced: the planner, the scheduler, Tune and the
MLflow logging run as in a real sweep. Each process appends every outermost MlflowClient call it makes (name, start,
seconds) to `SCALE_CALLS_DIR/<pid>.calls`, and each worker its trials' bodies and reports to Tune to `<pid>.steps`.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

LEVEL_S_ENV = "SCALE_LEVEL_S"
CALLS_DIR_ENV = "SCALE_CALLS_DIR"
MASK_SHAPE = (16, 16)
TENSOR = "layer.0.attention.self.query.weight"


def install() -> None:
    """In a Ray worker: replace the trial's engine calls by the instant engine, time each trial's body and its
    reports to Tune (SCALE_CALLS_DIR/<pid>.steps) and count MlflowClient calls."""
    import ray.tune
    import sweeps.trial

    sweeps.trial.run_trajectory = instant_trajectory
    sweeps.trial.run_branch = instant_branch
    folder = os.environ.get(CALLS_DIR_ENV)
    if folder is not None:
        steps = open(os.path.join(folder, f"{os.getpid()}.steps"), "a", buffering=1)
        sweeps.trial._run_piece = _counted("trial", sweeps.trial._run_piece, steps, threading.local())
        ray.tune.report = _counted("tune.report", ray.tune.report, steps, threading.local())
    count_mlflow_calls()


def count_mlflow_calls() -> None:
    """Append one line per outermost public MlflowClient call of this process to SCALE_CALLS_DIR/<pid>.calls: its
    name, when it started, how long it took, and whether the main thread made it."""
    from mlflow.tracking import MlflowClient

    folder = os.environ.get(CALLS_DIR_ENV)
    if folder is None or getattr(MlflowClient, "_scale_counted", False):
        return
    log = open(os.path.join(folder, f"{os.getpid()}.calls"), "a", buffering=1)
    depth = threading.local()  # shared: a call inside another call is not counted
    for name, method in vars(MlflowClient).items():
        if not name.startswith("_") and callable(method):
            setattr(MlflowClient, name, _counted(name, method, log, depth))
    MlflowClient._scale_counted = True


def _counted(name: str, method, log, depth: threading.local):
    """`method`, writing its name, start and seconds to `log` when no other call sharing `depth` is under way."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        outer = getattr(depth, "value", 0)
        depth.value = outer + 1
        started = time.time()
        try:
            return method(*args, **kwargs)
        finally:
            depth.value = outer
            if outer == 0:
                main = threading.current_thread() is threading.main_thread()
                log.write(f"{name} {started:.6f} {time.time() - started:.6f} {int(main)}\n")

    return call


@dataclass
class Calls:
    """MlflowClient calls of some processes: how many of each, and the seconds they took (all, and those made by the
    main thread that started inside a time window)."""

    count: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    seconds_within: float = 0.0
    seconds_by: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """All calls."""
        return sum(self.count.values())

    def seconds_of(self, name: str) -> float:
        """Seconds the calls called `name` took."""
        return self.seconds_by[name]


def read_calls(folder: str, pids: set[int] | None = None, exclude: set[int] = frozenset(),
               within: tuple[float, float] = (0.0, 0.0), kind: str = "calls") -> Calls:
    """The MlflowClient calls (`kind` steps: trial bodies and Tune reports) the processes that wrote to `folder` made
    (only `pids` when given, never `exclude`)."""
    calls = Calls()
    for name in os.listdir(folder):
        pid = int(name.split(".")[0])
        if not name.endswith("." + kind) or (pids is not None and pid not in pids) or pid in exclude:
            continue
        with open(os.path.join(folder, name)) as handle:
            for line in handle:
                call, started, seconds, main = line.split()
                calls.count[call] += 1
                calls.seconds += float(seconds)
                calls.seconds_by[call] += float(seconds)
                if int(main) and within[0] <= float(started) < within[1]:
                    calls.seconds_within += float(seconds)
    return calls


def _train() -> tuple[float, float]:
    """Stand in for training a level: wait SCALE_LEVEL_S seconds, count the samples as trained; (start, end)."""
    import torch

    from tickets.usage import METER

    started = time.time()
    time.sleep(float(os.environ.get(LEVEL_S_ENV, "0")))
    METER.add(torch.device("cpu"), "fp32", 64, max(time.time() - started, 1e-3))
    return started, time.time()


def _mask(sparsity: float, seed: int, metadata: dict):
    import torch

    from tickets.masks import Mask

    keep = torch.ones(MASK_SHAPE, dtype=torch.bool).flatten()
    pruned = round(sparsity * keep.numel())
    keep[torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(seed))[:pruned]] = False
    return Mask({TENSOR: keep.view(MASK_SHAPE)}, {k: str(v) for k, v in metadata.items()})


def _metrics(cfg, level: int, sparsity: float, started: float, finished: float) -> dict:
    """A finished level's metrics.json, with the fields a trial reports and the MLflow logging reads."""
    from tickets.tasks import get_task

    main = get_task(cfg.task).main_metric
    return {
        "level": level, "task": cfg.task, "seed": cfg.seed, "model": cfg.model or "tiny", "sparsity": sparsity,
        "prunable_set": [TENSOR], "steps": 8, "train_loss": 0.69, "wall_time_s": finished - started,
        "started_at": started, "finished_at": finished, "metrics": {main: 0.5 + 0.01 * level}, "main_metric": main,
        "eval_history": [],
    }


def instant_trajectory(cfg, out_dir: str, on_level=None, progress: bool = True) -> list:
    """`tickets.imp.run_trajectory` without training: levels 0..cfg.levels, each a mask and metrics.json after
    SCALE_LEVEL_S seconds; finished levels are reused."""
    from tickets.imp import LevelResult
    from tickets.paths import MASK, level_dir
    from tickets.pruning import target_sparsity
    from tickets.records import finished_metrics, write_result_dir

    results = []
    for level in range(cfg.levels + 1):
        directory = level_dir(out_dir, level)
        metrics = finished_metrics(directory)
        reused = metrics is not None
        if not reused:
            started, finished = _train()
            sparsity = target_sparsity(level, cfg.rate, cfg.schedule)
            mask = _mask(sparsity, cfg.seed * 100 + level, {"level": level, "source_task": cfg.task})
            metrics = {**_metrics(cfg, level, mask.sparsity, started, finished), "target_sparsity": sparsity,
                       "rewind_steps": 0, "content_key": cfg.content_key(level), "run_key": cfg.content_key()}
            write_result_dir(directory, lambda tmp, m=mask: m.save(os.path.join(tmp, MASK)), metrics)
        result = LevelResult(level, directory, metrics, reused=reused)
        results.append(result)
        if on_level is not None:
            on_level(result)
    return results


def instant_branch(cfg, out_dir: str, run_key: str | None = None, progress: bool = True) -> dict:
    """`tickets.branches.run_branch` without training: reads its source mask (which must exist), then writes a mask
    of that sparsity and metrics.json after SCALE_LEVEL_S seconds; a finished result is reused."""
    from tickets.masks import Mask
    from tickets.paths import MASK
    from tickets.records import reusable_metrics, write_result_dir

    key = cfg.content_key()
    reused = reusable_metrics(out_dir, key)
    if reused is not None:
        return reused
    source = Mask.load(cfg.mask_path)
    level = int(source.metadata["level"])
    started, finished = _train()
    mask = _mask(source.sparsity, cfg.trajectory.seed * 100 + level + 50, {"level": level, "branch": cfg.kind})
    metrics = {**_metrics(cfg.trajectory, level, mask.sparsity, started, finished), "branch": cfg.kind,
               "content_key": key, "run_key": run_key or key, "source_mask": os.path.abspath(cfg.mask_path),
               "source_mask_hash": source.content_hash(), "reused": False}
    write_result_dir(out_dir, lambda tmp: mask.save(os.path.join(tmp, MASK)), metrics)
    return metrics


def noop_trial(config: dict) -> None:
    """Bare Tune's trial: as many reports as the sweep piece it stands for (`piece`: its key and number of levels)
    has levels, each after `level_s` seconds,
    with the fields the benchmark's clock reads; no files, no MLflow, no checkpoints."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()
    piece = config["piece"]
    for level in range(piece["levels"]):
        started = time.time()
        time.sleep(config["level_s"])
        tune.report({"piece_key": piece["key"], "level": level, "started_at": started, "finished_at": time.time(),
                     "node_id": node_id})
