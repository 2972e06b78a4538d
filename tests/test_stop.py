"""Stopping a sweep: SIGTERM (what `ray job stop` sends the driver) is handled as Ctrl-C, on a real `python -m sweeps`
with its own local Ray and a real SQLite MLflow store."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from rich.console import Console

from cluster import conventions as cv
from cluster import tracking
from conftest import REPO
from sweeps.plan import build_plan
from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from test_faults import kill_9_driver
from test_sweeps_run import tiny_spec_text


SWEEP = "sweep"


def _statuses(uri: str, name: str) -> dict[str, str]:
    """The status of every run of experiment `name`: series runs by content key, the sweep's own run as SWEEP."""
    client = tracking.client(uri)
    runs = tracking.search_all_runs(client, client.get_experiment_by_name(name).experiment_id)
    return {r.data.tags.get(cv.TAG_CONTENT_KEY, SWEEP): r.info.status for r in runs}


def _started_at(spec) -> dict:
    store = ResultsStore(spec.storage)
    return {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in build_plan(spec)
            for lv in store.finished_levels(p)}


@pytest.mark.slow
def test_sigterm_mid_level_stops_like_ctrl_c_and_the_same_spec_resumes(local_ray, tmp_path):
    """Promise: SIGTERM mid-level ends `python -m sweeps` (its own local Ray) with exit code 143 (128 + SIGTERM), the
    summary printed and no stack dump or Tune restore hint; its unfinished series runs are KILLED, none RUNNING.
    Running the same spec again (here in this process, on the session's Ray) trains only what was unfinished, and
    MLflow ends with every level exactly once and every run FINISHED."""
    spec_path = tmp_path / "stopped.yaml"
    spec_path.write_text(tiny_spec_text("stopped", str(tmp_path / "storage"), levels=2, train=256))
    spec = load_spec(str(spec_path))
    store = ResultsStore(spec.storage)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    command = [sys.executable, "-m", "sweeps", str(spec_path), "--tracking-uri", uri]
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": temp}
    try:
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        deadline = time.time() + 300
        while not any(store.level_metrics(piece, 0) for piece in build_plan(spec)):
            assert driver.poll() is None and time.time() < deadline, "the sweep ended before the stop"
            time.sleep(0.1)
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=120)
        before = _started_at(spec)
        stopped = _statuses(uri, spec.name)
    finally:
        if driver.poll() is None:  # a failed test: kill -9 the driver and the local Ray it started
            kill_9_driver(driver)
        shutil.rmtree(temp, ignore_errors=True)
    assert driver.returncode == 128 + signal.SIGTERM, out[-3000:] + err[-3000:]
    assert "SIGTERM received" not in err and "Tuner.restore" not in out + err  # Ray's native stack dump, Tune's hint
    assert "stopped by SIGTERM" in out and "incomplete" in out
    assert before and len(before) < sum(len(p.levels) for p in build_plan(spec))
    trajectories = {p.key: {lv for key, lv in before if key == p.key} == set(p.levels) for p in build_plan(spec)}
    assert stopped.pop(SWEEP) == "KILLED"
    assert stopped == {key: "FINISHED" if done else "KILLED" for key, done in trajectories.items() if key in stopped}
    assert "KILLED" in stopped.values()
    again = run_sweep(spec, uri, Console(quiet=True))
    assert again.ok and again.levels_trained == sum(len(p.levels) for p in build_plan(spec)) - len(before)
    after = _started_at(spec)
    assert {key: after[key] for key in before} == before
    client = tracking.client(uri)
    runs = tracking.search_all_runs(client, client.get_experiment_by_name(spec.name).experiment_id)
    assert {r.info.status for r in runs} == {"FINISHED"}
    logged = sorted((r.data.tags[cv.TAG_CONTENT_KEY], m.step) for r in runs if cv.TAG_CONTENT_KEY in r.data.tags
                    for m in client.get_metric_history(r.info.run_id, cv.METRIC_SPARSITY))
    assert len(logged) == len(set(logged)) == len(after)
