"""Services: `cluster up` (on loopback only), `ray job submit` to that head, `cluster down`. (A tracking server killed
mid-sweep is in tests/test_faults.py.)"""

import os
import subprocess
import sys

import pytest

from cluster import conventions as cv
from cluster import tracking
from cluster.services import _group_alive, free_port, read_state
from conftest import REPO
from test_cluster_exposure import on_loopback, run_probe
from test_sweeps_run import tiny_spec_text


def _run(args, cwd, env=None, timeout=600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_up_job_submit_down(tmp_path):
    """Promise: `cluster up` prints how to submit and stop; a sweep submitted with `ray job submit` runs on it and logs
    to its MLflow server; after it, with a driver attached and workers running, no process `up` started (GCS, raylet,
    workers, agents, dashboard, MLflow) nor that driver listens beyond loopback; `down` stops everything."""
    state = str(tmp_path / "state")
    ports = [str(free_port()) for _ in range(3)]
    up = _run([sys.executable, "-m", "cluster", "up", "--state-dir", state, "--port", ports[0], "--dashboard-port",
               ports[1], "--mlflow-port", ports[2], "--num-cpus", "2"], cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    services = read_state(state)
    try:
        assert f"ray job submit --address http://127.0.0.1:{ports[1]}" in up.stdout and "cluster down" in up.stdout
        spec = tmp_path / "spec.yaml"
        spec.write_text(tiny_spec_text("submitted", str(tmp_path / "storage"), levels=1,
                                       branches="{kind: random-prune, levels: [1]}"))
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
        found = run_probe(tmp_path, [services.ray_pgid, services.mlflow_pgid],
                          {"RAY_ADDRESS": services.ray_address, "RAY_AUTH_MODE": services.auth_mode})
    finally:
        down = _run([sys.executable, "-m", "cluster", "down", "--state-dir", state], cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not _group_alive(services.ray_pgid) and not _group_alive(services.mlflow_pgid)
    assert read_state(state) is None
    assert {port for _, port, _ in found} >= {int(port) for port in ports}
    assert {"gcs_server", "raylet"} <= {name for _, _, name in found}
    assert [entry for entry in found if not on_loopback(entry[0])] == []
