"""Storage on an object store: a real S3 API (moto's standalone server on 127.0.0.1), no shared disk.

A sweep with `storage: s3://...` and `data_dir: s3://...` runs on two Ray nodes whose node-local caches are separate
folders; a result whose upload was cut short is absent to every reader and trained again; a damaged upload is
refused; a node that reads other data fails naming the node and the file; no credential reaches what is printed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from dataclasses import replace

import pytest

from cluster.errors import ClusterError
from cluster.storage import CACHE_ENV, DOWNLOAD_LOG, MANIFEST
from conftest import BUCKET, GLUE_DIR, SECRET
from sweeps.errors import SweepError
from sweeps.plan import build_plan
from sweeps.spec import load_spec
from sweeps.store import RESULTS, ResultsStore
from test_sweeps_run import tiny_spec_text
from tickets.imp import run_trajectory
from tickets.masks import Mask
from tickets.paths import MASK, METRICS, TRAINED_WEIGHTS, level_dir

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This process's node cache, a fresh folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def s3_spec(tmp_path, name: str, prefix: str, data: str = "s3", **kwargs):
    """A tiny spec whose storage (and, by default, data) are in the moto bucket."""
    text = tiny_spec_text(name, f"s3://{BUCKET}/{prefix}", **kwargs)
    if data == "s3":
        text = text.replace(f"data_dir: {GLUE_DIR}", f"data_dir: s3://{BUCKET}/glue")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_spec(str(path))


def downloads(cache_dir) -> list[dict]:
    """The download log of one node cache."""
    path = os.path.join(cache_dir, DOWNLOAD_LOG)
    return [json.loads(line) for line in open(path)] if os.path.isfile(path) else []


def test_data_on_s3_plans_the_same_content_keys_as_the_same_data_in_a_folder(s3, cache, tmp_path, capsys):
    from sweeps.cli import main

    on_s3 = s3_spec(tmp_path, "keys_s3", "keys", levels=1)
    path = tmp_path / "local.yaml"
    path.write_text(tiny_spec_text("keys_local", str(tmp_path / "storage"), levels=1))
    local = load_spec(str(path))
    assert on_s3.data_dir.startswith(str(cache)) and on_s3.storage == f"s3://{BUCKET}/keys"
    assert [p.key for p in build_plan(on_s3)] == [p.key for p in build_plan(local)]
    fetched = len(downloads(cache))
    s3_spec(tmp_path, "keys_s3", "keys", levels=1)
    assert len(downloads(cache)) == fetched  # fetched once per node while the store's copy is unchanged
    spec_file = tmp_path / "keys_s3.yaml"
    assert main([str(spec_file), "--dry-run"]) == 0
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err and "moto-key" not in printed.out + printed.err


def test_a_result_whose_upload_was_cut_short_is_absent_and_a_damaged_one_is_refused(s3, cache, tmp_path,
                                                                                      monkeypatch):
    spec = s3_spec(tmp_path, "cut", "cut", data="folder", levels=0)
    piece = build_plan(spec)[0]
    store = ResultsStore(spec.storage)
    local = store.stage(piece)
    run_trajectory(piece.recipe, local.path(piece.key), progress=False)
    level0 = level_dir(local.path(piece.key), 0)
    rel = f"{RESULTS}/{piece.key}/{level_dir('', 0)}"
    store.remote.put_folder(level0, rel, last=METRICS)
    store.remote.fs.rm_file(f"{store.remote.base}/{rel}/{METRICS}")  # killed before its last object
    assert store.remote.exists(f"{rel}/{MASK}") and store.remote.exists(f"{rel}/{MANIFEST}")
    assert store.finished_levels(piece) == [] and store.level_metrics(piece, 0) is None

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "other-node"))
    other = ResultsStore(spec.storage)
    assert not os.path.exists(level_dir(other.stage(piece).path(piece.key), 0))  # nothing of it is reused

    monkeypatch.setenv(CACHE_ENV, str(cache))
    store.publish(piece)
    assert store.finished_levels(piece) == [0] and store.is_complete(piece)

    store.remote.write_bytes(f"{rel}/{MASK}", open(os.path.join(level0, MASK), "rb").read()[:-1] + b"\x00")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "third-node"))
    with pytest.raises(ClusterError, match="does not match the sha256"):
        ResultsStore(spec.storage).stage(piece)


def test_a_node_that_reads_other_data_fails_naming_the_node_and_the_file(s3, cache, tmp_path):
    from sweeps.data_source import check_data, data_plan

    spec = s3_spec(tmp_path, "data", "data", levels=0)
    piece = build_plan(spec)[0]
    plan = data_plan(piece.recipe)
    assert plan["uri"] == f"s3://{BUCKET}/glue"
    check_data(piece.recipe, plan, "node-a")
    other = tmp_path / "other-data"
    shutil.copytree(spec.data_dir, other)
    with open(other / "SST-2" / "dev.tsv", "a") as handle:
        handle.write("an extra line\t1\n")
    with pytest.raises(SweepError, match=r"^node node-b: data file '.*SST-2/dev.tsv' is not the one the driver"):
        check_data(replace(piece.recipe, data_dir=str(other)), plan, "node-b")


@pytest.mark.own_ray
@pytest.mark.slow
def test_a_sweep_on_s3_runs_on_two_nodes_that_share_no_disk(s3, tmp_path, monkeypatch):
    """Head + worker node, each with its own cache folder, one trajectory training on each. When a trajectory reports
    its last level, its results are wiped from every node cache, so its baseline can only start from what it
    downloads from the store. A level whose upload was cut short is trained again."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.tune import Callback
    from rich.console import Console

    from sweeps.runner import run_sweep

    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="rs3", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache-driver"))
    caches = [tmp_path / "cache-head", tmp_path / "cache-worker"]
    spec = s3_spec(tmp_path, "two_nodes_s3", "two-nodes", seeds=(0, 1), levels=1,
                   branches="{kind: oneshot-finetuned, levels: [1]}")
    plan = build_plan(spec)
    trajectories = [p for p in plan if p.is_trajectory]
    baselines = {p.key: p for p in plan if not p.is_trajectory}
    store = ResultsStore(spec.storage)
    cut = f"{RESULTS}/{trajectories[0].key}/{level_dir('', 1)}"  # killed after its mask and manifest
    store.remote.write_bytes(f"{cut}/{MASK}", b"cut short")
    store.remote.write_bytes(f"{cut}/{MANIFEST}", json.dumps({"files": {}, "last": METRICS}).encode())

    class WipeCaches(Callback):
        """Removes a trajectory's results from every node cache when it reports its last level; records which node
        ran each piece and which pieces had reported by then."""

        def __init__(self):
            self.ran: dict[str, str] = {}
            self.reported_before_wipe: dict[str, set[str]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "piece_key" not in result:
                return
            key = result["piece_key"]
            self.ran[key] = result["node_id"]
            if key in {p.key for p in trajectories} and result["level"] == 1:
                for folder in caches:
                    for results in glob.glob(f"{folder}/stores/*/{RESULTS}/{key}"):
                        shutil.rmtree(results)
                self.reported_before_wipe[key] = set(self.ran)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "env_vars": {CACHE_ENV: str(caches[0])}})
    try:
        worker = cluster.add_node(num_cpus=1, env_vars={CACHE_ENV: str(caches[1])})
        ray.init(address=cluster.address)
        node_cache = {cluster.head_node.node_id: caches[0], worker.node_id: caches[1]}
        wipe = WipeCaches()
        uri = f"sqlite:///{tmp_path}/mlruns.db"
        result = run_sweep(spec, uri, Console(quiet=True), callbacks=[wipe])
        assert result.ok and result.levels_trained == 6  # the cut-short level 1 too: nothing of it was reused

        assert {wipe.ran[p.key] for p in trajectories} == set(node_cache)  # one trajectory trained on each node
        for node, folder in node_cache.items():  # each node fetched into its own cache, never into another's
            assert {entry["node_id"] for entry in downloads(folder)} == {node}
            data = [entry["url"] for entry in downloads(folder) if entry["url"].startswith(f"s3://{BUCKET}/glue/")]
            assert sorted(data) == [f"s3://{BUCKET}/glue/SST-2/{name}" for name in ("dev.tsv", "train.tsv")]  # once
        for key, piece in baselines.items():
            assert key not in wipe.reported_before_wipe[piece.source_key]  # it started after its source was wiped
            fetched = {entry["url"] for entry in downloads(node_cache[wipe.ran[key]])}
            source = f"s3://{BUCKET}/two-nodes/{RESULTS}/{piece.source_key}"
            assert {f"{source}/{level_dir('', 1)}/{MASK}", f"{source}/{level_dir('', 0)}/{TRAINED_WEIGHTS}"} <= fetched

        names = store.remote.files(RESULTS)
        for piece in plan:
            for level in piece.levels:
                folder = f"{piece.key}/{level_dir('', level)}" if piece.is_chain else piece.key
                assert {f"{folder}/{METRICS}", f"{folder}/{MANIFEST}", f"{folder}/{MASK}"} <= names
        assert Mask.load(os.path.join(store.result_dir(trajectories[0], 1), MASK)).metadata["level"] == "1"
        assert any("experiment_state" in name for name in store.remote.files("ray"))  # Tune's state is in S3 too

        again = run_sweep(spec, uri, Console(quiet=True))
        assert again.ok and again.levels_trained == 0 and again.trials == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
