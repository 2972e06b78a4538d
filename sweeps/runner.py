"""Running a sweep: MLflow first (fail before any training), then Ray Tune over the pieces not yet finished on disk."""

from __future__ import annotations

import time

from rich.console import Console

from cluster import tracking
from cluster.errors import ClusterError
from cluster.mlflow_view import comparison_url
from cluster.ray_session import describe_resources, ray_session, trial_slots

from .errors import SweepError
from .plan import Piece, build_plan
from .progress import SweepProgress
from .result import SweepResult
from .scheduler import PieceScheduler
from .spec import Spec
from .store import ResultsStore
from .mlflow_runs import SweepRuns, check_layout, run_status_callback
from .sweep_run import close_sweep_run, open_sweep_run
from .trial import run_piece, trial_config


def run_sweep(spec: Spec, tracking_uri: str, console: Console | None = None, project_root: str | None = None,
              callbacks: list | None = None, spec_text: str | None = None) -> SweepResult:
    """Run every unfinished piece of `spec` on Ray Tune, log everything to MLflow, and say what happened.

    `spec_text` is the spec file as written (logged with the sweep's run; default: the validated spec as YAML)."""
    console = console or Console()
    plan = build_plan(spec)
    store = ResultsStore(spec.storage)
    runs, sweep_run_id = _open_runs(spec, plan, store, tracking_uri, spec_text or _spec_yaml(spec))
    store.mark()
    pending = [piece for piece in plan if not store.is_complete(piece)]
    result = SweepResult(spec.name, spec.storage, tracking_uri, plan, experiment_id=runs.experiment_id)
    console.print(f"sweep [bold]{spec.name}[/]: {len(plan)} trials, {len(plan) - len(pending)} finished earlier, "
                  f"{len(pending)} to run; results store {store.root}; MLflow {tracking_uri}")
    if pending:
        _run_tune(spec, pending, store, runs, console, project_root, callbacks or [], result)
    result.complete = [p.name for p in plan if store.is_complete(p)]
    result.failed = [p.name for p in plan if p.name not in set(result.complete)]
    try:
        result.levels_logged = runs.logged_at_start + runs.reconcile(ended=True)
        close_sweep_run(runs.client, sweep_run_id, complete=result.ok)
        result.view_url = comparison_url(runs.client, tracking_uri, runs.experiment_id)
    except Exception as exc:  # noqa: BLE001 - the results are safe on disk; say how to finish logging them
        raise ClusterError(f"could not log results to MLflow at {tracking_uri} ({type(exc).__name__}: {exc}); "
                           f"they are safe in {store.root}: re-run the same spec to log them") from None
    return result


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
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    with ray_session(project_root) as session:
        slots = trial_slots(spec.resources.cpus, spec.resources.gpus)
        want = f"{spec.resources.cpus:g} CPUs and {spec.resources.gpus:g} GPUs per trial"
        if slots == 0:
            if session.mode in ("local", "existing"):
                raise SweepError(f"the spec asks {want} but this Ray has {describe_resources()}; "
                                 "lower resources in the spec or attach to a bigger cluster (RAY_ADDRESS)")
            console.print(f"[yellow]warning[/]: the cluster has {describe_resources()}, too little for {want}; "
                          "trials wait until the autoscaler adds nodes")
        slots = max(1, min(slots, spec.resources.max_concurrent or slots))
        dashboard = f", dashboard {session.dashboard_url}" if session.dashboard_url else ""
        console.print(f"Ray ({session.mode}): {describe_resources()}, {slots} trial slots of {want}{dashboard}")
        ready = {(p.source_key, p.level) for p in pending if not p.is_root and store.source_ready(p)}
        uri = result.tracking_uri
        scheduler = PieceScheduler(pending, ready, lambda piece: trial_config(piece, store, uri, runs.open(piece)))
        progress = SweepProgress(console)
        trainable = tune.with_resources(run_piece, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(scheduler, max_concurrent=slots), num_samples=len(pending),
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=store.ray_storage,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=[progress, run_status_callback(runs, {p.key: p for p in pending}), *callbacks], verbose=0,
            ),
        )
        started = time.time()
        tuner.fit()
        result.wall_s = time.time() - started
    result.slots = slots
    result.trials = progress.trials
    result.busy_s = progress.busy_s
    result.train_s = progress.train_s
    result.levels_trained = progress.levels_trained
    result.nodes = progress.nodes
    result.retries = progress.retries
    for piece in scheduler.blocked:
        console.print(f"[red]skipped[/] {piece.name}: its source level never finished")


def _trial_name(trial) -> str:
    return trial.config["piece"]["name"]


def _trial_dirname(trial) -> str:
    return f"{trial.config['piece']['name']}_{trial.trial_id}"
