"""MLflow runs of a sweep, following cluster.conventions: one run per series, its levels as steps.

Runs are found by their content-key tag (the series key), so a re-run never creates a second run for the same series.
A run is created when its first trial gets a slot (or, for a series finished before this MLflow store knew it, from
the times its levels recorded), so its start and end bracket its own training. The driver owns every run's status:
RUNNING while a trial of the series runs, SCHEDULED while it waits for its next level, FINISHED once every level is
on disk, FAILED when the sweep ended without it, KILLED when a stop signal (Ctrl-C, `ray job stop`) ended it.
Workers only log levels. A level counts as logged once its `sparsity` metric is there (logged last), so logging can be
re-attempted at any time: the trial logs each level as it finishes, and the driver logs whatever a trial could not (a
tracking server that was down) when the trial ends and at the end of every sweep, from the results on disk.

MLflow traffic per level is a constant: a level a trial has just trained is logged without reading the run's history
(it cannot be there yet), with its tags in the same batch as its metrics, and the trial reports that it logged it, so
the driver never reads that history again. The driver's own calls (creating a run, its status) run on one background
thread, in order, so a slow tracking server never holds up Tune's event loop.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict

from cluster import conventions as cv
from cluster import tracking
from cluster.errors import ClusterError
from tickets.models import DEFAULT_MODEL
from tickets.paths import IMPORTANCE, METRICS
from tickets.records import finished_metrics
from tickets.tasks import get_task
from tickets.usage import Usage
from tickets.versions import LIBRARIES

from .plan import STRUCTURED_SEARCH, Piece
from .series import Series, group_series, is_per_level, level_sparsity, pruning_method, series_key
from .store import ResultsStore, mask_name

SCALARS = ("target_sparsity", "train_loss", "wall_time_s", "steps", "mask_check_s")
STRUCTURE_COUNTS = ("heads_kept", "heads_total", "mlps_kept", "mlps_total")
SEARCH_SCALARS = {"full_metric": "full_metric", "good_metric_before_retraining": "good_metric_before_retraining",
                  "weight_sparsity": "good_sparsity"}
METRIC_ACTUAL_SPARSITY = "actual_sparsity"
KNOWN_RUN_KINDS = (cv.RUN_KIND_TRAJECTORY, cv.RUN_KIND_BRANCH, cv.RUN_KIND_STRUCTURED)
VERSIONS_SEPARATOR = " | "


def series_tags(series: Series, source_run_id: str | None = None) -> dict[str, str]:
    """The tags of a series' run: run kind, series, task, seed, method, rewind, schedule, model, content key, levels,
    and what the kind adds (branch kind, source task and run, subnetwork, reinit scope...)."""
    piece = series.first
    cfg = piece.recipe
    tags = {
        cv.TAG_SERIES: series.label, cv.TAG_TASK: cfg.task, cv.TAG_SEED: str(cfg.seed),
        cv.TAG_METHOD: pruning_method(piece), cv.TAG_IMP_METHOD: cfg.method, cv.TAG_REWIND: str(cfg.rewind),
        cv.TAG_REWIND_POINT: piece.rewind_label, cv.TAG_SCHEDULE: cfg.schedule,
        cv.TAG_MODEL: cfg.model or DEFAULT_MODEL, cv.TAG_CONTENT_KEY: series.key,
        cv.TAG_MAIN_METRIC: get_task(cfg.task).main_metric, cv.TAG_LEVELS: ",".join(map(str, series.levels)),
        "mlflow.runName": series.name,
    }
    if cfg.rewind_percent is not None:  # resolved to steps by the trajectory's level 0, which then sets the tag
        tags.pop(cv.TAG_REWIND)
    if get_task(cfg.task).dev_split:
        tags[cv.TAG_NOT_COMPARABLE] = "true"
    if piece.is_trajectory:
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_TRAJECTORY, cv.TAG_LEVELS_PLANNED: str(cfg.levels)})
    elif piece.is_structured:
        for tag in (cv.TAG_SCHEDULE, cv.TAG_REWIND_POINT, cv.TAG_IMP_METHOD):
            tags.pop(tag)
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_STRUCTURED, cv.TAG_SUBNETWORK: piece.subnetwork})
        if source_run_id:
            tags[cv.TAG_PARENT_RUN] = source_run_id
    else:
        tags.update({cv.TAG_RUN_KIND: cv.RUN_KIND_BRANCH, cv.TAG_BRANCH_KIND: piece.kind,
                     cv.TAG_SOURCE_TASK: piece.source_task})
        if not is_per_level(piece) and not piece.is_chain:
            tags[cv.TAG_SOURCE_LEVEL] = str(piece.level)
        if piece.options and "reinit_scope" in piece.options:
            tags[cv.TAG_REINIT_SCOPE] = piece.options["reinit_scope"]
        if piece.is_chain:
            tags[cv.TAG_LEVELS_PLANNED] = str(cfg.levels)
        if source_run_id:
            tags[cv.TAG_SOURCE_RUN] = source_run_id
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


def check_layout(client, experiment_id: str, name: str) -> None:
    """Refuse an experiment written in the older one-run-per-branch-level layout; mark a new one as this layout."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(cv.EXPERIMENT_TAG_LAYOUT) == cv.LAYOUT_VERSION:
        return
    if any(client.search_runs([experiment_id], filter_string=f"tags.{cv.TAG_RUN_KIND} = '{kind}'", max_results=1)
           for kind in KNOWN_RUN_KINDS):
        raise ClusterError(
            f"MLflow experiment '{name}' was written by an older version of this tool (one run per branch level, "
            f"tracking layout 1); this version writes one run per series (layout {cv.LAYOUT_VERSION}). Rename the "
            f"sweep (spec `name:`) or delete the experiment (mlflow experiments delete --experiment-id "
            f"{experiment_id}) and re-run: finished results are reused from the results store, nothing is retrained")
    client.set_experiment_tag(experiment_id, cv.EXPERIMENT_TAG_LAYOUT, cv.LAYOUT_VERSION)


