"""The MLflow UI view that answers "IMP vs each baseline at each sparsity, over seeds" as the page opens.

MLflow's UI (3.x) keeps a saved view as an experiment tag `mlflow.sharedViewState.<key>` and opens it with the URL
parameter `viewStateShareKey=<key>`; the same views are listed in the runs page's saved-views menu. This module writes
such a view for a sweep's experiment (layout 2 of `conventions`: one run per series, levels as steps): runs grouped
by their `series` tag (and by task, rewind point or IMP method where the experiment has several), the charts showing
each group's mean over seeds with its min-max band, one line chart per main metric against `sparsity`, and a runs
table with series, task, seed, sparsity and the main metrics. The URL adds `compareRunsMode=CHART` so the charts are
what the page shows first.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from urllib.parse import parse_qs, urlencode, urlparse

from . import conventions as cv
from . import tracking

SHARE_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow UI: experiment tag of a saved (shared) view
SHARE_URL_PARAM = "viewStateShareKey"
CHART_MODE_PARAM = "compareRunsMode"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
VIEW_NAME = "IMP vs baselines by sparsity"
SECTION_NAME = "IMP vs baselines: mean over seeds, min-max band"
SERIES_FILTER = f"tags.{cv.TAG_RUN_KIND} != '{cv.RUN_KIND_SWEEP}'"
SPLIT_TAGS = (cv.TAG_TASK, cv.TAG_REWIND_POINT, cv.TAG_IMP_METHOD)  # grouped by too where they take several values
KEY_LENGTH = 16


def comparison_url(client, tracking_uri: str, experiment_id: str, main_metrics: Iterable[str] | None = None,
                   ui_url: str = DEFAULT_UI_URL) -> str:
    """The URL that opens experiment `experiment_id` in the MLflow UI on the IMP-vs-baselines view, written as a
    saved view of the experiment (the same runs and metrics give the same key and write nothing new; an earlier
    version of this view is replaced). `main_metrics`: the metrics charted against sparsity, by default every
    `main_metric` tag of the series runs; each chart's y axis spans the values logged (MLflow's min-max band
    would otherwise stretch it down to 0). `ui_url`: where `mlflow ui` serves a file or SQLite store; a tracking
    server's own address is used for an http(s) `tracking_uri`."""
    runs = series_runs(client, experiment_id)
    metrics = list(main_metrics) if main_metrics is not None else sorted(
        {run.data.tags[cv.TAG_MAIN_METRIC] for run in runs if cv.TAG_MAIN_METRIC in run.data.tags})
    ranges = {metric: value_range(client, runs, metric) for metric in metrics}
    state = view_state(metrics, group_tags(runs), ranges)
    key = save_view(client, experiment_id, state)
    return view_url(ui_base_url(tracking_uri, ui_url), experiment_id, key)


def series_runs(client, experiment_id: str) -> list:
    """The active runs of the experiment other than its sweep run."""
    return list(tracking.paged(client.search_runs, [experiment_id], filter_string=SERIES_FILTER))


def group_tags(runs: list) -> list[str]:
    """The tags runs are grouped by so that a group differs from another in the series alone, seeds aggregated:
    `series`, then each of task, rewind point and IMP method that takes more than one value among `runs` (runs
    without the tag, such as structured ones without a rewind point, add no value)."""
    split = [tag for tag in SPLIT_TAGS if len({run.data.tags[tag] for run in runs if tag in run.data.tags}) > 1]
    return [cv.TAG_SERIES, *split]


def value_range(client, runs: list, metric: str) -> tuple[float, float] | None:
    """The lowest and highest value of `metric` logged by `runs`, widened by 5% of their span (at least 0.005) on
    each side; None when none logged it."""
    ids = [run.info.run_id for run in runs if metric in run.data.metrics]
    values = [point["value"] for point in tracking.MetricHistoryReader(client)(ids, metric)] if ids else []
    if not values:
        return None
    low, high = min(values), max(values)
    margin = max(0.05 * (high - low), 0.005)
    return round(low - margin, 4), round(high + margin, 4)


