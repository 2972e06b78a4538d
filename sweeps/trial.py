"""The Ray Tune trainable: runs one piece (a trajectory, a branch/transfer run, a structured search or the retraining
of one of its subnetworks) into the results store.

Every finished level is reported to Tune with a checkpoint of its small files (masks and metrics, no weights) and
logged to MLflow from the worker into its series' run (whose status the driver keeps), with what its training used
(device, precision, samples/s, peak GPU memory), and the report says it was logged, so the driver does not check. A
retried trial (FailureConfig) re-enters the engine, which skips the levels already finished on disk and resumes at the
first unfinished one. A trial trains on the GPU Ray assigned it (several trials may share one: fractional `gpus`), or
on the CPU when it was assigned none, and frees that device's cached memory when it ends (workers are reused).

Before training, a trial checks that its node reads the data the driver planned with (fetching it into the node cache
when `data_dir` is a URI). With an object store as `storage`, the engine runs in the node's cache: the trial fetches
what its piece reads (`ResultsStore.stage`) and uploads each level as it finishes, `metrics.json` last
(`ResultsStore.publish`), before reporting it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace

import torch

from tickets.bisection import run_bisection
from tickets.branches import BranchConfig, run_branch
from tickets.devices import pick_device, release_memory, use_device
from tickets.imp import LevelResult, run_trajectory
from tickets.lineage import SUPERSEDES
from tickets.paths import REWIND_POINT_WEIGHTS, TRAINED_WEIGHTS
from tickets.standard import run_standard
from tickets.structured.runs import SearchConfig, run_retrain, run_search
from tickets.usage import METER

from .data_source import check_data, data_plan, local_recipe
from .plan import SEARCH_KINDS, STRUCTURED_SEARCH, Piece
from .store import ResultsStore
from .mlflow_runs import TrialRecorder
from .terminal import unevaluated_text

CHECKPOINT_SKIP = (TRAINED_WEIGHTS,)


def trial_config(piece: Piece, store: ResultsStore, tracking_uri: str, run_id: str | None) -> dict:
    """The Tune config of the trial that runs `piece`, logging to MLflow run `run_id` (None: the driver logs it)."""
    return {"piece": piece.to_dict(), "storage": store.storage, "storage_id": store.mark(),
            "data": data_plan(piece.recipe), "tracking_uri": tracking_uri, "run_id": run_id}


def trial_device() -> torch.device:
    """The device this Ray trial trains on: the GPU Ray assigned it, numbered among the visible ones, or the CPU."""
    import ray

    return pick_device(torch.cuda.device_count() if torch.cuda.is_available() else 0, ray.get_gpu_ids(),
                       os.environ.get("CUDA_VISIBLE_DEVICES"))


def run_piece(config: dict) -> None:
    """Tune function trainable: run the piece in `config` on the trial's device, reporting and logging each finished
    level."""
    device = trial_device()
    try:
        with use_device(device):
            _run_piece(config)
    finally:
        release_memory(device)


def _run_piece(config: dict) -> None:
    import ray
    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    METER.take()  # what an earlier trial on this worker left uncounted
    node_id = ray.get_runtime_context().get_node_id()
    piece = Piece.from_dict(config["piece"])
    piece = replace(piece, recipe=local_recipe(piece.recipe, config["data"]))
    check_data(piece.recipe, config["data"], node_id)
    store = ResultsStore(config["storage"])
    store.check_shared(config["storage_id"])
    local = store.stage(piece)
    recorder = TrialRecorder(config["tracking_uri"], config["run_id"])
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            restore_checkpoint(folder, local, piece)

    def finished(level: int, metrics: dict, reused: bool) -> None:
        store.publish(piece)
        result_dir = local.result_dir(piece, level)
        logged = recorder.level(piece, level, result_dir, METER.take(), trained=not reused)
        report = level_report(piece, level, metrics, reused, node_id, logged)
        if reused:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, os.path.basename(result_dir)) if piece.is_chain else tmp
            shutil.copytree(result_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*CHECKPOINT_SKIP))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))

    def on_level(result: LevelResult) -> None:
        finished(result.level, result.metrics, result.reused)

    if piece.is_trajectory:
        run_trajectory(piece.recipe, local.path(piece.key), on_level=on_level, progress=False)
    elif piece.kind in SEARCH_KINDS:
        run_bisection(piece.recipe, local.path(piece.source_key), local.path(piece.key), piece.options["tolerance"],
                      key=piece.key, on_level=on_level, progress=False, kind=piece.kind)
    elif piece.is_chain:
        run_standard(piece.recipe, local.path(piece.source_key), local.path(piece.key), key=piece.key,
                     on_level=on_level, progress=False)
    elif piece.is_structured:
        metrics = run_structured(piece, local)
        finished(piece.level, metrics, bool(metrics.get("reused")))
    else:
        branch = BranchConfig(piece.kind, piece.recipe, local.source_mask(piece), local.path(piece.source_key),
                              **(piece.options or {}))
        metrics = run_branch(branch, local.path(piece.key), run_key=piece.key, progress=False)
        finished(piece.level, metrics, bool(metrics.get("reused")))


def level_report(piece: Piece, level: int, metrics: dict, reused: bool, node_id: str,
                 logged: bool = False) -> dict:
    """What a trial reports to Tune for one finished level of `piece` (its record `metrics`): the main metric, or for
    a level a ticket search did not train to the end its `verdict`, where and how long it ran, and whether the trial
    `logged` it to MLflow."""
    return {
        "piece_key": piece.key, "kind": piece.kind, "level": level, "sparsity": metrics["sparsity"],
        "metric_name": metrics.get("main_metric", ""),
        "main_metric": metrics["metrics"].get(metrics.get("main_metric"), float("nan")),
        "verdict": unevaluated_text(metrics) if metrics.get("evaluated") is False else "",
        "trained": int(not reused), "started_at": metrics["started_at"], "finished_at": metrics["finished_at"],
        "level_wall_time_s": metrics["wall_time_s"], "node_id": node_id, "worker_pid": os.getpid(),
        "logged": int(logged), "superseded": int(SUPERSEDES in metrics and not reused),
    }


def run_structured(piece: Piece, store: ResultsStore) -> dict:
    """Run a structured search, or retrain one subnetwork of a finished search; return its metrics."""
    if piece.kind == STRUCTURED_SEARCH:
        return run_search(SearchConfig(piece.recipe, **piece.options), store.path(piece.key), progress=False)
    return run_retrain(piece.subnetwork, piece.recipe, store.path(piece.source_key), store.path(piece.key),
                       progress=False)


def restore_checkpoint(folder: str, store: ResultsStore, piece: Piece) -> None:
    """Put results a Tune checkpoint holds back into the results store when the store lost them."""
    target = store.path(piece.key)
    if piece.is_chain and not piece.is_trajectory:
        return  # a standard chain's next level needs trained weights, which checkpoints do not hold
    if not piece.is_trajectory:
        if store.level_metrics(piece, piece.level) is None:
            shutil.copytree(folder, target, dirs_exist_ok=True)
        return
    if not os.path.isfile(os.path.join(target, REWIND_POINT_WEIGHTS)):
        return
    for name in sorted(os.listdir(folder)):
        if name.startswith("level_") and not os.path.isdir(os.path.join(target, name)):
            shutil.copytree(os.path.join(folder, name), os.path.join(target, name))