def log_result(client, run_id: str, piece: Piece, level: int, result_dir: str,
               versions_tags: dict[str, str] | None = None, used: Usage | None = None, check: bool = True) -> bool:
    """Log one finished level (metrics at step = level with its tags in one batch, mask and metrics.json artifacts,
    the library versions it ran on added to the run's versions tag, and what its training `used`); False if already
    logged. `check` False: the level was trained just now, so the run's history is not read (it cannot hold it).
    `versions_tags`: as `tag_versions` takes it."""
    logged = tracking.logged_steps(client, run_id, cv.METRIC_SPARSITY) if check else set()
    if level in logged:
        return False
    metrics = finished_metrics(result_dir)
    tracking.log_file_as(client, run_id, os.path.join(result_dir, mask_name(piece)), cv.mask_artifact_path(level))
    tracking.log_file_as(client, run_id, os.path.join(result_dir, METRICS), cv.level_artifact_path(level))
    if piece.kind == STRUCTURED_SEARCH:
        tracking.log_file_as(client, run_id, os.path.join(result_dir, IMPORTANCE), IMPORTANCE)
    tags = usage_tags(used)
    if "prunable_set" in metrics:
        tags[cv.TAG_PRUNABLE_SET] = json.dumps(metrics["prunable_set"])
    if "rewind_steps" in metrics:
        tags[cv.TAG_REWIND] = str(metrics["rewind_steps"])
    if "evaluated" in metrics:
        tags[cv.ticket_tag(level)] = ticket_evaluation(metrics)
    log_mask_distances(client, run_id, level, metrics.get("mask_distance") or [])
    tag_versions(client, run_id, metrics.get("versions"), bool(logged) or not check,
                 {} if versions_tags is None else versions_tags)
    values = {k: v for k, v in metrics["metrics"].items() if isinstance(v, (int, float))}
    values.update({k: metrics[k] for k in SCALARS if isinstance(metrics.get(k), (int, float))})
    if piece.is_structured:
        values.update(structured_values(piece, metrics))
    values.update(usage_values(used))
    values[cv.METRIC_LEVEL] = level
    values[METRIC_ACTUAL_SPARSITY] = metrics["sparsity"]
    values[cv.METRIC_SPARSITY] = level_sparsity(piece, level, metrics["sparsity"])
    tracking.log_step(client, run_id, level, values, last=cv.METRIC_SPARSITY, tags=tags)
    return True


