"""Scheduler scale: thousands of sweep trials through the real planner, scheduler, Ray Tune and MLflow logging, with
training replaced by an instant engine, side by side with bare Tune running the same trials as no-ops.

The sweep: tiny-random-bert on SST-2, seeds 0..S-1, IMP levels 0..L, and two per-level baselines (random pruning and
random re-initialisation) at every pruned level 1..L, each waiting for its trajectory's level: 1 + 2L trials per seed,
S chosen so that there are at least --trials trials. `sweeps.runner.run_sweep` runs it unchanged except at the engine
boundary (bench/scale_engine.py, installed in every Ray worker with Ray's worker_process_setup_hook): each level waits
--level-s seconds, as if training, and writes a real mask file and metrics.json. Every run has a fresh results
store, a fresh Ray of --slots one-CPU trial slots, and its own process (so its peak memory is its own):

  bare Tune       the same number of trials (each as many reports as its piece has levels, --level-s apart) through
                  Tune alone at the same concurrency: no planner, dependencies, files, checkpoints or MLflow
  sqlite          the sweep, MLflow in a fresh local SQLite store (what `python -m sweeps` uses by default)
  postgres        the sweep, MLflow through a server on a PostgreSQL store, started as `python -m cluster up
                  --tracking postgres` starts them (cluster.postgres, cluster.services), reached through a local
                  counting proxy (bench/scale_proxy.py)
  postgres +Dms   the same server behind the same proxy holding every request --delay-ms: a slow tracking server

Measured: walls (Tune's run; end to end: plan, MLflow runs prepared, Tune, results reconciled) and the slot-seconds
per trial beyond bare Tune, the trial slots' busy fraction (sum of trial times / (slots x Tune wall)) and the fraction
spent inside levels, the share of Tune's run its event loop (the driver's main thread) waited for MLflow, the driver's
peak memory (getrusage), the size of Tune's experiment folder and experiment_state file, MLflow client calls (driver
and workers; every process counts its own, with their seconds) and HTTP requests at the proxy per logged level, and,
after each sweep, whether MLflow holds every level exactly once with every run FINISHED.

    .venv/bin/python bench/scheduler_scale.py --quick        # smoke run of every store, about 2 minutes
    .venv/bin/python bench/scheduler_scale.py                # 4,004 trials, 5,720 levels
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from sweep_efficiency import GLUE, REPO, Run, TrialClock  # first: it sets the offline, quiet environment

from common import machine, median
from scale_engine import Calls

BRANCH_KINDS = ("random-prune", "random-reinit")
HISTORY_CALL = "get_metric_history"
QUICK = {"trials": 10, "levels": 2, "slots": 2, "level_s": 0.05}  # --quick: 2 trajectories, 8 baselines
PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # bare Tune keeps as many trials waiting as the sweep does


@dataclass
class Outcome:
    """One run: what it measured."""

    label: str
    run: Run = field(default_factory=lambda: Run(""))
    levels: int = 0
    e2e_s: float = 0.0
    before_tune_s: float = 0.0
    after_tune_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    state_mb: float = 0.0
    state_file_kb: float = 0.0
    driver: Calls = field(default_factory=Calls)
    workers: Calls = field(default_factory=Calls)
    steps: Calls = field(default_factory=Calls)
    http: Counter | None = None
    worker_processes: int = 0
    mlflow_problems: str = ""

    @property
    def calls_per_level(self) -> float:
        """MLflow client calls (driver and workers) per level."""
        return (self.driver.total + self.workers.total) / self.levels

    @property
    def history_per_level(self) -> float:
        """Reads of a run's metric history per level (client calls)."""
        return (self.driver.count[HISTORY_CALL] + self.workers.count[HISTORY_CALL]) / self.levels

    @property
    def driver_blocked(self) -> float:
        """Fraction of Tune's run the driver's main thread (Tune's event loop) spent waiting for MLflow."""
        return self.driver.seconds_within / self.run.wall_s

    def overhead_per_trial(self, bare: Outcome) -> float:
        """Slot-seconds per trial this run took beyond bare Tune's (Tune runs compared)."""
        return (self.run.wall_s - bare.run.wall_s) * self.run.slots / self.run.trials


