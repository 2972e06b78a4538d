"""Losing a whole node mid-level, on a three-node Ray cluster on this machine (ray.cluster_utils.Cluster) with a real
SQLite MLflow store: the sweep finishes on the nodes left, and the loss is not counted against max_failures."""

import shutil
import tempfile
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.tune import Callback
from rich.console import Console

from cluster import conventions as cv
from cluster import tracking
from cluster.storage import CACHE_ENV
from sweeps.plan import build_plan
from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from conftest import BUCKET
from test_sweeps_run import tiny_spec_text


class RemoveNodeMidLevel(Callback):
    """Removes, `delay_s` after a trajectory on one of `workers` reports its trained level 0, that trajectory's node
    (its level 1 then in flight), noting which levels were finished on disk at that moment."""

    def __init__(self, cluster: Cluster, workers: dict, store: ResultsStore, pieces: list, delay_s: float = 0.5):
        self.cluster, self.workers, self.store, self.pieces, self.delay_s = cluster, workers, store, pieces, delay_s
        self.removed: dict = {}

    def __getstate__(self) -> dict:
        return {}  # Tune pickles callbacks with its state; the cluster is this process's

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if (not self.removed and result.get("kind") == "trajectory" and result["level"] == 0 and result["trained"]
                and result["node_id"] in self.workers):
            self.removed["key"] = result["piece_key"]
            threading.Timer(self.delay_s, self._remove, args=(self.workers[result["node_id"]],)).start()

    def _remove(self, node) -> None:
        self.removed["finished"] = started_at(self.store, self.pieces)
        self.removed["at"] = time.time()
        self.cluster.remove_node(node)
        self.removed["done"] = True


def started_at(store: ResultsStore, pieces: list) -> dict:
    """When each level finished on disk started training, by (content key, level)."""
    return {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in pieces for lv in store.finished_levels(p)}


@pytest.mark.slow
@pytest.mark.own_ray
def test_losing_a_worker_node_mid_level_retrains_only_the_level_in_flight(s3, tmp_path, monkeypatch):
    """Promise: when a worker node is removed while one of its trials trains a level, the sweep completes on the
    nodes left; no level finished before the loss is trained again (its started_at is unchanged); the level in
    flight is trained once more, after the loss; MLflow holds every level exactly once and no run is left RUNNING;
    and the loss does not count against max_failures (here 1; the summary counts it as a node loss). The results
    store is an S3 bucket (a moto server), with a cache folder of its own per node: no node shares a disk."""
    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths live under RAY_TMPDIR
    monkeypatch.setenv("RAY_TMPDIR", temp)
    storage = f"s3://{BUCKET}/node-loss"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache-driver"))
    caches = [{CACHE_ENV: str(tmp_path / f"cache-{node}")} for node in ("head", "worker1", "worker2")]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "env_vars": caches[0]})
    try:
        workers = [cluster.add_node(num_cpus=1, env_vars=env) for env in caches[1:]]
        ray.init(address=cluster.address)
        path = tmp_path / "node_loss.yaml"
        path.write_text(tiny_spec_text("node_loss", storage, seeds=(0, 1), train=1024)
                        .replace("max_failures: 2", "max_failures: 1"))
        spec = load_spec(str(path))
        store = ResultsStore(spec.storage)
        plan = build_plan(spec)
        remover = RemoveNodeMidLevel(cluster, {node.node_id: node for node in workers}, store, plan)
        uri = f"sqlite:///{tmp_path}/mlruns.db"
        result = run_sweep(spec, uri, Console(quiet=True), callbacks=[remover])
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert remover.removed.get("done"), "no trajectory reported level 0 from a worker node"
    assert result.ok and result.node_losses == 1 and result.retries == 1
    before, lost_key = remover.removed["finished"], remover.removed["key"]
    assert (lost_key, 1) not in before, "the removal must land while level 1 trains"
    after = started_at(store, plan)
    assert {key: after[key] for key in before} == before
    assert after[(lost_key, 1)] > remover.removed["at"]
    assert len(after) == sum(len(p.levels) for p in plan)
    client = tracking.client(uri)
    runs = tracking.search_all_runs(client, client.get_experiment_by_name(spec.name).experiment_id)
    assert {r.info.status for r in runs} == {"FINISHED"}
    logged = sorted((r.data.tags[cv.TAG_CONTENT_KEY], m.step) for r in runs if cv.TAG_CONTENT_KEY in r.data.tags
                    for m in client.get_metric_history(r.info.run_id, cv.METRIC_SPARSITY))
    assert logged == sorted(after)
