"""Faults, each a real kill -9, against real components: a local Ray, a real MLflow server on a real PostgreSQL
server (served artifacts), the tiny random BERT on a few real SST-2 examples.

What each promise means, whatever the MLflow run layout: no two runs of the experiment share a `content_key` tag;
every level finished on disk appears exactly once as a `sparsity` value at its step, with its mask; no run is left
RUNNING; and no finished level is trained again (its record's `started_at` is unchanged). The kill -9 of a trial
worker mid-level is in tests/test_sweeps_run.py (SQLite store). What each fault cost is in bench/RESULTS.md.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest
from ray.tune import Callback
from rich.console import Console

from cluster import conventions as cv
from cluster import postgres, tracking
from cluster.services import free_port, start_mlflow_server
from conftest import REPO
from sweeps.cli import main as sweeps_main
from sweeps.plan import build_plan
from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from test_sweeps_run import tiny_spec_text

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(postgres.server_binaries() is None,
                                 reason="the PostgreSQL server binaries (initdb, postgres) are not installed")]


class TrackingStack:
    """A PostgreSQL server and an MLflow server on it, serving artifacts, each killable with -9 and restartable on
    the same port."""

    def __init__(self, folder: str):
        self.folder = folder
        self.artifacts = os.path.join(folder, "mlartifacts")
        self.mlflow_port = free_port()
        self.server = postgres.Postgres(os.path.join(folder, "postgres"), free_port())
        self.pg = self.mlflow = None
        self.start_postgres()
        self.start_mlflow()

    @property
    def uri(self) -> str:
        """The tracking URI sweeps use."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    def start_postgres(self) -> None:
        """Start (first time: initialise) the PostgreSQL server; returns once it accepts logins."""
        self.server, self.pg = postgres.launch(self.server.folder, self.server.port,
                                               os.path.join(self.folder, "postgres.log"))

    def start_mlflow(self) -> None:
        """Start the MLflow server; returns once it answers /health."""
        self.mlflow = start_mlflow_server(self.server.uri, self.server.env, self.artifacts, self.mlflow_port,
                                          os.path.join(self.folder, "mlflow.log"))

    def kill_postgres(self) -> None:
        """kill -9 every process of the PostgreSQL server."""
        kill_9_group(self.pg)

    def kill_mlflow(self) -> None:
        """kill -9 every process of the MLflow server."""
        kill_9_group(self.mlflow)

    def close(self) -> None:
        """Stop both servers."""
        kill_9_group(self.mlflow)
        if self.pg.poll() is None:
            os.kill(self.pg.pid, postgres.STOP_SIGNAL)
            self.pg.wait(timeout=60)


def kill_9_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group `process` leads, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def stack():
    """One PostgreSQL-backed MLflow server for this module (its folder reachable by the postgres user)."""
    folder = tempfile.mkdtemp(prefix="faults", dir="/tmp")
    os.chmod(folder, 0o755)
    servers = TrackingStack(folder)
    yield servers
    servers.close()
    shutil.rmtree(folder, ignore_errors=True)


def assert_mlflow_holds_the_store_once(uri: str, spec) -> list:
    """Check the shape-agnostic promises for `spec`'s experiment against its results store; return its runs."""
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = tracking.search_all_runs(client, experiment.experiment_id)
    keys = [r.data.tags[cv.TAG_CONTENT_KEY] for r in runs if cv.TAG_CONTENT_KEY in r.data.tags]
    assert len(keys) == len(set(keys)), "two runs share a content key"
    store = ResultsStore(spec.storage)
    finished = [(piece, level) for piece in build_plan(spec) for level in store.finished_levels(piece)]
    expected = sorted((level, round(store.level_metrics(piece, level)["sparsity"], 3)) for piece, level in finished)
    logged = sorted((m.step, round(m.value, 3)) for r in runs
                    for m in client.get_metric_history(r.info.run_id, cv.METRIC_SPARSITY))
    assert logged == expected, "every finished level is one sparsity value at its step"
    masks = sorted(f.path for r in runs for f in client.list_artifacts(r.info.run_id, "masks"))
    assert masks == sorted(cv.mask_artifact_path(level) for _, level in finished)
    assert "RUNNING" not in {r.info.status for r in runs}
    return runs


