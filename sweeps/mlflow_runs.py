"""MLflow runs of a sweep, following cluster.conventions: one run per trajectory, branch runs nested under it.

Runs are found by their content-key tag, so a re-run never creates a second run for the same piece. A level counts as
logged once its `sparsity` metric is there (logged last), so logging can be re-attempted at any time: the trial logs
each level as it finishes, and the driver logs whatever a trial could not (a tracking server that was down) at the end
of every sweep from the results on disk.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

from cluster import conventions as cv
from cluster import tracking
from tickets.models import DEFAULT_MODEL
from tickets.paths import IMPORTANCE, METRICS
from tickets.records import finished_metrics
from tickets.tasks import get_task
from tickets.usage import Usage

from .plan import STRUCTURED_SEARCH, Piece
from .store import ResultsStore, mask_name

SCALARS = ("target_sparsity", "train_loss", "wall_time_s", "steps")
STRUCTURE_COUNTS = ("heads_kept", "heads_total", "mlps_kept", "mlps_total")
SEARCH_SCALARS = {"full_metric": "full_metric", "good_metric_before_retraining": "good_metric_before_retraining",
                  "weight_sparsity": "good_sparsity"}


def piece_tags(piece: Piece, parent_run_id: str | None) -> dict[str, str]:
    """The tags of a piece's run (conventions: task, seed, method, rewind, schedule, model, content key, kind...)."""
    cfg = piece.recipe
    tags = {
        cv.TAG_TASK: cfg.task, cv.TAG_SEED: str(cfg.seed), cv.TAG_METHOD: cfg.method, cv.TAG_REWIND: str(cfg.rewind),
        cv.TAG_REWIND_POINT: piece.rewind_label, cv.TAG_SCHEDULE: cfg.schedule,
        cv.TAG_MODEL: cfg.model or DEFAULT_MODEL, cv.TAG_CONTENT_KEY: piece.key,
        cv.TAG_MAIN_METRIC: get_task(cfg.task).main_metric,
        "mlflow.runName": piece.name,
    }
    if cfg.rewind_percent is not None:  # resolved to steps by the trajectory's level 0, which then sets the tag
        tags.pop(cv.TAG_REWIND)
    if get_task(cfg.task).dev_split:
        tags[cv.TAG_NOT_COMPARABLE] = "true"
    if piece.is_trajectory:
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_TRAJECTORY, cv.TAG_LEVELS_PLANNED: str(cfg.levels)})
    elif piece.is_structured:
        for tag in (cv.TAG_SCHEDULE, cv.TAG_REWIND_POINT):
            tags.pop(tag)
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_STRUCTURED, cv.TAG_SUBNETWORK: piece.subnetwork,
                     cv.TAG_METHOD: piece.options["strategy"]})
        if parent_run_id:
            tags[cv.TAG_PARENT_RUN] = parent_run_id
    else:
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_BRANCH, cv.TAG_BRANCH_KIND: piece.kind,
                     cv.TAG_SOURCE_TASK: piece.source_task, cv.TAG_SOURCE_LEVEL: str(piece.level)})
        if piece.options and "reinit_scope" in piece.options:
            tags[cv.TAG_REINIT_SCOPE] = piece.options["reinit_scope"]
        if piece.is_chain:
            tags[cv.TAG_LEVELS_PLANNED] = str(cfg.levels)
        if parent_run_id:
            tags[cv.TAG_PARENT_RUN] = parent_run_id
    return tags


def piece_params(piece: Piece) -> dict[str, str]:
    """The recipe as MLflow params (flat, strings)."""
    data = asdict(piece.recipe)
    train = data.pop("train")
    data.pop("levels")
    data.update({k: v for k, v in train.items() if k != "deepspeed"})
    if piece.is_structured:
        for imp_only in ("method", "rate", "schedule", "rewind", "rewind_head", "include_pooler"):
            data.pop(imp_only)
        data.update(piece.options)
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in data.items()}


def prepare_runs(client, experiment_id: str, pieces: list[Piece]) -> dict[str, str]:
    """The run id of every piece: found by content-key tag, or created (status SCHEDULED) when missing."""
    from mlflow.entities import Param

    existing = tracking.runs_by_tag(client, experiment_id, cv.TAG_CONTENT_KEY)
    run_ids = {key: run.info.run_id for key, run in existing.items()}
    for piece in sorted(pieces, key=lambda p: not p.is_root):
        if piece.key in run_ids:
            planned = str(piece.recipe.levels)
            if piece.is_trajectory and existing[piece.key].data.tags.get(cv.TAG_LEVELS_PLANNED) != planned:
                client.set_tag(run_ids[piece.key], cv.TAG_LEVELS_PLANNED, planned)
            continue
        tags = piece_tags(piece, run_ids.get(piece.source_key))
        run = client.create_run(experiment_id, tags=tags, run_name=piece.name)
        params = [Param(k, v) for k, v in piece_params(piece).items()]
        client.log_batch(run.info.run_id, params=params)
        client.update_run(run.info.run_id, status="SCHEDULED")
        run_ids[piece.key] = run.info.run_id
    return run_ids


