"""Shared test settings: offline, quiet, real data from ../shared."""

import logging
import os
from pathlib import Path

import pytest

os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    RAY_USAGE_STATS_ENABLED="0",
    MLFLOW_DISABLE_TELEMETRY="true",
)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
GLUE_DIR = SHARED_DATA / "glue"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def tiny_trajectory_config():
    """A trajectory recipe that trains the tiny random BERT on a few real SST-2 examples in seconds (levels 0-2)."""
    from tickets.config import TrainConfig, TrajectoryConfig

    train = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_seq_length=32,
                        max_train_samples=48, max_eval_samples=32)
    return TrajectoryConfig(task="sst2", seed=0, model="tiny-random-bert", data_dir=str(GLUE_DIR),
                            rate=0.2, schedule="original", levels=2, train=train)


@pytest.fixture
def tiny_recipe():
    """The tiny trajectory recipe (`tiny_trajectory_config`)."""
    return tiny_trajectory_config()


def record_fine_tuning(monkeypatch) -> list:
    """Record, for every fine-tuning call, the weights it started from and the masked parameters and weights it ended
    with (a list that grows with each call)."""
    import tickets.session

    calls = []
    original = tickets.session.fine_tune

    def wrapper(model, data, cfg, masked, seed, *args, **kwargs):
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        result = original(model, data, cfg, masked, seed, *args, **kwargs)
        calls.append({"start": start, "masked": [(p.detach().clone(), k.clone()) for p, k in masked],
                      "end": {n: p.detach().clone() for n, p in model.named_parameters()}})
        return result

    monkeypatch.setattr(tickets.session, "fine_tune", wrapper)
    return calls


@pytest.fixture(scope="session")
def tiny_trajectory(tmp_path_factory):
    """The tiny recipe's trajectory (levels 0-2), trained once for the session while `record_fine_tuning` records
    it: (its folder, its level results, the recorded calls). Tests only read the folder."""
    from tickets.imp import run_trajectory

    out = str(tmp_path_factory.mktemp("tiny_trajectory") / "traj")
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = record_fine_tuning(monkeypatch)
        results = run_trajectory(tiny_trajectory_config(), out, progress=False)
    return out, results, calls


@pytest.fixture(scope="session")
def bench_gpu_tiny(tmp_path_factory):
    """`bench/gpu.py --device cpu --tiny` (every section of the GPU benchmark, on tiny models), run once for the
    session: (the finished process, the path of its JSON)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("bench_gpu") / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    return proc, out


def pytest_collection_modifyitems(config, items):
    """Tests that start a Ray cluster of their own run after every test that shares the session's local Ray."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session (2 CPUs, no dashboard, every port on loopback), in a short temp folder;
    its workers import test modules too (a remote function defined in a test).

    A test that needs a cluster of its own is marked `own_ray`: it runs after the others and starts with
    `ray.shutdown()`."""
    import shutil
    import tempfile

    import ray

    from cluster.ray_session import single_machine

    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    if not ray.is_initialized():
        with single_machine():
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests")}})
    yield
    ray.shutdown()
    os.environ.pop("RAY_TMPDIR") if old is None else os.environ.__setitem__("RAY_TMPDIR", old)
    shutil.rmtree(temp, ignore_errors=True)


BUCKET = "tickets"
SECRET = "moto-secret-never-printed"


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 for the session (moto keeps its buckets in this process, so there is one) with
    bucket BUCKET holding SST-2 under `glue/`; the AWS variables point at it while it runs."""
    from moto.server import ThreadedMotoServer

    from cluster.storage import ObjectStore

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    store = ObjectStore(f"s3://{BUCKET}")
    store.fs.mkdir(BUCKET)
    store.fs.put(str(GLUE_DIR / "SST-2"), f"{BUCKET}/glue/SST-2", recursive=True)
    yield store
    server.stop()
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