def tag_versions(client, run_id: str, versions: dict | None, has_levels: bool, known: dict[str, str]) -> None:
    """Add the library versions a level ran on (its metrics.json `versions`; older records have none) to the run's
    versions tag, set only when its value changes. `known`: each run's tag as this caller last read or wrote it
    (updated here); the tag is read from MLflow only for a run that `known` lacks and that already `has_levels`."""
    if not versions:
        return
    if run_id not in known:
        known[run_id] = client.get_run(run_id).data.tags.get(cv.TAG_VERSIONS, "") if has_levels else ""
    merged = merged_versions(known[run_id], versions)
    if merged != known[run_id]:
        client.set_tag(run_id, cv.TAG_VERSIONS, merged)
        known[run_id] = merged


def merged_versions(tag: str, versions: dict) -> str:
    """The versions tag `tag` ('' when empty) with the set `versions` ('torch=2.13.0 transformers=5.25.0
    deepspeed=none') added after the sets it holds, unless it holds it already."""
    text = " ".join(f"{name}={versions.get(name) or 'none'}" for name in LIBRARIES)
    seen = tag.split(VERSIONS_SEPARATOR) if tag else []
    return tag if text in seen else VERSIONS_SEPARATOR.join([*seen, text])


def ticket_evaluation(metrics: dict) -> str:
    """How a ticket search's level record got its verdict: measured, predicted or inferred."""
    if metrics["evaluated"]:
        return "measured"
    return "predicted" if metrics.get("predicted") else "inferred"


def log_mask_distances(client, run_id: str, level: int, points: list[dict]) -> None:
    """Log a level's mask-distance curve as metric `mask_distance_level_XX` at step = training step."""
    from mlflow.entities import Metric

    key = f"{cv.METRIC_MASK_DISTANCE_PREFIX}{level:02d}"
    now = int(time.time() * 1000)
    batch = [Metric(key, float(p["distance"]), now, int(p["step"])) for p in points]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start:start + 1000])


def usage_tags(used: Usage | None) -> dict[str, str]:
    """The device and precision a level trained with, as tags (none when it trained nothing)."""
    return {} if used is None else {cv.TAG_DEVICE: used.device, cv.TAG_PRECISION: used.precision}


def usage_values(used: Usage | None) -> dict[str, float]:
    """A level's training throughput and, on a GPU, its peak memory, as metrics (none when it trained nothing)."""
    if used is None:
        return {}
    values = {cv.METRIC_SAMPLES_PER_S: used.samples_per_s}
    if used.peak_memory_mb is not None:
        values[cv.METRIC_PEAK_MEMORY_MB] = used.peak_memory_mb
    return values


def structured_values(piece: Piece, metrics: dict) -> dict[str, float]:
    """The size of a structured run's subnetwork (a search's: of its good subnetwork, prefixed `good_`) and, for a
    search, the full model's metric and the good subnetwork's before retraining."""
    prefix = "good_" if piece.kind == STRUCTURED_SEARCH else ""
    values = {prefix + k: metrics["structure"][k] for k in STRUCTURE_COUNTS}
    values.update({name: metrics[k] for k, name in SEARCH_SCALARS.items() if k in metrics})
    return values


