"""Sweeps on a real local Ray and a real SQLite MLflow store, with the tiny random BERT and a few SST-2 examples."""

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest
from ray.tune import Callback
from rich.console import Console

from analysis.report import write_report
from analysis.structured import BEFORE_RETRAINING, FULL_MODEL
from cluster import conventions as cv
from cluster import tracking
from conftest import GLUE_DIR
from sweeps.plan import Piece, build_plan
from sweeps.series import group_series, series_key
from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from sweeps.terminal import print_summary
from tickets.masks import Mask


def tiny_spec_text(name: str, storage: str, seeds=(0,), levels: int = 2, train: int = 64, branches: str = "",
                   transfer: str = "") -> str:
    """A sweep spec for the tiny random BERT on a few real SST-2 examples."""
    return f"""\
name: {name}
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2]
seeds: {list(seeds)}
pruning: {{rate: 0.2, levels: {levels}, rewind: [0]}}
training: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, max_seq_length: 32, max_train_samples: {train},
           max_eval_samples: 32}}
branches: [{branches}]
transfer: [{transfer}]
resources: {{cpus: 1}}
max_failures: 2
storage: {storage}
"""


def load_tiny(tmp_path, **kwargs):
    """Write and load a tiny spec; storage lives in tmp_path."""
    path = tmp_path / f"{kwargs['name']}.yaml"
    path.write_text(tiny_spec_text(storage=str(tmp_path / "storage"), **kwargs))
    return load_spec(str(path))


def _started(store: ResultsStore, pieces) -> dict:
    return {(p.key, lv): store.level_metrics(p, lv)["started_at"] for p in pieces for lv in store.finished_levels(p)}


def series_runs(client, name: str) -> dict:
    """The series runs of experiment `name` by their content key (the sweep's own run has none)."""
    experiment = client.get_experiment_by_name(name)
    return {r.data.tags[cv.TAG_CONTENT_KEY]: r for r in client.search_runs([experiment.experiment_id])
            if cv.TAG_CONTENT_KEY in r.data.tags}


def all_runs(client, name: str) -> list:
    """Every run of experiment `name`."""
    return client.search_runs([client.get_experiment_by_name(name).experiment_id])


class StatusProbe(Callback):
    """Reads, in the driver, the MLflow status of a trial's series run each time the trial reports a level."""

    def __init__(self, uri: str, name: str):
        self.uri, self.name, self.seen = uri, name, []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "piece_key" in result:
            key = series_key(Piece.from_dict(trial.config["piece"]))
            run = series_runs(tracking.client(self.uri), self.name)[key]
            self.seen.append((result["kind"], result["level"], run.info.status))


@pytest.fixture(scope="module")
def seven_trials(local_ray, tmp_path_factory):
    """A finished 7-trial sweep: one trajectory (levels 0-2), random pruning at levels 1 and 2, the standard-pruning
    chain, random reinitialisation at level 2 of the prunable weights and of the whole encoder, transfer to RTE."""
    tmp = tmp_path_factory.mktemp("seven")
    spec = load_tiny(tmp, name="seven", branches="{kind: random-prune, levels: [1, 2]}, {kind: standard, levels: all}, "
                     "{kind: random-reinit, levels: [2]}, {kind: random-reinit, levels: [2], reinit_scope: encoder}",
                     transfer="{sources: [sst2], targets: [rte], sparsity: 0.4}")
    uri = f"sqlite:///{tmp}/mlruns.db"
    probe = StatusProbe(uri, "seven")
    result = run_sweep(spec, uri, Console(quiet=True), callbacks=[probe])
    return spec, uri, result, probe


