"""Services: `cluster up`, `ray job submit` to that head, `cluster down`; a tracking server that dies mid-sweep."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from ray.tune import Callback
from rich.console import Console

from cluster import conventions as cv
from cluster import tracking
from cluster.errors import ClusterError
from cluster.services import _group_alive, free_port, read_state
from conftest import REPO
from sweeps.plan import build_plan
from sweeps.runner import run_sweep
from sweeps.store import ResultsStore
from test_sweeps_run import load_tiny, tiny_spec_text


def _run(args, cwd, env=None, timeout=600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_up_job_submit_down(tmp_path):
    state = str(tmp_path / "state")
    ports = [str(free_port()) for _ in range(3)]
    up = _run([sys.executable, "-m", "cluster", "up", "--state-dir", state, "--port", ports[0], "--dashboard-port",
               ports[1], "--mlflow-port", ports[2], "--num-cpus", "2"], cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    services = read_state(state)
    try:
        assert f"ray job submit --address http://127.0.0.1:{ports[1]}" in up.stdout and "cluster down" in up.stdout
        spec = tmp_path / "spec.yaml"
        spec.write_text(tiny_spec_text("submitted", str(tmp_path / "storage"), branches="{kind: random-prune, levels: [2]}"))
        submit = _run([os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit", "--address",
                       services.dashboard_url, "--working-dir", ".", "--runtime-env", os.path.join(state, "runtime_env.yaml"),
                       "--", "python", "-m", "sweeps", str(spec), "--tracking-uri", services.tracking_uri],
                      cwd=REPO, env={"RAY_AUTH_MODE": services.auth_mode})
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "2/2 trials complete" in submit.stdout and "succeeded" in submit.stdout + submit.stderr
        assert f"{services.tracking_uri}/#/experiments/" in submit.stdout and "viewStateShareKey=" in submit.stdout
        assert (f"report: python -m analysis report --experiment submitted --tracking-uri {services.tracking_uri} "
                "--out reports/submitted\n") in submit.stdout
        client = tracking.client(services.tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("submitted").experiment_id])
        assert sorted(r.data.tags[cv.TAG_RUN_KIND] for r in runs) == ["branch", "sweep", "trajectory"]
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        down = _run([sys.executable, "-m", "cluster", "down", "--state-dir", state], cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not _group_alive(services.ray_pgid) and not _group_alive(services.mlflow_pgid)
    assert read_state(state) is None


def _mlflow_server(db: str, artifacts: str, port: int) -> subprocess.Popen:
    """An MLflow tracking server on 127.0.0.1, in its own process group, answering /health."""
    import requests

    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination",
         artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    for _ in range(120):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(1)
    raise AssertionError("the MLflow server did not start")


class KillServerAfterLevel0(Callback):
    """Kill the tracking server (its whole process group) once level 0 of the trajectory is reported."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.killed_at = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.killed_at is None and result.get("kind") == "trajectory" and result["level"] == 0:
            os.killpg(self.pgid, signal.SIGKILL)
            self.killed_at = time.time()


def test_tracking_server_failing_mid_sweep_loses_no_result(tmp_path, monkeypatch):
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    port = free_port()
    db, artifacts, uri = str(tmp_path / "mlruns.db"), str(tmp_path / "mlartifacts"), f"http://127.0.0.1:{port}"
    server = _mlflow_server(db, artifacts, port)
    spec = load_tiny(tmp_path, name="flaky", branches="{kind: random-prune, levels: [2]}")
    killer = KillServerAfterLevel0(server.pid)
    try:
        with pytest.raises(ClusterError, match="re-run the same spec"):
            run_sweep(spec, uri, Console(quiet=True), callbacks=[killer])
        server.wait(timeout=30)
        store = ResultsStore(spec.storage)
        pieces = build_plan(spec)
        assert killer.killed_at is not None and all(store.is_complete(p) for p in pieces)
        started = {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in pieces for lv in p.levels}
        server = _mlflow_server(db, artifacts, port)
        again = run_sweep(spec, uri, Console(quiet=True))
        assert again.ok and again.trials == 0 and again.levels_logged >= 2
        assert started == {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in pieces for lv in p.levels}
        client = tracking.client(uri)
        runs = [r for r in client.search_runs([client.get_experiment_by_name("flaky").experiment_id])
                if cv.TAG_CONTENT_KEY in r.data.tags]
        steps = {r.data.tags[cv.TAG_RUN_KIND]: sorted(m.step for m in client.get_metric_history(r.info.run_id, "sparsity"))
                 for r in runs}
        assert steps == {"trajectory": [0, 1, 2], "branch": [2]}
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
