"""`cluster up --tracking postgres`: a real PostgreSQL server behind a real MLflow server with served artifacts, a
tiny sweep driven against it from the shell, the report read from it, `down`, and a user-given postgresql:// store."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import psutil
import pytest

from cluster import conventions as cv
from cluster import postgres, tracking
from cluster.services import _group_alive, free_port, read_state
from conftest import REPO
from sweeps.spec import load_spec
from test_cluster_exposure import listening, on_loopback, process_tree
from test_faults import assert_mlflow_holds_the_store_once
from test_sweeps_run import tiny_spec_text
from tickets.masks import Mask

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(postgres.server_binaries() is None,
                                 reason="the PostgreSQL server binaries (initdb, postgres) are not installed")]
NAME = "pg"


def _run(args, cwd, env=None, timeout=600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _up(folder: str, state: str, *extra: str):
    ports = [str(free_port()) for _ in range(3)]
    return _run([sys.executable, "-m", "cluster", "up", "--state-dir", state, "--port", ports[0], "--dashboard-port",
                 ports[1], "--mlflow-port", ports[2], "--num-cpus", "2", *extra], cwd=folder)


def _password(folder: str) -> str:
    return open(os.path.join(folder, postgres.PGPASS)).read().strip().rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def pg_sweep():
    """`cluster up --tracking postgres`, then a tiny sweep (one trajectory, levels 0-2, random pruning at level 2)
    driven from the shell against it, as the README says; `down` at the end unless a test did it."""
    folder = tempfile.mkdtemp(prefix="pgup", dir="/tmp")
    os.chmod(folder, 0o755)  # the server runs as the postgres user, which must reach its data folder
    state = os.path.join(folder, "state")
    up = _up(folder, state, "--tracking", "postgres")
    assert up.returncode == 0, up.stderr
    services = read_state(state)
    try:
        spec_path = os.path.join(folder, "spec.yaml")
        with open(spec_path, "w") as handle:
            handle.write(tiny_spec_text(NAME, os.path.join(folder, "storage"),
                                        branches="{kind: random-prune, levels: [2]}"))
        sweep = _run([sys.executable, "-m", "sweeps", spec_path, "--tracking-uri", services.tracking_uri], cwd=REPO,
                     env={"RAY_ADDRESS": services.ray_address, "RAY_AUTH_MODE": services.auth_mode})
        yield {"folder": folder, "state": state, "services": services, "up": up, "sweep": sweep,
               "spec": load_spec(spec_path)}
    finally:
        if read_state(state) is not None:
            _run([sys.executable, "-m", "cluster", "down", "--state-dir", state], cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_sweep_logs_runs_metrics_and_masks_through_the_postgres_backed_server(pg_sweep, tmp_path):
    """Promise: a sweep against `cluster up --tracking postgres` completes; every finished level is one `sparsity`
    value at its step in exactly one run per content key, with its mask uploaded through the server
    (mlflow-artifacts:) into the artifacts folder; the report reads it all back from the server."""
    sweep, services, spec = pg_sweep["sweep"], pg_sweep["services"], pg_sweep["spec"]
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "2/2 trials complete" in sweep.stdout
    runs = assert_mlflow_holds_the_store_once(services.tracking_uri, spec)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    client = tracking.client(services.tracking_uri)
    level_2 = [r.info.run_id for r in runs
               if cv.mask_artifact_path(2) in {f.path for f in client.list_artifacts(r.info.run_id, "masks")}]
    assert len(level_2) == 2  # the trajectory's and the branch's, both at 40% sparsity
    for number, run_id in enumerate(level_2):
        local = client.download_artifacts(run_id, cv.mask_artifact_path(2), str(tmp_path / str(number)))
        assert Mask.load(local).sparsity == pytest.approx(0.4, abs=1e-3)
    served = [name for _, _, names in os.walk(services.artifacts) for name in names]
    assert served.count(os.path.basename(cv.mask_artifact_path(2))) == 2  # uploaded through the server
    report = _run([sys.executable, "-m", "analysis", "report", "--experiment", NAME, "--tracking-uri",
                   services.tracking_uri, "--out", str(tmp_path / "report")], cwd=REPO)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()


def test_postgres_listens_on_loopback_and_its_password_stays_in_a_private_file(pg_sweep):
    """Promise: the PostgreSQL server `up` started listens on 127.0.0.1 only and takes password logins; the generated
    password is in a 0600 file and nowhere in the state file, `up`'s output or any started process's command line."""
    services, up = pg_sweep["services"], pg_sweep["up"]
    import psycopg

    pgpass = os.path.join(services.postgres_dir, postgres.PGPASS)
    assert stat.S_IMODE(os.stat(pgpass).st_mode) == 0o600
    if os.geteuid() == 0:
        data = os.stat(os.path.join(services.postgres_dir, postgres.DATA))
        assert data.st_uid == postgres.server_account().pw_uid != 0
    password = _password(services.postgres_dir)
    assert password not in open(os.path.join(pg_sweep["state"], "state.json")).read()
    assert password not in up.stdout + up.stderr
    for pid in process_tree(services.groups):
        try:
            assert password not in " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
    found = listening(process_tree([services.postgres_pgid]))
    assert [port for _, port, _ in found] == [services.postgres_port] and all(on_loopback(ip) for ip, _, _ in found)
    with psycopg.connect(host="127.0.0.1", port=services.postgres_port, user=postgres.ROLE, password=password,
                         dbname=postgres.DATABASE) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=services.postgres_port, user=postgres.ROLE, password="wrong",
                        dbname=postgres.DATABASE)


def test_down_stops_postgres_and_a_user_given_postgresql_uri_finds_the_same_runs(pg_sweep):
    """Promise: `down` stops exactly what `up` started (PostgreSQL included) and keeps its data; `up
    --backend-store-uri postgresql://...` on an existing database serves the runs already in it, never printing the
    password, and a URI whose login fails stops `up` with one line before anything starts."""
    folder, state, services = pg_sweep["folder"], pg_sweep["state"], pg_sweep["services"]
    client = tracking.client(services.tracking_uri)
    before = {r.info.run_id for r in tracking.search_all_runs(client, client.get_experiment_by_name(NAME).experiment_id)}
    down = _run([sys.executable, "-m", "cluster", "down", "--state-dir", state], cwd=folder)
    assert down.returncode == 0, down.stderr
    assert not any(_group_alive(pgid) for pgid in services.groups) and read_state(state) is None
    log = os.path.join(folder, "existing.log")
    server, process = postgres.launch(services.postgres_dir, free_port(), log)  # "an existing database"
    try:
        password = _password(services.postgres_dir)
        good = f"postgresql://{postgres.ROLE}:{password}@127.0.0.1:{server.port}/{postgres.DATABASE}"
        bad_state = os.path.join(folder, "bad")
        bad = _up(folder, bad_state, "--backend-store-uri", good.replace(password, "wrong"))
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot log in to PostgreSQL" in bad.stderr
        assert "wrong" not in bad.stderr and read_state(bad_state) is None
        state2 = os.path.join(folder, "state2")
        up = _up(folder, state2, "--backend-store-uri", good)
        assert up.returncode == 0, up.stderr
        try:
            assert password not in up.stdout + open(os.path.join(state2, "state.json")).read()
            again = read_state(state2)
            client = tracking.client(again.tracking_uri)
            experiment = client.get_experiment_by_name(NAME)
            assert {r.info.run_id for r in tracking.search_all_runs(client, experiment.experiment_id)} == before
        finally:
            assert _run([sys.executable, "-m", "cluster", "down", "--state-dir", state2], cwd=folder).returncode == 0
    finally:
        os.kill(process.pid, postgres.STOP_SIGNAL)
        process.wait(timeout=60)