class SweepRuns:
    """The runs of one sweep's series, kept by the sweep's driver: created when their training starts, their status
    true at every moment, their levels logged from the results store."""

    def __init__(self, client, experiment_id: str, plan: list[Piece], store: ResultsStore):
        self.client = client
        self.experiment_id = experiment_id
        self.store = store
        self.series = {series.key: series for series in group_series(plan)}
        existing = tracking.runs_by_tag(client, experiment_id, cv.TAG_CONTENT_KEY)
        self.run_ids = {key: run.info.run_id for key, run in existing.items()}
        self._status = {key: run.info.status for key, run in existing.items()}
        self.live: Counter[str] = Counter()
        self.logged_at_start = 0
        self._warned = False
        self._logged: set[tuple[str, int]] = set()  # (piece key, level) a trial reported logged
        self._creating: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._queue = ThreadPoolExecutor(1, thread_name_prefix="mlflow-runs")

    def __getstate__(self) -> dict:
        """Tune pickles its tuner settings, the searcher's closure over these runs included: leave the thread out."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_queue", "_lock", "_creating")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _creating={}, _lock=threading.Lock(),
                             _queue=ThreadPoolExecutor(1, thread_name_prefix="mlflow-runs"))

    def settle(self) -> int:
        """Before any trial: log what is on disk but not in MLflow, creating the runs of series that finished
        before this store knew them (their times from the levels' records), and set right the status a crashed
        driver left (RUNNING -> SCHEDULED; FINISHED once complete). Returns levels logged (kept as
        `logged_at_start`)."""
        logged = 0
        for series in self.series.values():
            known = series.key in self.run_ids
            if not known and not self._finished_levels(series):
                continue
            if not known:
                self._create(series, status="SCHEDULED")
            elif self._status[series.key] == "FINISHED" or (self._status[series.key] != "RUNNING"
                                                            and not self._complete(series)):
                continue
            logged += self._log_finished(series)
            self._settle_status(series, ended=False)
        self.logged_at_start = logged
        return logged

    def prepare(self, piece: Piece) -> bool:
        """Whether `piece`'s series has its run (or failed to get one: its trial then trains without logging); when
        not, its creation starts in the background and this returns False, so the caller never waits on MLflow."""
        key = series_key(piece)
        if key in self.run_ids:
            return True
        if key not in self._creating:
            self._creating[key] = self._queue.submit(self._guard, self._open, self.series[key])
        return self._creating[key].done()

    def open(self, piece: Piece) -> str | None:
        """The run id `piece`'s trial logs to, its series' run created now (SCHEDULED) unless `prepare` created it;
        it turns RUNNING when the trial gets its resources (`started`). None when the tracking store fails: the
        trial then trains without logging, and the driver logs its levels later."""
        series = self.series[series_key(piece)]
        self.live[series.key] += 1
        if series.key in self._creating:
            return self._creating[series.key].result()
        return self._guard(self._open, series)

    def started(self, piece: Piece) -> None:
        """A trial of `piece` (or its retry) got a slot: its series' run turns RUNNING (queued)."""
        run_id = self.run_ids.get(series_key(piece))
        if run_id is not None:
            self._queue.submit(self._guard, self.client.update_run, run_id, "RUNNING")

    def logged(self, piece_key: str, level: int) -> None:
        """A trial reported that it logged `level` of piece `piece_key`: nothing reads that level's history again."""
        self._logged.add((piece_key, level))

    def close(self, piece: Piece, failed: bool) -> None:
        """A trial of `piece` ended: log what it left unlogged; FINISHED when its series is complete, else SCHEDULED
        (or FAILED when it failed) once no other trial of the series runs (queued)."""
        series = self.series[series_key(piece)]
        self.live[series.key] = max(0, self.live[series.key] - 1)
        self._queue.submit(self._guard, self._close, series, piece, failed, self.live[series.key])

    def wait(self) -> None:
        """Return once every queued call (run creation, status, a closing trial's logging) is done."""
        self._queue.submit(lambda: None).result()

    def reconcile(self, ended: bool, unfinished: str = "FAILED") -> int:
        """Log every finished level not yet in MLflow; with `ended`, mark every run FINISHED or, when incomplete,
        `unfinished` (FAILED; KILLED when the sweep was stopped). Returns levels logged; raises what the tracking
        store raised."""
        self.wait()
        logged = 0
        for series in self.series.values():
            if series.key not in self.run_ids:
                if not self._finished_levels(series):
                    continue
                self._create(series, status="SCHEDULED")
            logged += self._log_finished(series)
            self._settle_status(series, ended, unfinished)
        return logged

    def _open(self, series: Series) -> str:
        with self._lock:
            if series.key not in self.run_ids:
                return self._create(series, status="SCHEDULED", start_s=time.time())
            return self.run_ids[series.key]

    def _close(self, series: Series, piece: Piece, failed: bool, live: int) -> None:
        if series.key not in self.run_ids:
            return
        self._log_finished(series, [piece])  # the series' other pieces may be training: their trials log them
        if self._complete(series):
            self._terminate(series, "FINISHED", time.time())
        elif not live:
            if failed:
                self._terminate(series, "FAILED", time.time())
            else:
                self.client.update_run(self.run_ids[series.key], status="SCHEDULED")

    def _create(self, series: Series, status: str, start_s: float | None = None) -> str:
        from mlflow.entities import Param

        piece = series.first
        source = self.run_ids.get(piece.source_key) if piece.source_key else None
        start = start_s or min(m["started_at"] for m in self._finished_metrics(series))
        run = self.client.create_run(self.experiment_id, start_time=int(start * 1000),
                                     tags=series_tags(series, source), run_name=series.name)
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in piece_params(piece).items()])
        self.client.update_run(run_id, status=status)
        self.run_ids[series.key] = run_id
        return run_id

    def _settle_status(self, series: Series, ended: bool, unfinished: str = "FAILED") -> None:
        run = self.client.get_run(self.run_ids[series.key])
        if self._complete(series):
            if run.info.status != "FINISHED":
                end = max(m["finished_at"] for m in self._finished_metrics(series))
                self._terminate(series, "FINISHED", end)
        elif ended:
            self._terminate(series, unfinished, time.time())
        elif run.info.status == "RUNNING":
            self.client.update_run(run.info.run_id, status="SCHEDULED")

    def _terminate(self, series: Series, status: str, end_s: float) -> None:
        self.client.set_terminated(self.run_ids[series.key], status, end_time=int(end_s * 1000))

    def _log_finished(self, series: Series, pieces: list[Piece] | None = None) -> int:
        """Log the series' finished levels (of its `pieces` only, when given) that its run lacks. Levels a trial
        reported logged are skipped unread; for the others the run's logged levels are read once, before any
        `result_dir`, which on an object store downloads the level's files."""
        unknown = [(piece, level) for piece, level in self._finished_levels(series, pieces)
                   if (piece.key, level) not in self._logged]
        if not unknown:
            return 0
        run_id = self.run_ids[series.key]
        logged = tracking.logged_steps(self.client, run_id, cv.METRIC_SPARSITY)
        versions_tags: dict[str, str] = {}  # trials write the tag too: what this driver knows holds for one call
        return sum(log_result(self.client, run_id, piece, level, self.store.result_dir(piece, level), versions_tags,
                              check=False)
                   for piece, level in unknown if level not in logged)

    def _finished_levels(self, series: Series, pieces: list[Piece] | None = None) -> list[tuple[Piece, int]]:
        return [(piece, level) for piece in pieces or series.pieces for level in self.store.finished_levels(piece)]

    def _finished_metrics(self, series: Series) -> list[dict]:
        return [self.store.level_metrics(piece, level) for piece, level in self._finished_levels(series)]

    def _complete(self, series: Series) -> bool:
        return all(self.store.is_complete(piece) for piece in series.pieces)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - results are safe on disk; the end of the sweep logs them
            if not self._warned:
                self._warned = True
                print(f"warning: MLflow failed ({type(exc).__name__}: {exc}); trials go on, their results stay in "
                      "the results store and are logged when the tracking store answers again", file=sys.stderr,
                      flush=True)
            return None