def log_result(client, run_id: str, piece: Piece, level: int, result_dir: str) -> bool:
    """Log one finished level (metrics at step = level, mask and metrics.json artifacts); False if already logged."""
    if level in tracking.logged_steps(client, run_id, cv.METRIC_SPARSITY):
        return False
    metrics = finished_metrics(result_dir)
    tracking.log_file_as(client, run_id, os.path.join(result_dir, mask_name(piece)), cv.mask_artifact_path(level))
    tracking.log_file_as(client, run_id, os.path.join(result_dir, METRICS), cv.level_artifact_path(level))
    if piece.kind == STRUCTURED_SEARCH:
        tracking.log_file_as(client, run_id, os.path.join(result_dir, IMPORTANCE), IMPORTANCE)
    if "prunable_set" in metrics:
        client.set_tag(run_id, cv.TAG_PRUNABLE_SET, json.dumps(metrics["prunable_set"]))
    if "rewind_steps" in metrics:
        client.set_tag(run_id, cv.TAG_REWIND, str(metrics["rewind_steps"]))
    values = {k: v for k, v in metrics["metrics"].items() if isinstance(v, (int, float))}
    values.update({k: metrics[k] for k in SCALARS if isinstance(metrics.get(k), (int, float))})
    if piece.is_structured:
        values.update(structured_values(piece, metrics))
    values[cv.METRIC_SPARSITY] = metrics["sparsity"]
    tracking.log_step(client, run_id, level, values, last=cv.METRIC_SPARSITY)
    return True


def log_usage(client, run_id: str, level: int, used: Usage) -> None:
    """Log the device and precision a level trained with (tags) and its throughput and peak GPU memory (metrics)."""
    client.set_tag(run_id, cv.TAG_DEVICE, used.device)
    client.set_tag(run_id, cv.TAG_PRECISION, used.precision)
    values = {cv.METRIC_SAMPLES_PER_S: used.samples_per_s}
    if used.peak_memory_mb is not None:
        values[cv.METRIC_PEAK_MEMORY_MB] = used.peak_memory_mb
    tracking.log_step(client, run_id, level, values)


def structured_values(piece: Piece, metrics: dict) -> dict[str, float]:
    """The size of a structured run's subnetwork (a search's: of its good subnetwork, prefixed `good_`) and, for a
    search, the full model's metric and the good subnetwork's before retraining."""
    prefix = "good_" if piece.kind == STRUCTURED_SEARCH else ""
    values = {prefix + k: metrics["structure"][k] for k in STRUCTURE_COUNTS}
    values.update({name: metrics[k] for k, name in SEARCH_SCALARS.items() if k in metrics})
    return values


def reconcile(client, run_ids: dict[str, str], pieces: list[Piece], store: ResultsStore, ended: bool) -> int:
    """Log every finished level not yet in MLflow; with `ended`, mark runs FINISHED or FAILED. Returns levels logged."""
    logged = 0
    for piece in pieces:
        run_id = run_ids[piece.key]
        for level in store.finished_levels(piece):
            logged += log_result(client, run_id, piece, level, store.result_dir(piece, level))
        if store.is_complete(piece):
            client.set_terminated(run_id, "FINISHED")
        elif ended:
            client.set_terminated(run_id, "FAILED")
    return logged


class TrialRecorder:
    """MLflow logging from inside a trial that never stops training: a failing tracking store is reported once."""

    def __init__(self, uri: str, run_id: str):
        os.environ.update(tracking.WORKER_HTTP_ENV)
        self.run_id = run_id
        self.client = None
        self.failed = False
        self._call(self._connect, uri)

    def _connect(self, uri: str) -> None:
        self.client = tracking.client(uri)

    def _call(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - results are safe on disk; the driver logs them later
            self.failed = True
            print(f"warning: MLflow logging failed ({type(exc).__name__}: {exc}); results stay in the results store "
                  "and are logged at the end of the sweep or on the next run", file=sys.stderr, flush=True)

    def started(self) -> None:
        """Mark the run RUNNING."""
        self._call(lambda: self.client.update_run(self.run_id, status="RUNNING"))

    def usage(self, level: int, used: Usage | None) -> None:
        """Log what training used for `level` (nothing when it trained nothing): tags `device` and `precision`,
        metrics `samples_per_s` and, on a GPU, `peak_memory_mb`, at step = level."""
        if used is None:
            return
        self._call(lambda: log_usage(self.client, self.run_id, level, used))

    def level(self, piece: Piece, level: int, result_dir: str) -> None:
        """Log one finished level (no-op when already logged)."""
        self._call(lambda: log_result(self.client, self.run_id, piece, level, result_dir))

    def finished(self) -> None:
        """Mark the run FINISHED."""
        self._call(lambda: self.client.set_terminated(self.run_id, "FINISHED"))
