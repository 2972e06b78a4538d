"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): a sweep's trials run on both."""

import shutil
import tempfile

import pytest
import ray
from ray.cluster_utils import Cluster
from rich.console import Console

from sweeps.runner import run_sweep
from test_sweeps_run import load_tiny


@pytest.mark.own_ray
@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, monkeypatch):
    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        spec = load_tiny(tmp_path, name="two_nodes", seeds=(0, 1), levels=1, train=256)
        result = run_sweep(spec, f"sqlite:///{tmp_path}/mlruns.db", Console(quiet=True))
        assert result.ok and result.trials == 2 and result.peak_trials == 2
        assert len(result.nodes) == 2
        assert {node["NodeID"] for node in ray.nodes() if node["Alive"]} == result.nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