class TrialRecorder:
    """MLflow logging from inside a trial that never stops training: a failing tracking store is reported once."""

    def __init__(self, uri: str, run_id: str | None):
        os.environ.update(tracking.WORKER_HTTP_ENV)
        self.run_id = run_id
        self.client = None
        self.failed = run_id is None
        self.versions_tags: dict[str, str] = {}
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
                  "and are logged by the sweep's driver", file=sys.stderr, flush=True)

    def level(self, piece: Piece, level: int, result_dir: str, used: Usage | None, trained: bool) -> bool:
        """Log one finished level with what its training `used` (tags `device` and `precision`, metrics
        `samples_per_s` and, on a GPU, `peak_memory_mb`); a level finished before (not `trained` by this trial) only
        when not logged yet. True when the level is in MLflow."""
        self._call(lambda: log_result(self.client, self.run_id, piece, level, result_dir, self.versions_tags, used,
                                      check=not trained))
        return not self.failed


def run_status_callback(runs: SweepRuns, pieces: dict[str, Piece]):
    """A Tune callback (driver side) that closes a series' run when a trial of it ends."""
    from ray.tune import Callback

    class RunStatus(Callback):
        """Keeps MLflow run status true as Tune trials end, fail and are retried."""

        def __getstate__(self) -> dict:
            return {}  # Tune pickles callbacks with its experiment state; the runs are this driver's own

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            """A trial (or its retry) got a slot."""
            runs.started(pieces[trial.config["piece"]["key"]])

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            """A level finished; the trial says whether it logged it."""
            if result.get("logged"):
                runs.logged(result["piece_key"], int(result["level"]))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            """A trial ended well."""
            runs.close(pieces[trial.config["piece"]["key"]], failed=False)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            """A trial failed for good."""
            runs.close(pieces[trial.config["piece"]["key"]], failed=True)

    return RunStatus()