def view_state(main_metrics: list[str], grouped_by: list[str],
               ranges: dict[str, tuple[float, float] | None] | None = None) -> dict:
    """The MLflow UI view state (search facets and UI state, as the UI's share-view feature serialises them):
    runs grouped by the tags `grouped_by`, one chart per main metric against sparsity (y axis over `ranges[metric]`
    where given; the UI adds charts of the other metrics against step = level below, in its own sections)."""
    section = _section_uuid(SECTION_NAME)
    charts = [_sparsity_chart(metric, section, (ranges or {}).get(metric)) for metric in main_metrics]
    columns = [_column("tags", tag) for tag in (cv.TAG_SERIES, cv.TAG_TASK, cv.TAG_SEED, cv.TAG_REWIND_POINT)]
    columns += [_column("metrics", metric) for metric in (cv.METRIC_SPARSITY, *main_metrics)]
    return {
        "searchFilter": SERIES_FILTER,
        "orderByKey": _column("tags", cv.TAG_SERIES),
        "orderByAsc": True,
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": tag} for tag in grouped_by]},
        "useGroupedValuesInCharts": True,
        "compareRunCharts": charts,
        "compareRunSections": [{**_section(SECTION_NAME), "columns": min(len(charts), 2) or 1, "cardHeight": 480},
                               _section("Model metrics"), _section("System metrics")],
    }


def save_view(client, experiment_id: str, state: dict) -> str:
    """Write `state` as the experiment's saved view VIEW_NAME (once: the key is a hash of the state) and delete an
    earlier, different version of it. Returns the key."""
    serialized = json.dumps(state, sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(serialized.encode()).hexdigest()[:KEY_LENGTH]
    tags = client.get_experiment(experiment_id).tags
    if SHARE_TAG_PREFIX + key not in tags:
        now = int(time.time() * 1000)
        envelope = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": serialized}
        client.set_experiment_tag(experiment_id, SHARE_TAG_PREFIX + key, json.dumps(envelope))
    for tag, value in tags.items():
        if tag.startswith(SHARE_TAG_PREFIX) and tag != SHARE_TAG_PREFIX + key and _view_name(value) == VIEW_NAME:
            client.delete_experiment_tag(experiment_id, tag)
    return key


def opened_state(client, experiment_id: str, url: str) -> dict:
    """The view state that `url` (a view_url of the experiment) opens."""
    key = parse_qs(urlparse(url).fragment.partition("?")[2])[SHARE_URL_PARAM][0]
    envelope = json.loads(client.get_experiment(experiment_id).tags[SHARE_TAG_PREFIX + key])
    return json.loads(envelope["state"])


def ui_base_url(tracking_uri: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """Where the MLflow UI of `tracking_uri` is served: the server itself, or `ui_url` for a file or SQLite store."""
    return (tracking_uri if tracking.is_server(tracking_uri) else ui_url).rstrip("/")


def runs_url(base_url: str, experiment_id: str) -> str:
    """The URL of the experiment's runs table in the MLflow UI at `base_url`."""
    return f"{base_url}/#/experiments/{experiment_id}/runs"


def view_url(base_url: str, experiment_id: str, key: str) -> str:
    """The URL of the experiment's saved view `key`, opened on its charts."""
    query = urlencode({SHARE_URL_PARAM: key, CHART_MODE_PARAM: "CHART"})
    return f"{runs_url(base_url, experiment_id)}?{query}"


def _sparsity_chart(metric: str, section: str, y_range: tuple[float, float] | None) -> dict:
    chart = {
        "uuid": f"bert-tickets-{metric}-by-sparsity", "type": "LINE", "metricSectionId": section,
        "isGenerated": False, "deleted": False,
        "metricKey": metric, "selectedMetricKeys": [metric],
        "xAxisKey": "metric", "selectedXAxisMetricKey": cv.METRIC_SPARSITY, "useGlobalXaxisKey": False,
        "lineSmoothness": 0, "useGlobalLineSmoothing": False, "displayPoints": True,
        "scaleType": "linear", "xAxisScaleType": "linear", "yAxisKey": "metric", "yAxisExpressions": [],
        "ignoreOutliers": False,
    }
    if y_range:
        chart["range"] = {"yMin": y_range[0], "yMax": y_range[1]}
    return chart


def _section(name: str) -> dict:
    return {"uuid": _section_uuid(name), "name": name, "display": True, "isReordered": False, "deleted": False,
            "isGenerated": name != SECTION_NAME}


def _section_uuid(name: str) -> str:
    return "bert-tickets-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def _view_name(tag_value: str) -> str | None:
    try:
        envelope = json.loads(tag_value)
    except ValueError:
        return None
    return envelope.get("name") if isinstance(envelope, dict) else None