def started_at(spec) -> dict:
    """When each level finished on disk started training, by (content key, level)."""
    store = ResultsStore(spec.storage)
    return {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in build_plan(spec)
            for lv in store.finished_levels(p)}


def runs_by_key(uri: str, name: str) -> dict[str, str]:
    """The run id of every run of experiment `name` with a content key, by that key."""
    client = tracking.client(uri)
    runs = tracking.search_all_runs(client, client.get_experiment_by_name(name).experiment_id)
    return {r.data.tags[cv.TAG_CONTENT_KEY]: r.info.run_id for r in runs if cv.TAG_CONTENT_KEY in r.data.tags}


def _sweep_command(spec_path: str, uri: str) -> list[str]:
    return [sys.executable, "-m", "sweeps", spec_path, "--tracking-uri", uri]


def kill_9_driver(driver: subprocess.Popen) -> None:
    """kill -9 the driver's process group and then whatever it started elsewhere (its local Ray), nothing else."""
    started = psutil.Process(driver.pid).children(recursive=True)
    kill_9_group(driver)
    for process in started:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(started, timeout=60)


def _trial_workers(driver: subprocess.Popen) -> list[psutil.Process]:
    """The Ray workers running a Tune trial among the driver's descendants."""
    found = []
    for process in psutil.Process(driver.pid).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


@contextlib.contextmanager
def _slowed(process: psutil.Process, stopped_s: float = 1.0, running_s: float = 0.2):
    """While the block runs, keep `process` stopped `stopped_s` and running `running_s` in turn; resumed at the end."""
    done = threading.Event()

    def cycle() -> None:
        while not done.is_set():
            process.suspend()
            done.wait(stopped_s)
            process.resume()
            done.wait(running_s)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _wait_for(condition, driver: subprocess.Popen) -> None:
    while not condition():
        assert driver.poll() is None, "the sweep ended before the kill"
        time.sleep(0.05)