def test_a_sweep_logs_one_run_per_series_with_its_levels_as_steps(seven_trials, tmp_path):
    """IMP, the random-pruning baseline and the transfer are one run each, levels as steps at the schedule's
    sparsity, with tags that are true for the run and names whose distinguishing part comes first."""
    spec, uri, result, _ = seven_trials
    assert result.ok and len(result.pieces) == 7 and result.trials == 7 and result.levels_trained == 3 + 2 + 2 + 2 + 1
    client = tracking.client(uri)
    runs = series_runs(client, "seven")
    assert set(runs) == {series_key(p) for p in result.pieces} and len(runs) == 6
    traj = next(p for p in result.pieces if p.is_trajectory)
    run = runs[traj.key]
    tags = run.data.tags
    expected = {cv.TAG_RUN_KIND: cv.RUN_KIND_TRAJECTORY, cv.TAG_SERIES: "imp", cv.TAG_TASK: "sst2", cv.TAG_SEED: "0",
                cv.TAG_METHOD: "magnitude", cv.TAG_REWIND: "0", cv.TAG_SCHEDULE: "original",
                cv.TAG_MODEL: "tiny-random-bert", cv.TAG_MAIN_METRIC: "accuracy", cv.TAG_LEVELS_PLANNED: "2",
                cv.TAG_LEVELS: "0,1,2"}
    assert {k: tags.get(k) for k in expected} == expected
    assert run.info.run_name == "imp sst2 s0 r0"
    assert len(json.loads(tags[cv.TAG_PRUNABLE_SET])) == 4 and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, cv.METRIC_SPARSITY)
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.0), (1, 0.2), (2, 0.4)]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, cv.METRIC_LEVEL)) == \
        [(0, 0), (1, 1), (2, 2)]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "accuracy")) == [0, 1, 2]
    assert (tags[cv.TAG_DEVICE], tags[cv.TAG_PRECISION]) == ("cpu", "fp32")  # what the trial trained with
    throughput = client.get_metric_history(run.info.run_id, cv.METRIC_SAMPLES_PER_S)
    assert sorted(m.step for m in throughput) == [0, 1, 2] and all(m.value > 0 for m in throughput)
    assert not client.get_metric_history(run.info.run_id, cv.METRIC_PEAK_MEMORY_MB)  # GPU trials only
    artifacts = {f.path for folder in ("masks", "levels") for f in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts == {cv.mask_artifact_path(lv) for lv in range(3)} | {cv.level_artifact_path(lv) for lv in range(3)}
    local = client.download_artifacts(run.info.run_id, cv.mask_artifact_path(2), str(tmp_path))
    assert Mask.load(local).sparsity == pytest.approx(0.4, abs=1e-3)

    random = runs[series_key(next(p for p in result.pieces if p.kind == "random-prune"))]
    rtags = random.data.tags
    assert random.info.run_name == "random-prune sst2 s0 r0" and random.info.status == "FINISHED"
    assert {k: rtags.get(k) for k in (cv.TAG_RUN_KIND, cv.TAG_SERIES, cv.TAG_BRANCH_KIND, cv.TAG_METHOD,
                                       cv.TAG_IMP_METHOD, cv.TAG_TASK, cv.TAG_SEED, cv.TAG_LEVELS)} == {
        cv.TAG_RUN_KIND: cv.RUN_KIND_BRANCH, cv.TAG_SERIES: "random-prune", cv.TAG_BRANCH_KIND: "random-prune",
        cv.TAG_METHOD: "random", cv.TAG_IMP_METHOD: "magnitude", cv.TAG_TASK: "sst2", cv.TAG_SEED: "0",
        cv.TAG_LEVELS: "1,2"}
    assert rtags[cv.TAG_SOURCE_RUN] == run.info.run_id and cv.TAG_PARENT_RUN not in rtags  # not folded under IMP
    steps = client.get_metric_history(random.info.run_id, cv.METRIC_SPARSITY)
    assert sorted((m.step, m.value) for m in steps) == [(1, 0.2), (2, 0.4)]
    assert {f.path for f in client.list_artifacts(random.info.run_id, "masks")} == \
        {cv.mask_artifact_path(1), cv.mask_artifact_path(2)}
    actual = {m.step: m.value for m in client.get_metric_history(random.info.run_id, "actual_sparsity")}
    assert actual[2] == pytest.approx(0.4, abs=1e-3)

    transfer = runs[series_key(next(p for p in result.pieces if p.kind == "transfer"))]
    ttags = transfer.data.tags
    assert transfer.info.run_name == "transfer:sst2->rte s0 r0"
    assert (ttags[cv.TAG_SERIES], ttags[cv.TAG_TASK], ttags[cv.TAG_SOURCE_TASK], ttags[cv.TAG_SOURCE_LEVEL]) == \
        ("transfer:sst2->rte", "rte", "sst2", "2")
    assert [m.step for m in client.get_metric_history(transfer.info.run_id, cv.METRIC_SPARSITY)] == [2]


def test_runs_start_and_end_with_their_own_training_and_are_running_while_they_train(seven_trials):
    """A run's start and end bracket its own levels' training, not the whole sweep; while a trial reports a level
    its run is RUNNING; at the end every run is FINISHED."""
    spec, uri, result, probe = seven_trials
    store = ResultsStore(spec.storage)
    client = tracking.client(uri)
    runs = series_runs(client, "seven")
    sweep = next(r for r in all_runs(client, "seven") if r.data.tags.get(cv.TAG_RUN_KIND) == cv.RUN_KIND_SWEEP)
    for series in group_series(result.pieces):
        run = runs[series.key].info
        levels = [store.level_metrics(p, lv) for p in series.pieces for lv in p.levels]
        assert run.start_time <= min(m["started_at"] for m in levels) * 1000
        assert run.end_time >= max(m["finished_at"] for m in levels) * 1000 - 1
        assert sweep.info.start_time <= run.start_time and run.end_time <= sweep.info.end_time
        assert run.status == "FINISHED"
    traj = next(p for p in result.pieces if p.is_trajectory)
    first_level_done = store.level_metrics(traj, 0)["finished_at"] * 1000
    for piece in result.pieces:
        if not piece.is_trajectory:  # a baseline's run starts when its own training can, not with the sweep
            assert runs[series_key(piece)].info.start_time >= first_level_done - 1
    assert len(probe.seen) == 10 and {status for _, _, status in probe.seen} == {"RUNNING"}


def test_the_sweep_has_its_own_run_with_spec_and_plan_and_the_experiment_says_what_it_is(seven_trials, tmp_path):
    spec, uri, result, _ = seven_trials
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("seven")
    assert experiment.tags[cv.EXPERIMENT_TAG_LAYOUT] == cv.LAYOUT_VERSION
    description = experiment.tags[cv.EXPERIMENT_TAG_DESCRIPTION]
    assert "**Sweep `seven`**" in description and "random-prune" in description and "7 trials" in description
    sweeps = [r for r in all_runs(client, "seven") if r.data.tags.get(cv.TAG_RUN_KIND) == cv.RUN_KIND_SWEEP]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED" and sweeps[0].info.run_name == "sweep seven"
    run_id = sweeps[0].info.run_id
    spec_file = client.download_artifacts(run_id, cv.SPEC_ARTIFACT, str(tmp_path))
    assert load_spec(spec_file).name == "seven"
    plan = pd.read_csv(client.download_artifacts(run_id, cv.PLAN_ARTIFACT, str(tmp_path)))
    assert len(plan) == 10 and set(plan["series"]) == {"imp", "random-prune", "standard", "random-reinit",
                                                       "random-reinit:encoder", "transfer:sst2->rte"}
    assert set(plan["content_key"]) == {p.key for p in result.pieces}


def test_the_sweep_ends_with_the_url_of_its_comparison_view_and_its_report_command(seven_trials):
    """The last lines name the saved view 'IMP vs baselines by sparsity' of this experiment (for `mlflow ui` on
    127.0.0.1:5000) and the exact report command."""
    from cluster.mlflow_view import opened_state

    spec, uri, result, _ = seven_trials
    experiment_id = tracking.client(uri).get_experiment_by_name("seven").experiment_id
    assert result.view_url.startswith(f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?viewStateShareKey=")
    assert opened_state(tracking.client(uri), experiment_id, result.view_url)  # the view the URL names exists
    console = Console(record=True, width=60)
    print_summary(console, result)
    lines = console.export_text().splitlines()
    assert lines[-2].endswith(result.view_url)
    assert lines[-1] == f"report: python -m analysis report --experiment seven --tracking-uri {uri} --out reports/seven"


def test_an_experiment_of_the_older_layout_is_refused_before_anything_runs(tmp_path):
    """An experiment written one run per branch level is refused with what to do; nothing is trained or logged."""
    from cluster.errors import ClusterError

    spec = load_tiny(tmp_path, name="old")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = tracking.client(uri)
    experiment_id = client.create_experiment("old")
    client.create_run(experiment_id, tags={cv.TAG_RUN_KIND: cv.RUN_KIND_BRANCH, cv.TAG_CONTENT_KEY: "k"})
    with pytest.raises(ClusterError, match="older version.*Rename the sweep.*mlflow experiments delete"):
        run_sweep(spec, uri, Console(quiet=True))
    assert len(client.search_runs([experiment_id])) == 1 and not os.path.exists(os.path.join(spec.storage, "results"))


def test_a_runs_content_key_tag_is_its_series_key_and_level_files_name_their_trial(seven_trials):
    """Each series run has one key; every level file names its trial's key as run_key beside its own content key."""
    spec, uri, result, _ = seven_trials
    store = ResultsStore(spec.storage)
    keys = set(series_runs(tracking.client(uri), "seven"))
    for piece in result.pieces:
        assert series_key(piece) in keys
        for level in piece.levels:
            metrics = store.level_metrics(piece, level)
            assert metrics["run_key"] == piece.key
            if piece.is_trajectory:
                assert metrics["content_key"] == piece.recipe.content_key(level)


def test_standard_chain_and_scoped_reinit_branches_in_a_sweep(seven_trials):
    """Standard pruning runs as one chain run with its levels as steps; random-reinit runs carry their scope."""
    spec, uri, result, _ = seven_trials
    assert sorted(p.kind for p in result.pieces) == ["random-prune", "random-prune", "random-reinit", "random-reinit",
                                                     "standard", "trajectory", "transfer"]
    client = tracking.client(uri)
    runs = series_runs(client, "seven")
    chain = next(p for p in result.pieces if p.kind == "standard")
    history = client.get_metric_history(runs[chain.key].info.run_id, cv.METRIC_SPARSITY)
    assert [(m.step, round(m.value, 3)) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.2), (2, 0.4)]
    reinits = [runs[series_key(p)].data.tags for p in result.pieces if p.kind == "random-reinit"]
    assert sorted((t[cv.TAG_REINIT_SCOPE], t[cv.TAG_SERIES]) for t in reinits) == [
        ("encoder", "random-reinit:encoder"), ("prunable", "random-reinit")]
    assert runs[chain.key].data.tags[cv.TAG_SERIES] == "standard"
    store = ResultsStore(spec.storage)
    assert store.level_metrics(chain, 2)["run_key"] == chain.key


def test_second_run_trains_nothing_and_adds_no_runs(seven_trials):
    spec, uri, first, _ = seven_trials
    store = ResultsStore(spec.storage)
    before = _started(store, first.pieces)
    again = run_sweep(spec, uri, Console(quiet=True))
    assert again.ok and again.trials == 0 and again.levels_trained == 0 and again.levels_logged == 0
    assert _started(store, first.pieces) == before
    runs = all_runs(tracking.client(uri), "seven")
    assert len(runs) == 6 + 1 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_lost_tracking_store_is_refilled_from_the_results_store(seven_trials, tmp_path):
    """A fresh MLflow store gets every series run, its levels and the times its levels recorded, training nothing."""
    spec, _, first, _ = seven_trials
    uri = f"sqlite:///{tmp_path}/fresh.db"
    again = run_sweep(spec, uri, Console(quiet=True))
    assert again.ok and again.trials == 0 and again.levels_trained == 0
    client = tracking.client(uri)
    runs = series_runs(client, "seven")
    assert len(all_runs(client, "seven")) == 6 + 1 and {r.info.status for r in runs.values()} == {"FINISHED"}
    store = ResultsStore(spec.storage)
    for series in group_series(first.pieces):
        levels = [store.level_metrics(p, lv) for p in series.pieces for lv in p.levels]
        run = runs[series.key].info
        assert (run.start_time, run.end_time) == (int(min(m["started_at"] for m in levels) * 1000),
                                                  int(max(m["finished_at"] for m in levels) * 1000))
        steps = client.get_metric_history(run.run_id, cv.METRIC_SPARSITY)
        assert sorted(m.step for m in steps) == sorted(lv for p in series.pieces for lv in p.levels)


class KillWorkerMidLevel(Callback):
    """After level 0 of the trajectory is reported, kill -9 the trial's worker process while level 1 trains."""

    def __init__(self, store_root: str, delay_s: float):
        self.store_root = store_root
        self.delay_s = delay_s
        self.killed = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result.get("kind") == "trajectory" and result["level"] == 0 and result["trained"]:
            self.killed["pid"] = result["worker_pid"]
            folder = os.path.join(self.store_root, result["piece_key"])
            threading.Timer(self.delay_s, self._kill, args=(folder,)).start()

    def _kill(self, folder: str) -> None:
        levels = sorted(name for name in os.listdir(folder) if name.startswith("level_"))
        self.killed["finished"] = {name: json.load(open(os.path.join(folder, name, "metrics.json")))["started_at"]
                                   for name in levels}
        self.killed["at"] = time.time()
        os.kill(self.killed["pid"], signal.SIGKILL)


@pytest.mark.slow  # a fault, end to end (a worker killed, its trial retried), like tests/test_faults.py
def test_kill_9_of_a_worker_mid_level_recomputes_no_finished_level(local_ray, tmp_path):
    spec = load_tiny(tmp_path, name="killed", train=1024)
    store = ResultsStore(spec.storage)
    killer = KillWorkerMidLevel(store.root, delay_s=0.5)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    result = run_sweep(spec, uri, Console(quiet=True), callbacks=[killer])
    assert result.ok and result.retries == 1
    assert list(killer.killed["finished"]) == ["level_00"], "the kill must land while level 1 trains"
    piece = build_plan(spec)[0]
    started = {lv: store.level_metrics(piece, lv)["started_at"] for lv in range(3)}
    assert started[0] == killer.killed["finished"]["level_00"] < killer.killed["at"]
    assert killer.killed["at"] < started[1] < started[2]
    client = tracking.client(uri)
    run = next(iter(series_runs(client, "killed").values()))
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, cv.METRIC_SPARSITY)) == [0, 1, 2]
    assert run.info.status == "FINISHED"


