"""MLflow traffic at scale: a slow tracking store never holds up Tune's event loop, and the requests per logged level
are a constant (a trained level is logged without reading the run's history, and the driver never reads it again)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from cluster import conventions as cv
from recorded_sweep import level_values, record, spec_text, sqlite_store
from sweeps.mlflow_runs import TrialRecorder
from sweeps.scheduler import PieceScheduler
from sweeps.series import series_key
from tickets.usage import Usage

pytest.importorskip("mlflow")

LEVELS = 3


class CountingClient:
    """An MlflowClient whose calls are counted and, while `gate` is clear, held (a tracking server that hangs)."""

    def __init__(self, client):
        self._client = client
        self.calls: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            assert self.gate.wait(60), "the test never opened the gate"
            self.calls[name] += 1
            return method(*args, **kwargs)

        return call


def _values(piece, level):
    return level_values("accuracy", 0.9 - 0.1 * level, level, mask_sparsity=0.2 * level)


def _sweep(tmp_path, name: str, values=_values):
    uri = sqlite_store(tmp_path)
    recorded = record(tmp_path, spec_text(name, str(tmp_path / "storage"), seeds=(0,), levels=LEVELS), uri, values,
                      sweep=False)
    return uri, recorded


def test_a_hanging_tracking_store_never_holds_up_the_searcher_or_tunes_callbacks(tmp_path):
    _, recorded = _sweep(tmp_path, "hang", values=lambda piece, level: None)
    runs = recorded.runs
    client = runs.client = CountingClient(runs.client)
    (piece,) = recorded.plan
    scheduler = PieceScheduler(recorded.plan, set(), lambda p: {"run_id": runs.open(p)}, prepare=runs.prepare)
    client.gate.clear()  # every MLflow call now hangs until the gate opens
    assert scheduler.suggest("t1") is None  # the trajectory is ready, its run is being created in the background
    assert scheduler.suggest("t1") is None
    runs.started(piece)
    runs.close(piece, failed=False)
    assert sum(client.calls.values()) == 0  # all of the above returned while MLflow hung
    client.gate.set()
    runs.wait()
    config = scheduler.suggest("t1")
    assert config["run_id"] == runs.run_ids[series_key(piece)]  # suggested once its run exists
    assert client.calls["create_run"] == 1
    run = recorded.client.get_run(config["run_id"])
    assert run.info.status == "SCHEDULED"  # created, then the trial's end: in the order they were called


def test_a_trained_level_costs_the_same_requests_at_every_level_and_no_history_read(tmp_path):
    uri, recorded = _sweep(tmp_path, "constant")  # the levels on disk, as trials leave them, and logged
    (piece,) = recorded.plan
    run_id = recorded.client.create_run(recorded.experiment_id).info.run_id  # a fresh run for a trial to log to
    recorder = TrialRecorder(uri, run_id)
    recorder.client = CountingClient(recorder.client)
    per_level = []
    for level in piece.levels:
        before = sum(recorder.client.calls.values())
        assert recorder.level(piece, level, recorded.store.result_dir(piece, level),
                              Usage("cpu", "fp32", 64, 1.0, None), trained=True)
        per_level.append(sum(recorder.client.calls.values()) - before)
    assert len(set(per_level)) == 1 and per_level[0] <= 4, per_level  # 2 artifacts, metrics+tags, sparsity
    assert recorder.client.calls["get_metric_history"] == 0
    history = recorded.client.get_metric_history(run_id, cv.METRIC_SPARSITY)
    assert sorted(m.step for m in history) == list(piece.levels)
    assert recorded.client.get_run(run_id).data.tags[cv.TAG_DEVICE] == "cpu"
    assert recorder.level(piece, 1, recorded.store.result_dir(piece, 1), None, trained=False)  # a reused level
    assert len(recorded.client.get_metric_history(run_id, cv.METRIC_SPARSITY)) == LEVELS + 1  # checked, not again

    runs = recorded.runs
    driver = runs.client = CountingClient(runs.client)
    for level in piece.levels:
        runs.logged(piece.key, level)  # what the trial's reports said
    runs.close(piece, failed=False)
    runs.reconcile(ended=True)
    assert driver.calls["get_metric_history"] == 0  # never re-read at the trial's end or the sweep's