def test_kill_9_of_the_driver_then_the_same_command_trains_only_what_was_unfinished(local_ray, stack, tmp_path,
                                                                                   capsys):
    """Promise: after kill -9 of `python -m sweeps` mid-sweep (a branch finished, the trajectory mid-level), the
    same command again trains only the levels unfinished at the kill (no finished level or branch again), reuses
    every MLflow run the crash left (none duplicated) and leaves none RUNNING.

    To land the kill there on any machine, the trajectory's worker is slowed from the end of its level 1 (which
    releases the branch) until the branch finishes (stopped 1 s, let run 0.2 s, in turn: short enough for Ray's
    keepalive watchdog, which fails a trial whose worker stays stopped); then the driver's process group and its local
    Ray get kill -9. The same command then runs in this process (its `main`, on the session's local Ray)."""
    spec_path = tmp_path / "driver.yaml"
    spec_path.write_text(tiny_spec_text("driver", str(tmp_path / "storage"), levels=4, train=512,
                                        branches="{kind: random-prune, levels: [1]}"))
    spec = load_spec(str(spec_path))
    store = ResultsStore(spec.storage)
    trajectory, branch = sorted(build_plan(spec), key=lambda p: not p.is_trajectory)
    temp = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": temp}
    try:
        with open(tmp_path / "first.log", "w") as log:
            driver = subprocess.Popen(_sweep_command(str(spec_path), stack.uri), cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            _wait_for(lambda: store.level_metrics(trajectory, 0) is not None, driver)
            (worker,) = _trial_workers(driver)  # the branch cannot start before level 1: this is the trajectory's
            _wait_for(lambda: store.level_metrics(trajectory, 1) is not None, driver)
            with _slowed(worker):
                _wait_for(lambda: store.is_complete(branch), driver)
            kill_9_driver(driver)
        assert not store.is_complete(trajectory), "the kill must land while the trajectory trains"
        before = started_at(spec)
        crashed_runs = runs_by_key(stack.uri, spec.name)
        unfinished = sum(len(p.levels) for p in (trajectory, branch)) - len(before)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    capsys.readouterr()
    terminate = signal.getsignal(signal.SIGTERM)
    try:
        code = sweeps_main([str(spec_path), "--tracking-uri", stack.uri])
    finally:
        signal.signal(signal.SIGTERM, terminate)  # the command's own handler stays with the command
    again = capsys.readouterr()
    assert code == 0, again.out[-3000:] + again.err[-3000:]
    trained = int(re.search(r"(\d+) level/branch runs trained", again.out).group(1))
    assert trained == unfinished > 0
    after = started_at(spec)
    assert {key: after[key] for key in before} == before and len(after) == len(before) + unfinished
    runs = assert_mlflow_holds_the_store_once(stack.uri, spec)
    assert {r.info.status for r in runs if cv.TAG_CONTENT_KEY in r.data.tags} == {"FINISHED"}
    assert {k: v for k, v in runs_by_key(stack.uri, spec.name).items() if k in crashed_runs} == crashed_runs


class AtTrajectoryLevels(Callback):
    """Runs `actions[level]` (once each) in the driver when the trajectory reports that level, trained; counts the
    trials that failed."""

    def __init__(self, actions: dict):
        self.actions = dict(actions)
        self.done = []
        self.errors = 0

    def __getstate__(self) -> dict:
        return {"actions": {}, "done": [], "errors": 0}  # Tune pickles callbacks; the servers are this process's

    def on_trial_result(self, iteration, trials, trial, result, **info):
        level = result.get("level")
        if result.get("kind") == "trajectory" and result.get("trained") and level in self.actions:
            self.actions.pop(level)()
            self.done.append(level)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errors += 1


def _outage_spec(tmp_path, name: str):
    """A sweep (trajectory levels 0-2, random pruning at level 2) whose levels train slowly enough to be reported
    one by one."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_spec_text(name, str(tmp_path / "storage"), train=256,
                                   branches="{kind: random-prune, levels: [2]}"))
    return load_spec(str(path))


def test_kill_9_of_the_tracking_server_mid_sweep_loses_and_repeats_nothing(local_ray, stack, tmp_path):
    """Promise: with the MLflow server killed -9 once level 0 is reported and still down when the sweep ends, every
    level still trains (no trial fails) and the sweep ends with one error saying the results are safe and to re-run
    the same spec; once the server is back, that re-run trains nothing and logs every level's metrics and mask
    exactly once, every run FINISHED. (A tracking store back while the sweep still runs: the PostgreSQL test below.)"""
    from cluster.errors import ClusterError

    spec = _outage_spec(tmp_path, "server_outage")
    outage = AtTrajectoryLevels({0: stack.kill_mlflow})
    try:
        with pytest.raises(ClusterError, match="they are safe in .*re-run the same spec to log them"):
            run_sweep(spec, stack.uri, Console(quiet=True), callbacks=[outage])
    finally:
        if stack.mlflow.poll() is not None:
            stack.start_mlflow()
    assert outage.done == [0] and outage.errors == 0
    store = ResultsStore(spec.storage)
    assert all(store.is_complete(piece) for piece in build_plan(spec))
    before = started_at(spec)
    assert len(before) == 4
    again = run_sweep(spec, stack.uri, Console(quiet=True))
    assert again.ok and again.trials == 0 and again.levels_trained == 0 and again.levels_logged >= 2
    assert started_at(spec) == before
    runs = assert_mlflow_holds_the_store_once(stack.uri, spec)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_kill_9_of_postgres_mid_sweep_then_restart_loses_and_repeats_nothing(local_ray, stack, tmp_path):
    """Promise: with PostgreSQL (every process of it) killed -9 once level 0 is reported, under a running MLflow
    server, and restarted once level 1 is (the outage spans the logging of level 1), the sweep completes by itself
    without a failed trial or any level trained twice, and every level's metrics and mask end up in MLflow exactly
    once."""
    spec = _outage_spec(tmp_path, "database_outage")
    outage = AtTrajectoryLevels({0: stack.kill_postgres, 1: stack.start_postgres})
    result = run_sweep(spec, stack.uri, Console(quiet=True), callbacks=[outage])
    assert outage.done == [0, 1]
    assert result.ok and result.retries == 0 and result.levels_trained == 4
    runs = assert_mlflow_holds_the_store_once(stack.uri, spec)
    assert {r.info.status for r in runs} == {"FINISHED"}