def test_tracking_server_down_stops_before_any_training(tmp_path):
    from cluster.errors import ClusterError
    from cluster.services import free_port

    spec = load_tiny(tmp_path, name="down")
    with pytest.raises(ClusterError, match="not reachable"):
        run_sweep(spec, f"http://127.0.0.1:{free_port()}", Console(quiet=True))
    assert not os.path.exists(spec.storage)


def test_a_node_without_the_drivers_storage_is_refused(tmp_path):
    store = ResultsStore(str(tmp_path / "shared"))
    store.check_shared(store.mark())
    with pytest.raises(RuntimeError, match="every node mounts"):
        ResultsStore(str(tmp_path / "node_local")).check_shared(store.mark())


def test_structured_sweep_logs_a_search_and_equal_size_subnetworks_nested_under_it(local_ray, tmp_path):
    path = tmp_path / "structured.yaml"
    path.write_text(f"""\
name: structured
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2]
seeds: [0]
structured: {{threshold: 0.5, head_fraction: 0.25, importance_samples: 16, subnetworks: [good, bad]}}
training: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, max_seq_length: 32, max_train_samples: 48,
           max_eval_samples: 32}}
resources: {{cpus: 1}}
storage: {tmp_path / "storage"}
""")
    spec = load_spec(str(path))
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    result = run_sweep(spec, uri, Console(quiet=True))
    assert result.ok and result.trials == 3 and result.levels_trained == 3
    client = tracking.client(uri)
    runs = series_runs(client, "structured")
    assert set(runs) == {p.key for p in result.pieces}
    search = next(p for p in result.pieces if p.kind == "structured-search")
    search_run = runs[search.key]
    expected = {cv.TAG_RUN_KIND: cv.RUN_KIND_STRUCTURED, cv.TAG_SUBNETWORK: "search", cv.TAG_TASK: "sst2",
                cv.TAG_SEED: "0", cv.TAG_METHOD: "gradient-importance", cv.TAG_MODEL: "tiny-random-bert"}
    assert {k: search_run.data.tags.get(k) for k in expected} == expected
    assert search_run.data.params["threshold"] == "0.5" and search_run.info.status == "FINISHED"
    found = search_run.data.metrics
    assert found["sparsity"] == 0.0 and found["full_metric"] == found["accuracy"]
    assert 0 <= found["good_heads_kept"] < found["good_heads_total"] == 8 and 0 < found["good_sparsity"] <= 1
    good_mask = Mask.load(client.download_artifacts(search_run.info.run_id, cv.mask_artifact_path(0), str(tmp_path)))
    assert good_mask.metadata["kind"] == "structured"
    assert int(good_mask.metadata["heads_kept"]) == found["good_heads_kept"]
    assert "importance.json" in {f.path for f in client.list_artifacts(search_run.info.run_id)}
    for kind in ("good", "bad"):
        piece = next(p for p in result.pieces if p.kind == f"structured-{kind}")
        run = runs[piece.key]
        assert run.data.tags[cv.TAG_PARENT_RUN] == search_run.info.run_id and run.data.tags[cv.TAG_SUBNETWORK] == kind
        assert run.data.metrics["heads_kept"] == found["good_heads_kept"]
        assert run.data.metrics["mlps_kept"] == found["good_mlps_kept"]
        assert run.data.metrics["sparsity"] == pytest.approx(found["good_sparsity"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [0]
    again = run_sweep(spec, uri, Console(quiet=True))
    assert again.ok and again.trials == 0 and again.levels_trained == 0
    assert len(all_runs(client, "structured")) == 3 + 1
    write_report(client, "structured", str(tmp_path / "report"))
    table = pd.read_csv(tmp_path / "report" / "structured.csv")
    assert list(table["subnetwork"]) == [FULL_MODEL, BEFORE_RETRAINING, "good", "bad"]
    assert (table["n"] == 1).all() and not table["partial"].any()
    assert list(table["heads_kept"]) == [8, *[found["good_heads_kept"]] * 3]
    assert table["mean"].iloc[0] == pytest.approx(found["accuracy"])
    assert "Structured subnetworks" in (tmp_path / "report" / "report.md").read_text()
