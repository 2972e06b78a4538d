"""Running a sweep: MLflow first (fail before any training), then Ray Tune over the pieces not yet finished on disk."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

from cluster import tracking
from cluster.errors import ClusterError
from cluster.mlflow_view import comparison_url
from cluster.ray_session import describe_resources, fits_one_trial, ray_session

from .errors import SweepError
from .plan import Piece, build_plan
from .progress import SweepProgress
from .result import SweepResult
from .scheduler import PieceScheduler
from .spec import Spec
from .store import ResultsStore
from .mlflow_runs import SweepRuns, check_layout, run_status_callback
from .node_loss import NodeLossPolicy
from .stopping import stop_on_signals
from .sweep_run import close_sweep_run, open_sweep_run
from .trial import run_piece, trial_config

PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
PENDING_TRIALS = 200  # Ray Tune's own minimum of pending trials for fast autoscaling (its default for basic variants)


def run_sweep(spec: Spec, tracking_uri: str, console: Console | None = None, project_root: str | None = None,
              callbacks: list | None = None, spec_text: str | None = None) -> SweepResult:
    """Run every unfinished piece of `spec` on Ray Tune, log everything to MLflow, and say what happened.

    `spec_text` is the spec file as written (logged with the sweep's run; default: the validated spec as YAML)."""
    console = console or Console()
    plan = build_plan(spec)
    store = ResultsStore(spec.storage)
    runs, sweep_run_id = _open_runs(spec, plan, store, tracking_uri, spec_text or _spec_yaml(spec))
    store.mark()
    pending, stale = pending_pieces(plan, store)
    result = SweepResult(spec.name, spec.storage, tracking_uri, plan, experiment_id=runs.experiment_id,
                         stale=[piece.name for piece in stale])
    console.print(f"sweep [bold]{spec.name}[/]: {len(plan)} trials, {len(plan) - len(pending)} finished earlier, "
                  f"{len(pending)} to run; results store {store.root}; MLflow {tracking_uri}")
    if stale:
        console.print(f"[yellow]stale[/]: {len(stale)} finished trials were trained from inputs that have changed "
                      f"since (a mask or rewind point re-run): {', '.join(result.stale[:5])}"
                      f"{' ...' if len(stale) > 5 else ''}; their stale results are set aside and trained again")
    if pending:
        _run_tune(spec, pending, store, runs, console, project_root, callbacks or [], result)
    result.complete = [p.name for p in plan if store.is_complete(p)]
    result.failed = [p.name for p in plan if p.name not in set(result.complete)]
    try:
        unfinished = "KILLED" if result.stopped_by else "FAILED"
        result.levels_logged = runs.logged_at_start + runs.reconcile(ended=True, unfinished=unfinished)
        close_sweep_run(runs.client, sweep_run_id, complete=result.ok, stopped=bool(result.stopped_by))
        result.view_url = comparison_url(runs.client, tracking_uri, runs.experiment_id)
    except Exception as exc:  # noqa: BLE001 - the results are safe on disk; say how to finish logging them
        raise ClusterError(f"could not log results to MLflow at {tracking_uri} ({type(exc).__name__}: {exc}); "
                           f"they are safe in {store.root}: re-run the same spec to log them") from None
    return result


def pending_pieces(plan: list[Piece], store: ResultsStore) -> tuple[list[Piece], list[Piece]]:
    """(the pieces this sweep runs, those of them whose finished results are stale): every piece not finished or
    stale, and every piece that starts from what one of those trains (a trajectory's levels from the first it
    trains): its source may change, so its trial checks that it is still current, reusing it if so."""
    stale = [piece for piece in plan if store.is_complete(piece) and store.is_stale(piece)]
    keys = {piece.key for piece in plan if not store.is_complete(piece)} | {piece.key for piece in stale}
    trains_from = {piece.key: store.first_open_level(piece) for piece in plan
                   if piece.key in keys and piece.is_trajectory}
    grown = True
    while grown:
        followers = {piece.key for piece in plan if piece.source_key in keys
                     and (piece.level or 0) >= trains_from.get(piece.source_key, 0)} - keys
        keys |= followers
        grown = bool(followers)
    return [piece for piece in plan if piece.key in keys], stale


def _spec_yaml(spec: Spec) -> str:
    import yaml

    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _open_runs(spec: Spec, plan: list[Piece], store: ResultsStore, tracking_uri: str,
               spec_text: str) -> tuple[SweepRuns, str]:
    """Check the tracking store, find or create the experiment (refusing an older layout), log what the results
    store holds that MLflow lacks, and open the sweep's own run."""
    tracking.check_tracking(tracking_uri)
    try:
        client = tracking.client(tracking_uri)
        experiment_id = tracking.ensure_experiment(client, spec.name, tracking_uri)
        check_layout(client, experiment_id, spec.name)
        runs = SweepRuns(client, experiment_id, plan, store)
        runs.settle()
        return runs, open_sweep_run(client, experiment_id, spec, spec_text, plan)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - nothing has started yet; one line says what failed
        raise ClusterError(f"MLflow at {tracking_uri} failed while preparing runs ({type(exc).__name__}: {exc})") from None


def _run_tune(spec: Spec, pending: list[Piece], store: ResultsStore, runs: SweepRuns, console: Console,
              project_root: str | None, callbacks: list, result: SweepResult) -> None:
    """Run the pending pieces on Tune. Tune starts a trial whenever the cluster has the resources free (its pending
    trials are what the Ray autoscaler scales on); `resources.max_concurrent`, when set, caps the trials at once."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    with ray_session(project_root) as session, stop_on_signals() as stop:
        cap = spec.resources.max_concurrent
        want = f"{spec.resources.cpus:g} CPUs and {spec.resources.gpus:g} GPUs"
        if not fits_one_trial(spec.resources.cpus, spec.resources.gpus):
            if session.mode in ("local", "existing"):
                raise SweepError(f"the spec asks {want} per trial but no node of this Ray has that "
                                 f"({describe_resources()}); "
                                 "lower resources in the spec or attach to a bigger cluster (RAY_ADDRESS)")
            console.print(f"[yellow]warning[/]: no node of the cluster has {want} now ({describe_resources()}); "
                          "trials wait until the autoscaler adds nodes")
        dashboard = f", dashboard {session.dashboard_url}" if session.dashboard_url else ""
        limit = f", at most {cap} at once (resources.max_concurrent)" if cap else ""
        console.print(f"Ray ({session.mode}): {describe_resources()} now; a trial starts whenever {want} are "
                      f"free{limit}{dashboard}")
        running = {p.key for p in pending}  # a piece that runs reports its levels; only the others' are read
        ready = {(p.source_key, p.level) for p in pending
                 if not p.is_root and p.source_key not in running and store.source_ready(p)}
        uri = result.tracking_uri
        scheduler = PieceScheduler(pending, ready, lambda piece: trial_config(piece, store, uri, runs.open(piece)),
                                   prepare=runs.prepare)
        progress = SweepProgress(console)
        node_loss = NodeLossPolicy(console)
        trainable = tune.with_resources(run_piece, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(scheduler, max_concurrent=cap) if cap else scheduler,
                num_samples=len(pending), trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=store.ray_storage,
                storage_filesystem=store.ray_filesystem, stop=stop,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=[progress, node_loss, run_status_callback(runs, {p.key: p for p in pending}), *callbacks],
                verbose=0,
            ),
        )
        started = time.time()
        with pending_trials(PENDING_TRIALS):
            tuner.fit()
        result.wall_s = time.time() - started
    result.stopped_by = stop.signal_name
    result.exit_code = stop.exit_code
    result.peak_trials = progress.peak_trials
    result.trials = progress.trials
    result.busy_s = progress.busy_s
    result.train_s = progress.train_s
    result.levels_trained = progress.levels_trained
    result.nodes = progress.nodes
    result.retries = progress.retries
    result.superseded = progress.superseded
    result.node_losses = node_loss.node_losses
    for piece in scheduler.blocked:
        console.print(f"[red]skipped[/] {piece.name}: its source level never finished")


@contextmanager
def pending_trials(limit: int) -> Iterator[None]:
    """While inside, Tune keeps up to `limit` ready trials waiting for resources (Tune's own default for a custom
    search algorithm is one, so an autoscaler would add one node at a time); TUNE_MAX_PENDING_TRIALS_PG, when the
    user set it, wins."""
    if PENDING_TRIALS_ENV in os.environ:
        yield
        return
    os.environ[PENDING_TRIALS_ENV] = str(limit)
    try:
        yield
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


def _trial_name(trial) -> str:
    return trial.config["piece"]["name"]


def _trial_dirname(trial) -> str:
    return f"{trial.config['piece']['name']}_{trial.trial_id}"
