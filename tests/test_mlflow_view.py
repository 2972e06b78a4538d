"""The MLflow UI view of a sweep (cluster/mlflow_view.py) on a real SQLite store written by the sweep's own writer
from recorded levels (the series layout)."""

import json
from urllib.parse import parse_qs, urlparse

import pytest

from cluster import conventions as cv
from cluster import mlflow_view
from recorded_sweep import level_values, record, spec_text, sqlite_store

ACCURACY = {"imp": [0.91, 0.90, 0.89], "random-prune": [0.91, 0.86, 0.80]}


def _accuracy(piece, level):
    series = "imp" if piece.is_trajectory else "random-prune"
    values = ACCURACY[series] if piece.recipe.task == "sst2" else [0.66, 0.65, 0.63]
    return level_values("accuracy", values[level] - 0.01 * piece.recipe.seed, level)


def record_sweep(root, uri, tasks=("sst2",)):
    """The sweep 'view-test' (imp and random pruning of each task, 2 seeds, levels 0-2, its sweep run), recorded."""
    return record(root, spec_text("view-test", str(root / "storage"), tasks=tasks, seeds=(0, 1), levels=2,
                                  branches="{kind: random-prune}" if tasks == ("sst2",) else ""), uri, _accuracy)


@pytest.fixture
def store(tmp_path):
    """A sweep's experiment in the series layout: imp and random-prune on sst2, 2 seeds, levels 0-2, a sweep run."""
    uri = sqlite_store(tmp_path)
    recorded = record_sweep(tmp_path, uri)
    return uri, recorded.client, recorded.experiment_id, tmp_path


def view_tags(client, experiment_id):
    return {key: value for key, value in client.get_experiment(experiment_id).tags.items()
            if key.startswith(mlflow_view.SHARE_TAG_PREFIX)}


def test_the_view_groups_runs_by_series_and_charts_the_main_metric_against_sparsity(store):
    uri, client, experiment_id, _ = store
    url = mlflow_view.comparison_url(client, uri, experiment_id, ui_url="http://127.0.0.1:5077")

    (tag, value), = view_tags(client, experiment_id).items()
    envelope = json.loads(value)
    assert envelope["name"] == mlflow_view.VIEW_NAME and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "tag", "groupByData": "series"}]}
    assert state["useGroupedValuesInCharts"] is True
    chart, = state["compareRunCharts"]
    assert (chart["type"], chart["metricKey"]) == ("LINE", "accuracy")
    assert (chart["xAxisKey"], chart["selectedXAxisMetricKey"]) == ("metric", cv.METRIC_SPARSITY)
    assert chart["range"]["yMin"] < 0.79 and chart["range"]["yMax"] > 0.91  # every logged value is in view
    assert {"tags.`series`", "tags.`task`", "tags.`seed`", "metrics.`sparsity`"} <= set(state["selectedColumns"])
    shown = client.search_runs([experiment_id], filter_string=state["searchFilter"])
    assert sorted(run.data.tags[cv.TAG_SERIES] for run in shown) == ["imp", "imp", "random-prune", "random-prune"]

    parsed = urlparse(url)
    key = tag[len(mlflow_view.SHARE_TAG_PREFIX):]
    assert f"{parsed.scheme}://{parsed.netloc}" == "http://127.0.0.1:5077"
    route, query = parsed.fragment.split("?")
    assert route == f"/experiments/{experiment_id}/runs"
    assert parse_qs(query) == {"viewStateShareKey": [key], "compareRunsMode": ["CHART"]}


def test_the_same_runs_give_the_same_key_and_write_nothing_new(store):
    uri, client, experiment_id, _ = store
    first = mlflow_view.comparison_url(client, uri, experiment_id)
    tags = view_tags(client, experiment_id)
    assert mlflow_view.comparison_url(client, uri, experiment_id) == first
    assert view_tags(client, experiment_id) == tags


def test_a_new_task_groups_by_task_too_and_replaces_only_this_view(store):
    uri, client, experiment_id, root = store
    mlflow_view.comparison_url(client, uri, experiment_id)
    old = set(view_tags(client, experiment_id))
    user_view = mlflow_view.SHARE_TAG_PREFIX + "mine"
    client.set_experiment_tag(experiment_id, user_view, json.dumps({"name": "my view", "createdAt": 1, "state": "{}"}))
    record_sweep(root, uri, tasks=("sst2", "rte"))  # the sweep grown by a task

    url = mlflow_view.comparison_url(client, uri, experiment_id)

    tags = view_tags(client, experiment_id)
    assert user_view in tags and not old & set(tags)
    (new_tag,) = set(tags) - {user_view}
    assert url.split("viewStateShareKey=")[1].startswith(new_tag[len(mlflow_view.SHARE_TAG_PREFIX):])
    state = json.loads(json.loads(tags[new_tag])["state"])
    assert [key["groupByData"] for key in state["groupBy"]["groupByKeys"]] == [cv.TAG_SERIES, cv.TAG_TASK]


def test_a_tracking_server_serves_its_own_ui():
    assert mlflow_view.ui_base_url("http://10.0.0.5:5000/", "http://127.0.0.1:5077") == "http://10.0.0.5:5000"
    assert mlflow_view.ui_base_url("sqlite:////tmp/mlruns.db") == mlflow_view.DEFAULT_UI_URL