def spec_text(name: str, storage: str, seeds: int, levels: int) -> str:
    """The benchmark's sweep: `seeds` IMP trajectories (levels 0..`levels`) with two per-level baselines at every
    pruned level."""
    pruned = list(range(1, levels + 1))
    branches = ", ".join(f"{{kind: {kind}, levels: {pruned}}}" for kind in BRANCH_KINDS)
    return f"""\
name: {name}
model: tiny-random-bert
data_dir: {GLUE}
tasks: [sst2]
seeds: {list(range(seeds))}
pruning: {{rate: 0.2, levels: {levels}, rewind: [0]}}
training: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, max_seq_length: 32, max_train_samples: 64,
           max_eval_samples: 32}}
branches: [{branches}]
resources: {{cpus: 1}}
max_failures: 0
storage: {storage}
"""


def folder_size(path: str, pattern: str = "") -> int:
    """Bytes of the files under `path` (only those whose name starts with `pattern`)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
               if name.startswith(pattern))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _start_ray(tmp: str, slots: int, runtime_env: dict | None = None) -> None:
    import ray

    os.environ["RAY_TMPDIR"] = os.path.join(tmp, "ray")
    os.makedirs(os.environ["RAY_TMPDIR"])
    bench = os.path.dirname(os.path.abspath(__file__))  # workers import scale_engine (the setup hook) from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (bench, REPO, os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)


def bare_tune(tmp: str, levels: list[int], slots: int, level_s: float, pending: int | None) -> Outcome:
    """Run `len(levels)` no-op trials (trial i reports levels[i] times, one CPU each) through bare Tune, as many at
    once as the `slots` CPUs allow and up to `pending` waiting (as the sweep does); in its own process."""
    import ray
    from ray import tune

    from scale_engine import noop_trial

    out = Outcome("bare Tune", levels=sum(levels))
    if pending:
        os.environ[PENDING_TRIALS_ENV] = str(pending)
    _start_ray(tmp, slots)
    try:
        clock = TrialClock()
        pieces = [{"key": f"p{i}", "levels": n} for i, n in enumerate(levels)]
        tuner = tune.Tuner(
            noop_trial, param_space={"level_s": level_s, "piece": tune.grid_search(pieces)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name="bare", storage_path=os.path.join(tmp, "tune"), callbacks=[clock],
                                      verbose=0),
        )
        out.rss_start_mb = _rss_mb()
        started = time.time()
        grid = tuner.fit()
        out.e2e_s = time.time() - started
        out.rss_peak_mb = _peak_mb()
        if grid.num_errors or len(clock.ended) != len(levels):
            raise RuntimeError(f"bare Tune: {grid.num_errors} trials failed, {len(clock.ended)} ended")
        out.run.record(slots, clock.run_ended - clock.run_started, clock)
        out.before_tune_s = clock.run_started - started
        out.after_tune_s = started + out.e2e_s - clock.run_ended
    finally:
        ray.shutdown()
    out.state_mb = folder_size(os.path.join(tmp, "tune")) / 2**20
    out.state_file_kb = folder_size(os.path.join(tmp, "tune"), "experiment_state") / 2**10
    return out


def sweep(tmp: str, label: str, spec_path: str, uri: str, slots: int, level_s: float,
          proxy: Proxy | None = None) -> Outcome:
    """Run the sweep of `spec_path` logging to `uri` (through `proxy`, whose counts it reads) with the instant
    engine; in its own process."""
    import ray
    from rich.console import Console

    import scale_engine
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec

    calls = os.path.join(tmp, "calls")
    os.makedirs(calls)
    os.environ.update({scale_engine.LEVEL_S_ENV: str(level_s), scale_engine.CALLS_DIR_ENV: calls})
    scale_engine.count_mlflow_calls()
    spec = load_spec(spec_path)
    out = Outcome(label)
    _start_ray(tmp, slots, {"worker_process_setup_hook": "scale_engine.install"})
    try:
        clock = TrialClock()
        out.rss_start_mb = _rss_mb()
        started = time.time()
        result = run_sweep(spec, uri, Console(quiet=True), callbacks=[clock])
        out.e2e_s = time.time() - started
        out.rss_peak_mb = _peak_mb()
        if not result.ok or len(clock.ended) != len(result.pieces):
            raise RuntimeError(f"{label}: the sweep did not finish cleanly (failed: {result.failed[:5]})")
        out.run.record(slots, result.wall_s, clock)
        out.levels = result.levels_trained
        out.before_tune_s = clock.run_started - started
        out.after_tune_s = started + out.e2e_s - clock.run_ended
    finally:
        ray.shutdown()
    driver = os.getpid()
    out.driver = scale_engine.read_calls(calls, {driver}, within=(clock.run_started, clock.run_ended))
    out.workers = scale_engine.read_calls(calls, exclude={driver})
    out.http = proxy.counts() if proxy is not None else None
    out.mlflow_problems = check_logged(uri, spec.name, out.levels)  # after the counts: its calls are not counted
    out.steps = scale_engine.read_calls(calls, kind="steps")
    out.worker_processes = sum(name.endswith(".steps") for name in os.listdir(calls))
    out.state_mb = folder_size(os.path.join(spec.storage, "ray")) / 2**20
    out.state_file_kb = folder_size(os.path.join(spec.storage, "ray"), "experiment_state") / 2**10
    return out


def check_logged(uri: str, name: str, levels: int) -> str:
    """What is wrong with MLflow's record of the sweep ('' when it holds each of the `levels` levels exactly once,
    one `sparsity` value per run and step, and every run is FINISHED)."""
    from cluster import conventions as cv
    from cluster import tracking

    client = tracking.client(uri)
    runs = tracking.search_all_runs(client, client.get_experiment_by_name(name).experiment_id)
    series = [run.info.run_id for run in runs if run.data.tags.get(cv.TAG_RUN_KIND) != cv.RUN_KIND_SWEEP]
    reader = tracking.MetricHistoryReader(client)
    points = [p for start in range(0, len(series), 100) for p in reader(series[start:start + 100], cv.METRIC_SPARSITY)]
    steps = Counter((point["run_id"], point["step"]) for point in points)
    unfinished = sum(run.info.status != "FINISHED" for run in runs)
    problems = [f"{len(steps)} of {levels} levels logged"] if len(steps) != levels else []
    twice = sum(n > 1 for n in steps.values())
    if twice:
        problems.append(f"{twice} levels logged more than once ({len(points) - len(steps)} extra sparsity values)")
    problems += [f"{unfinished} runs not FINISHED"] if unfinished else []
    return "; ".join(problems)


def in_own_process(fn, *args) -> Outcome:
    """`fn(*args)` in a fresh process (its own Ray driver and peak memory), its stdout (Tune's banners) on stderr."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_quietly, fn, *args).result()


def _quietly(fn, *args) -> Outcome:
    with contextlib.redirect_stdout(sys.stderr):
        return fn(*args)


class Proxy:
    """bench/scale_proxy.py in a process of its own, in front of `target` (pickled: its address only)."""

    def __init__(self, target: str, delay_ms: float, log_path: str):
        from cluster.services import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.join(REPO, "bench", "scale_proxy.py"), "--port", str(self.port), "--target",
                 target, "--delay-ms", str(delay_ms)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def __getstate__(self) -> dict:
        return {"url": self.url}

    def _wait(self, timeout_s: float = 60.0) -> None:
        import requests

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the counting proxy exited at start")
            try:
                requests.get(self.url + "/_proxy/counts", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError("the counting proxy did not answer")

    def counts(self) -> Counter:
        """Requests forwarded so far, by 'METHOD path'."""
        import requests

        return Counter(requests.get(self.url + "/_proxy/counts", timeout=10).json())

    def stop(self) -> None:
        """Stop the proxy."""
        self.process.terminate()
        self.process.wait(timeout=30)


class TrackingServer:
    """A PostgreSQL server and an MLflow server on it, started as `python -m cluster up --tracking postgres` does."""

    def __init__(self, folder: str):
        from cluster import postgres
        from cluster.services import free_port, start_mlflow_server

        for path in (os.path.dirname(folder), folder):  # run as root, PostgreSQL runs as the postgres user
            os.chmod(path, 0o755)
        self.pg = self.mlflow = None
        try:
            server, self.pg = postgres.launch(os.path.join(folder, "postgres"), free_port(),
                                              os.path.join(folder, "postgres.log"))
            self.url = f"http://127.0.0.1:{free_port()}"
            self.mlflow = start_mlflow_server(server.uri, server.env, os.path.join(folder, "artifacts"),
                                              int(self.url.rsplit(":", 1)[1]), os.path.join(folder, "mlflow.log"))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the MLflow server's process group, then PostgreSQL (its fast shutdown)."""
        from cluster import postgres

        if self.mlflow is not None:
            _stop_group(self.mlflow, signal.SIGTERM)
        if self.pg is not None:
            _stop_group(self.pg, postgres.STOP_SIGNAL)


def _stop_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def run_all(args: argparse.Namespace, tmp: str, started: float) -> tuple[list[Outcome], list[str], int]:
    """The bare Tune run, then the sweep on each store (the PostgreSQL-backed server first: a cluster's), the table
    printed again after each, so that a long run stopped early keeps what it measured; (outcomes, notes, trials)."""
    from sweeps.plan import build_plan
    from sweeps.spec import load_spec

    seeds = -(-args.trials // (1 + len(BRANCH_KINDS) * args.levels))
    specs: dict[str, str] = {}

    def spec_for(label: str) -> str:
        slug = label.replace(" ", "").replace("+", "-")
        path = os.path.join(tmp, f"{slug}.yaml")
        with open(path, "w") as handle:
            handle.write(spec_text(f"scale-{slug}", os.path.join(tmp, slug, "storage"), seeds, args.levels))
        specs[label] = path
        return path

    import sweeps.runner

    plan = build_plan(load_spec(spec_for("plan")))
    notes: list[str] = []
    pending = getattr(sweeps.runner, "PENDING_TRIALS", None)  # what the sweep keeps waiting, if it sets it
    outcomes = [in_own_process(bare_tune, _fresh(tmp, "bare"), [len(p.levels) for p in plan], args.slots,
                               args.level_s, pending)]

    def measured(outcome: Outcome) -> None:
        outcomes.append(outcome)
        report(outcomes, notes, len(plan), args, time.time() - started)
        sys.stdout.flush()

    if "postgres" in args.stores:
        from cluster import postgres
        from cluster.errors import ClusterError

        if postgres.server_binaries() is None:
            notes.append("postgres: not run: the PostgreSQL server binaries (initdb, postgres) are not installed")
        else:
            try:
                server = TrackingServer(_fresh(tmp, "server"))
            except ClusterError as exc:
                notes.append(f"postgres: not run: {exc}")
                server = None
            try:
                for delay in ((0.0, args.delay_ms) if args.delay_ms else (0.0,)) if server else ():
                    label = "postgres" if not delay else f"postgres +{delay:g}ms"
                    proxy = Proxy(server.url, delay, os.path.join(tmp, f"proxy{delay:g}.log"))
                    try:
                        measured(in_own_process(sweep, _fresh(tmp, label.replace(" ", "")), label, spec_for(label),
                                                proxy.url, args.slots, args.level_s, proxy))
                    finally:
                        proxy.stop()
            finally:
                if server is not None:
                    server.stop()
    if "sqlite" in args.stores:
        run_tmp = _fresh(tmp, "sqlite")
        measured(in_own_process(sweep, run_tmp, "sqlite", spec_for("sqlite"), f"sqlite:///{run_tmp}/mlruns.db",
                                args.slots, args.level_s))
    return outcomes, notes, len(plan)


def _fresh(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    os.makedirs(path)
    return path


def _top(calls: Counter, n: int = 8) -> str:
    return ", ".join(f"{name.replace('/api/2.0/mlflow/', '/')} {count}" for name, count in calls.most_common(n))


def report(outcomes: list[Outcome], notes: list[str], trials: int, args: argparse.Namespace, wall_s: float) -> None:
    """Print the table, the MLflow traffic and the headline."""
    bare = outcomes[0]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end (other work shares these cores)")
    print(f"sweep: {trials} trials ({trials // (1 + 2 * args.levels)} IMP trajectories of levels 0..{args.levels} + "
          f"random-prune and random-reinit at levels 1..{args.levels}), {bare.levels} levels, {args.slots} one-CPU "
          f"slots, {args.level_s:g} s per level instead of training; each run in a fresh process, Ray and store; "
          f"whole benchmark {wall_s:.0f} s")
    print(f"{'run':<15} {'Tune s':>7} {'e2e s':>7} {'/bare':>5} {'e2e/bare':>8} {'+s/trial':>8} {'busy':>5} "
          f"{'in lvl':>6} {'gaps s':>6} {'blocked':>7} {'peak MB':>7} {'+run MB':>7} {'Tune MB':>7} {'state kB':>8} "
          f"{'calls/lvl':>9} {'HTTP/lvl':>8} {'hist/lvl':>8}")
    for o in outcomes:
        sweep_only = o is not bare
        cells = [f"{o.overhead_per_trial(bare):8.2f}", f"{o.driver_blocked:7.2f}", f"{o.calls_per_level:9.2f}",
                 f"{sum(o.http.values()) / o.levels:8.2f}" if o.http is not None else "",
                 f"{o.history_per_level:8.2f}"] if sweep_only else [""] * 5
        plus, blocked, calls, http, hist = (cell or "-" for cell in cells)
        print(f"{o.label:<15} {o.run.wall_s:7.1f} {o.e2e_s:7.1f} {o.run.wall_s / bare.run.wall_s:5.2f} "
              f"{o.e2e_s / bare.e2e_s:8.2f} {plus:>8} {o.run.busy:5.2f} {o.run.level_fraction:6.2f} "
              f"{o.run.idle_between_s:6.1f} {blocked:>7} {o.rss_peak_mb:7.0f} {o.rss_peak_mb - o.rss_start_mb:7.0f} "
              f"{o.state_mb:7.1f} {o.state_file_kb:8.0f} {calls:>9} {http:>8} {hist:>8}")
    print("Tune s: Tune's run, /bare: over bare Tune's; e2e s: the whole run_sweep (plan, MLflow runs prepared, Tune, "
          "reconcile) or Tuner.fit; +s/trial: slot-seconds per trial beyond bare Tune; busy: sum of trial times / "
          "(slots x Tune s); in lvl: time inside levels / (slots x Tune s); gaps: idle slot-s between one trial "
          "ending and the next starting; blocked: share of Tune's run its event loop (the driver's main thread) "
          "spent inside MLflow calls; peak MB: the driver's peak RSS, +run MB: its growth during the run; Tune MB: "
          "Tune's experiment folder (trial folders, checkpoints), state kB: its experiment_state file; calls/lvl: "
          "MlflowClient calls (driver + workers) per level; HTTP/lvl: requests at the proxy per level; hist/lvl: "
          "reads of a run's metric history per level")
    for o in outcomes[1:]:
        print(f"{o.label}: before Tune {o.before_tune_s:.1f} s, after Tune {o.after_tune_s:.1f} s; "
              f"{o.worker_processes} worker processes; slots idle {o.run.idle_before_s:.1f} s before their first "
              f"trial (bare Tune {bare.run.idle_before_s:.1f} s) and {o.run.idle_after_s:.1f} s after their last")
        print(f"  MLflow after the sweep: {o.mlflow_problems or 'every level logged exactly once, every run FINISHED'}")
        print(f"  driver: {o.driver.total / o.run.trials:.2f} calls per trial, {o.driver.seconds:.1f} s in all, "
              f"{o.driver.seconds_within:.1f} s of them in Tune's event loop during its run ({_top(o.driver.count)})")
        print(f"  workers: {o.workers.total / o.levels:.2f} calls per level, {o.workers.seconds / o.levels:.3f} s per "
              f"level ({_top(o.workers.count)})")
        per_trial = {"whole": o.run.busy * o.run.slots * o.run.wall_s, "body": o.steps.seconds_of("trial"),
                     "mlflow": o.workers.seconds, "report": o.steps.seconds_of("tune.report"),
                     "levels": args.level_s * o.levels}
        t = {k: v / o.run.trials for k, v in per_trial.items()}
        print(f"  a trial, from Tune starting it to its end: {t['whole']:.2f} s on average, of which its body "
              f"{t['body']:.2f} s: MLflow {t['mlflow']:.2f} s, reports to Tune {t['report']:.2f} s, levels "
              f"{t['levels']:.2f} s")
        if o.http is not None:
            print(f"  HTTP at the proxy: {_top(o.http, 12)}")
    for note in notes:
        print(note)
    sweeps_run = outcomes[1:]
    if not sweeps_run:
        return
    ratios = ", ".join(f"{o.label} {o.e2e_s / bare.e2e_s:.2f} (Tune run {o.run.wall_s / bare.run.wall_s:.2f}, "
                       f"+{o.overhead_per_trial(bare):.2f} slot-s per trial)" for o in sweeps_run)
    line = (f"headline: {trials} trials, wall sweep/bare Tune end to end {ratios} (target <= 1.2); MLflow calls per "
            f"level {', '.join(f'{o.label} {o.calls_per_level:.1f}' for o in sweeps_run)}")
    wrong = [f"{o.label}: {o.mlflow_problems}" for o in sweeps_run if o.mlflow_problems]
    line += f"; MLflow record WRONG: {', '.join(wrong)}" if wrong else "; MLflow holds every level exactly once"
    fast = next((o for o in sweeps_run if o.label == "postgres"), None)
    slow = next((o for o in sweeps_run if o.label.startswith("postgres +")), None)
    if fast is not None and slow is not None:
        line += (f"; a {args.delay_ms:g} ms slower server: busy {slow.run.busy:.2f} vs {fast.run.busy:.2f}, in levels "
                 f"{slow.run.level_fraction:.2f} vs {fast.run.level_fraction:.2f}, driver blocked "
                 f"{slow.driver_blocked:.2f} vs {fast.driver_blocked:.2f}")
    print(line)


def main() -> None:
    """Parse the flags, run bare Tune and the sweep on each store, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4000, help="at least this many trials (default 4000)")
    parser.add_argument("--levels", type=int, default=3, help="last IMP level L of each trajectory (levels 0..L)")
    parser.add_argument("--slots", type=int, default=4, help="one-CPU trial slots of the local Ray")
    parser.add_argument("--level-s", type=float, default=0.25, help="seconds each level waits instead of training")
    parser.add_argument("--stores", default="sqlite,postgres", help="MLflow stores to run: sqlite, postgres or both")
    parser.add_argument("--delay-ms", type=float, default=50.0,
                        help="also run postgres behind a proxy that holds each request this long (0: not)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of every store: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                         for k, v in QUICK.items()))
    args = parser.parse_args()
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - {"sqlite", "postgres"})
    if unknown:
        parser.error(f"unknown store {', '.join(unknown)}: choose sqlite, postgres or both")
    if args.trials < 1 or args.levels < 1 or args.slots < 1 or args.level_s < 0 or args.delay_ms < 0:
        parser.error("--trials, --levels and --slots must be >= 1, --level-s and --delay-ms >= 0")
    if args.quick:
        vars(args).update(QUICK)
    os.environ.pop("RAY_ADDRESS", None)  # always a fresh Ray of the benchmark's own
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="ss", dir="/tmp")  # short: Ray's socket paths live under RAY_TMPDIR
    try:
        outcomes, notes, trials = run_all(args, tmp, started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(outcomes) == 1:
        report(outcomes, notes, trials, args, time.time() - started)


if __name__ == "__main__":
    main()
