"""The services layer without a cluster: tracking URIs, a tracking server that is down, the job upload, the launcher."""

import json
import os

import pytest
import yaml

from cluster import tracking
from cluster.errors import ClusterError
from cluster.runtime_env import EXCLUDES, build_runtime_env, upload_files, write_runtime_env
from cluster.services import free_port
from conftest import REPO


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlruns.db"
    assert tracking.artifact_root(tracking.resolve_tracking_uri()) == f"file://{tmp_path}/mlartifacts"
    monkeypatch.setenv(tracking.ENV_URI, "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{tmp_path}/rel/x.db"
    assert tracking.artifact_root("http://127.0.0.1:5000") is None
    assert tracking.ui_command(f"sqlite:///{tmp_path}/mlruns.db").startswith(
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlruns.db --host 127.0.0.1")


def test_sqlite_store_is_created_with_artifacts_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    tracking.check_tracking(uri)
    client = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(client, "exp one", uri)
    assert tracking.ensure_experiment(client, "exp one", uri) == experiment_id
    assert client.get_experiment(experiment_id).artifact_location == f"file://{tmp_path}/mlartifacts/exp_one"


def test_server_down_is_a_clear_error(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"tracking server at {uri} is not reachable"):
        tracking.check_tracking(uri, timeout_s=2)


def _fake_project(root):
    files = {"pkg/code.py": 100, ".git/objects/pack.bin": 5000, ".venv/lib/big.so": 5000, "mlruns.db": 5000,
             "mlartifacts/1/mask.safetensors": 5000, "sweep_storage/results/k/level_00/mask.safetensors": 5000,
             "runs/out.txt": 5000, "pkg/__pycache__/code.pyc": 5000, "data/big.bin": 4000, "ignored_by_git.txt": 5000}
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    (root / ".gitignore").write_text("ignored_by_git.txt\n")


def test_upload_excludes_history_caches_venvs_and_run_outputs(tmp_path):
    _fake_project(tmp_path)
    assert set(upload_files(str(tmp_path))) == {"pkg/code.py", "data/big.bin", ".gitignore"}
    warnings = []
    env = build_runtime_env(str(tmp_path), warn=warnings.append, limit=1 << 20)
    assert not warnings and env["excludes"] == EXCLUDES and env["working_dir"] == str(tmp_path)
    build_runtime_env(str(tmp_path), warn=warnings.append, limit=6000)
    assert len(warnings) == 1 and "data (0 MiB)" in warnings[0] and "limit" in warnings[0]


def test_runtime_env_file_is_accepted_by_ray(tmp_path):
    from ray.runtime_env import RuntimeEnv

    path = tmp_path / "runtime_env.yaml"
    write_runtime_env(str(REPO), str(path))
    env = yaml.safe_load(path.read_text())
    assert env["working_dir"] == "." and ".git" in env["excludes"]
    RuntimeEnv(**env)
    assert sum(upload_files(str(REPO)).values()) < 20 * 2**20


def test_cluster_launcher_config_matches_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    config = yaml.safe_load((REPO / "cluster" / "gpu_cluster.yaml").read_text())
    jsonschema.validate(config, json.load(open(schema_path)))
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert any("--dashboard-host=127.0.0.1" in cmd for cmd in config["head_start_ray_commands"])
