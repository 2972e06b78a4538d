"""Concurrency follows the cluster: on Ray's fake autoscaling cluster (a head with no CPU for trials, one-CPU workers
started on demand from zero) a sweep's pending trials make the autoscaler add nodes, and trials train side by side on
them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
import ray
from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
from ray.cluster_utils import AutoscalingCluster
from rich.console import Console

from cluster.services import free_port
from sweeps.errors import SweepError
from sweeps.plan import build_plan
from sweeps.runner import run_sweep
from sweeps.store import ResultsStore
from sweeps.spec import load_spec
from test_sweeps_run import load_tiny, tiny_spec_text

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# What Ray's fake_multi_node/example.yaml (missing from Ray 2.60's wheel) holds besides the node types.
FAKE_PROVIDER_CONFIG = {
    "cluster_name": "fake_multinode", "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
    "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
    "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


class LoopbackAutoscalingCluster(AutoscalingCluster):
    """Ray's AutoscalingCluster with the base config its wheel lacks, every node on 127.0.0.1 and a port of its own,
    stopped by killing its own processes (AutoscalingCluster runs `ray stop --force`, which stops every Ray on the
    machine)."""

    def __init__(self, folder: str, head_resources: dict, worker_node_types: dict):
        self.folder = folder
        self.process = None
        self.address = f"127.0.0.1:{free_port()}"
        super().__init__(head_resources, worker_node_types)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = json.loads(json.dumps(FAKE_PROVIDER_CONFIG))
        config["provider"]["gcs_address"] = self.address
        config["available_node_types"] = {**worker_node_types, "ray.head.default": {
            "resources": head_resources, "node_config": {}, "max_workers": 0}}
        return config

    def start(self, _system_config=None, override_env=None) -> None:
        """Start the head (`ray start --head --block`, in a session of its own) and wait for its GCS."""
        config = os.path.join(self.folder, "autoscaling.json")
        with open(config, "w") as handle:
            json.dump(self._config, handle)
        command = [RAY, "start", "--head", "--block", f"--autoscaling-config={config}",
                   f"--port={self.address.rsplit(':', 1)[1]}", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={self._head_resources.get('CPU', 0)}", "--include-dashboard=false",
                   "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}"]
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # the nodes the autoscaler adds take 127.0.0.1 too
        with open(os.path.join(self.folder, "head.log"), "w") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.time() + 120
        while not _listening(self.address):
            assert self.process.poll() is None and time.time() < deadline, "the fake cluster's head did not start"
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Kill every process of the cluster: those in the head's session (the worker nodes are the autoscaler's)."""
        if self.process is None:
            return
        session = self.process.pid
        mine = [p for p in psutil.process_iter() if _session(p) == session]
        for process in mine:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                continue
        psutil.wait_procs(mine, timeout=30)


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))
    peak = running = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
@pytest.mark.own_ray
def test_trials_run_side_by_side_on_nodes_the_autoscaler_adds(tmp_path, monkeypatch):
    """Promise: the number of trials at once follows the cluster, not its size at start: with no CPU for trials at
    start, the sweep's pending trials make the autoscaler add nodes, at least two levels train at the same moment (by
    the levels' own started_at/finished_at) on at least two added nodes, and the summary counts what happened."""
    ray.shutdown()
    folder = tempfile.mkdtemp(prefix="ra", dir="/tmp")  # short: Ray's socket paths live under RAY_TMPDIR
    monkeypatch.setenv("RAY_TMPDIR", folder)
    # The head authenticates with Ray's token file when there is one, and this process must then use it too: what a
    # local ray.init does for itself (it also sets RAY_AUTH_MODE for this process and the head it starts).
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    cluster = LoopbackAutoscalingCluster(folder, head_resources={"CPU": 0}, worker_node_types={
        "cpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}})
    try:
        cluster.start()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        spec = load_tiny(tmp_path, name="autoscaled", seeds=(0, 1, 2, 3), levels=1, train=1024)
        result = run_sweep(spec, f"sqlite:///{tmp_path}/mlruns.db", Console(quiet=True))
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    assert result.ok and result.trials == 4
    store = ResultsStore(spec.storage)
    levels = [store.level_metrics(piece, level) for piece in build_plan(spec) for level in piece.levels]
    assert _peak_overlap([(m["started_at"], m["finished_at"]) for m in levels]) >= 2
    assert len(result.nodes) >= 2 and result.peak_trials >= 2


def test_a_local_ray_too_small_for_one_trial_is_one_clear_error_before_any_training(local_ray, tmp_path):
    """Promise: a Ray that cannot grow (local, or already started) and has no node with one trial's resources is
    refused with one line, nothing trained."""
    path = tmp_path / "too_big.yaml"
    path.write_text(tiny_spec_text("too_big", str(tmp_path / "storage")).replace("cpus: 1", "cpus: 4"))
    spec = load_spec(str(path))
    with pytest.raises(SweepError, match="asks 4 CPUs and 0 GPUs per trial but no node of this Ray has that"):
        run_sweep(spec, f"sqlite:///{tmp_path}/mlruns.db", Console(quiet=True))
    assert not any(ResultsStore(spec.storage).finished_levels(piece) for piece in build_plan(spec))
