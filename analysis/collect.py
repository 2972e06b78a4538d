"""MLflow -> pandas: an experiment's runs (tags, status, completeness) and their per-level metrics.

Runs are read page by page with `search_runs`; metric histories are read in bulk, one request per metric key and
chunk of runs (SQL stores: `get_metric_history_bulk`; tracking servers: the `get-history-bulk` REST endpoint), and
only where neither exists one request per run and key. A level of a run counts once its `sparsity` is logged at that
step (the writer logs it last, as the level's commit marker); values of a level without it are still being written.

Within an experiment, a series and seed whose runs hold different results (content keys) is read from its current
run only, the one started last: an older result never fills a level the current run failed or has not reached yet.
Runs of the current content key (the same result logged again) are merged, finished runs first, then the newest.

Series are told apart by the rewind point as the spec wrote it (tag `rewind_point`: '5%', not the steps it resolved
to on each task), so that a transfer run lines up with its target task's trajectories.

Only the tracking layout the sweep writes today is read (layout 2: one run per series, its levels as steps); the
sweep refuses to write into an experiment of the older one-run-per-branch-level layout, and this reader does not read
one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pandas as pd

from cluster import conventions as C
from cluster.tracking import (BULK_MAX_POINTS, PAGE_SIZE, MetricHistoryReader, experiment_names, health_status,
                              is_server, search_all_runs, store_failure, unreachable_server)

from .errors import AnalysisError
from .tasks import task_metrics

BULK_RUNS = 100

IMP = "imp"
TRANSFER = "transfer"
SERIES = ["task", "model", "schedule", "method", "branch", "source_task", "rewind_point", "rewind"]
STATUS_ORDER = {"FINISHED": 0, "RUNNING": 1, "SCHEDULED": 2, "FAILED": 3, "KILLED": 4}
# the series and seed whose runs must hold one result: the series by the spec's rewind point, not the steps it resolved
# to (a trajectory learns those at level 0, and another recipe may resolve them otherwise)
RESULT_CELL = [column for column in SERIES if column != "rewind"] + ["seed"]

_TAGS = {
    "run_kind": C.TAG_RUN_KIND, "task": C.TAG_TASK, "seed": C.TAG_SEED, "method": C.TAG_METHOD,
    "rewind": C.TAG_REWIND, "schedule": C.TAG_SCHEDULE, "model": C.TAG_MODEL, "content_key": C.TAG_CONTENT_KEY,
    "branch_kind": C.TAG_BRANCH_KIND, "source_task": C.TAG_SOURCE_TASK, "source_level": C.TAG_SOURCE_LEVEL,
    "prunable_set": C.TAG_PRUNABLE_SET, "main_metric": C.TAG_MAIN_METRIC, "levels_planned": C.TAG_LEVELS_PLANNED,
    "rewind_point": C.TAG_REWIND_POINT, "subnetwork": C.TAG_SUBNETWORK,
    "reinit_scope": C.TAG_REINIT_SCOPE, "not_comparable": C.TAG_NOT_COMPARABLE, "series": C.TAG_SERIES,
    "imp_method": C.TAG_IMP_METHOD, "levels": C.TAG_LEVELS, "versions": C.TAG_VERSIONS,
}
_INT_TAGS = ("seed", "rewind", "source_level", "levels_planned")


@dataclass
class Collected:
    """One experiment's runs and metrics.

    `runs`: one row per run (run_id, run_name, status, tags as columns, branch ('imp' for trajectories, else the
    branch kind, with its reinit scope for random re-initialisation: 'random-reinit:prunable'), rewind_point (the
    spec's point), last_level (last committed level), last_logged, and
    `problem`: '' for a complete run, else 'running', 'failed', 'killed', 'scheduled', 'no metrics: ...' or
    'incomplete: ...');
    `points`: one row per (run_id, level) with `sparsity` and one column per other metric;
    `structured`: one row per structured run (search or retrained subnetwork) with its tags and step-0 metrics;
    `ignored`: runs whose run_kind is none of trajectory, branch, structured;
    `superseded`: trajectory and branch runs of an older result of their series and seed (`superseded_runs`), with
    the columns of `runs`; they are in neither `runs` nor `points`.
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    points: pd.DataFrame
    structured: pd.DataFrame = field(default_factory=pd.DataFrame)
    ignored: pd.DataFrame = field(default_factory=pd.DataFrame)
    superseded: pd.DataFrame = field(default_factory=pd.DataFrame)

    def table(self) -> pd.DataFrame:
        """Per-level values joined with run tags; one row per (series, seed, level) from the current result's runs,
        preferring finished ones, then the newest."""
        keep = ["run_id", "seed", "status", "start_time", *SERIES]
        merged = self.points.merge(self.runs[keep], on="run_id", how="inner")
        merged["_order"] = merged["status"].map(STATUS_ORDER).fillna(len(STATUS_ORDER))
        merged = merged.sort_values(["_order", "start_time"], ascending=[True, False], kind="stable")
        merged = merged.drop_duplicates(SERIES + ["seed", "level"]).drop(columns=["_order"])
        return merged.sort_values(SERIES + ["seed", "level"], kind="stable").reset_index(drop=True)

    def main_metrics(self) -> dict[str, str]:
        """Task -> its main metric: the most common `main_metric` tag of the task's runs, else the standard one."""
        return main_metrics_of(self.runs)

    def problem_counts(self) -> str:
        """E.g. '1 failed, 2 running' over the runs that are not complete ('' when all are)."""
        kinds = self.runs.loc[self.runs["problem"] != "", "problem"].str.split(":").str[0].value_counts()
        return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))

    def duplicates(self) -> int:
        """How many (series, seed, level) values were dropped because another run of the same result had the cell."""
        merged = self.points.merge(self.runs[["run_id", "seed", *SERIES]], on="run_id")
        return int(merged.duplicated(SERIES + ["seed", "level"]).sum())

    def mixed_versions(self) -> pd.DataFrame:
        """The (series, level) cells whose seeds' runs ran on different library versions (tag `library_versions`;
        runs without it are unknown and differ from none), with `versions`: the distinct tags, sorted."""
        columns = [*SERIES, "level", "versions"]
        table = self.table()[[*SERIES, "level", "run_id"]].merge(self.runs[["run_id", "versions"]], on="run_id")
        tagged = table[table["versions"].fillna("") != ""]
        cells = tagged.groupby([*SERIES, "level"], dropna=False)["versions"].agg(lambda v: sorted(set(v)))
        cells = cells[cells.map(len) > 1]
        return cells.reset_index()[columns] if len(cells) else pd.DataFrame(columns=columns)


def main_metrics_of(frame: pd.DataFrame) -> dict[str, str]:
    """Task -> its main metric: the most common non-empty `main_metric` of the task's rows, else the standard one."""
    out = {}
    for task, rows in frame.groupby("task"):
        tagged = rows.loc[rows["main_metric"].fillna("") != "", "main_metric"]
        out[task] = tagged.mode().iloc[0] if len(tagged) else (task_metrics(task) or ("",))[0]
    return out


def rows_where(frame: pd.DataFrame, values: dict) -> pd.Series:
    """Boolean mask of the rows of `frame` whose columns equal `values` (a missing value equals a missing value)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in values.items():
        mask &= frame[column].isna() if pd.isna(value) else (frame[column] == value).fillna(False).astype(bool)
    return mask


def open_client(uri: str):
    """An MlflowClient for `uri`, after checking that the store exists and answers (one-line AnalysisError if not)."""
    from mlflow import MlflowClient

    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and uri not in ("sqlite://", "sqlite:///:memory:"):
        path = uri[len("sqlite:///"):]
        if os.path.isdir(path):
            raise AnalysisError(f"tracking store '{uri}' is a folder, not an SQLite file")
        if not os.path.isfile(path):
            raise AnalysisError(f"tracking store '{uri}' does not exist (no file {os.path.abspath(path)}); "
                                "pass --tracking-uri or set MLFLOW_TRACKING_URI")
    elif is_server(uri):
        _check_reachable(uri)
    elif parsed.scheme in ("", "file") and not os.path.isdir(parsed.path):
        raise AnalysisError(f"tracking store '{uri}' does not exist (no folder {os.path.abspath(parsed.path)})")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow or its database driver: either is one line for the user
        raise AnalysisError(f"cannot read the tracking store '{uri}': {store_failure(uri, exc)}") from None
    return client


def _check_reachable(uri: str) -> None:
    import requests

    try:
        health_status(uri)
    except requests.RequestException as exc:
        raise AnalysisError(unreachable_server(uri, exc)) from None


def find_experiment(client, name: str):
    """The active experiment called `name`, or an AnalysisError listing the experiments that exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        existing = ", ".join(experiment_names(client, PAGE_SIZE)) or "(none)"
        raise AnalysisError(f"experiment '{name}' does not exist in {client.tracking_uri}; "
                            f"existing experiments: {existing}")
    return experiment


def fetch_histories(client, runs: list) -> pd.DataFrame:
    """Every per-level value (run_id, key, step, value, timestamp) of the runs, read in bulk per metric key (not the
    `level` metric, which repeats the step, nor mask-distance curves, whose steps are training steps)."""
    ids_by_key: dict[str, list[str]] = {}
    for run in runs:
        for key in run.data.metrics:
            if key != C.METRIC_LEVEL and not key.startswith(C.METRIC_MASK_DISTANCE_PREFIX):
                ids_by_key.setdefault(key, []).append(run.info.run_id)
    read = MetricHistoryReader(client, BULK_MAX_POINTS)
    rows = []
    for key, ids in sorted(ids_by_key.items()):
        for start in range(0, len(ids), BULK_RUNS):
            rows.extend(read(ids[start:start + BULK_RUNS], key))
    columns = ["run_id", "key", "step", "value", "timestamp"]
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per run: id, name, status, times and the convention tags (ints parsed)."""
    rows = []
    for run in runs:
        tags = run.data.tags
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name or "", "status": run.info.status,
               "start_time": run.info.start_time, "end_time": run.info.end_time}
        row.update({column: tags.get(tag, "") for column, tag in _TAGS.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["run_id", "run_name", "status", "start_time", "end_time", *_TAGS])
    has_imp_method = frame["imp_method"] != ""  # a baseline series compares with the IMP of its trajectory's method
    frame.loc[has_imp_method, "method"] = frame.loc[has_imp_method, "imp_method"]
    for column in _INT_TAGS:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        frame[column] = numbers.where(numbers == numbers.round()).astype("Int64")
    is_branch = frame["run_kind"] == C.RUN_KIND_BRANCH
    frame["branch"] = frame["branch_kind"].where(is_branch, IMP)
    frame.loc[is_branch & (frame["branch"] == ""), "branch"] = "unknown-branch"
    scoped = is_branch & (frame["reinit_scope"] != "")
    frame.loc[scoped, "branch"] = frame.loc[scoped, "branch"] + ":" + frame.loc[scoped, "reinit_scope"]
    frame.loc[frame["branch"] != TRANSFER, "source_task"] = ""
    frame["rewind_point"] = frame["rewind_point"].where(frame["rewind_point"] != "",
                                                        frame["rewind"].astype("string").fillna(""))
    return frame


def points_frame(history: pd.DataFrame) -> pd.DataFrame:
    """History -> one row per committed (run_id, level), i.e. with `sparsity`, and one column per metric (the latest
    value logged at that step)."""
    if history.empty:
        return pd.DataFrame(columns=["run_id", "level", C.METRIC_SPARSITY])
    latest = history.sort_values("timestamp", kind="stable").drop_duplicates(["run_id", "key", "step"], keep="last")
    wide = latest.pivot(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide = wide.rename(columns={"step": "level"})
    wide.columns.name = None
    if C.METRIC_SPARSITY not in wide:
        wide[C.METRIC_SPARSITY] = float("nan")
    wide = wide[wide[C.METRIC_SPARSITY].notna()].reset_index(drop=True)
    wide["level"] = wide["level"].astype(int)
    return wide


def superseded_runs(runs: pd.DataFrame) -> pd.Series:
    """Boolean mask of the runs holding an older result of their series and seed: a content key other than that of
    the series and seed's most recently started run."""
    newest = runs.sort_values("start_time", kind="stable")
    current = newest.groupby(RESULT_CELL, dropna=False, sort=False)["content_key"].transform("last")
    return runs["content_key"] != current.reindex(runs.index)


def _problems(runs: pd.DataFrame, history: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Add last_level, last_logged and `problem` (empty when the run is finished and has every planned level)."""
    last_level = points.groupby("run_id")["level"].max().rename("last_level")
    last_logged = history.groupby("run_id")["timestamp"].max().rename("last_logged")
    runs = runs.merge(last_level, left_on="run_id", right_index=True, how="left")
    runs = runs.merge(last_logged, left_on="run_id", right_index=True, how="left")
    runs["last_level"] = runs["last_level"].astype("Int64")
    logged = points.groupby("run_id")["level"].agg(lambda levels: {int(level) for level in levels}).to_dict()
    problems = []
    for _, run in runs.iterrows():
        planned = run["levels_planned"]
        if run["status"] != "FINISHED":
            problem = run["status"].lower()
        elif pd.isna(run["last_level"]):
            problem = "no metrics: finished without logging any"
        elif run["run_kind"] == C.RUN_KIND_TRAJECTORY and pd.notna(planned) and run["last_level"] < planned:
            problem = f"incomplete: finished at level {run['last_level']} of {planned} planned"
        else:
            problem = _missing_levels(run, logged.get(run["run_id"], set()))
        problems.append(problem)
    runs["problem"] = problems
    return runs


BISECTION = "ticket-bisect"  # the branch kind of a bisection over levels (tickets.bisection.KIND)


def _missing_levels(run: pd.Series, logged: set[int]) -> str:
    """'incomplete: ...' naming the levels a series run's `levels` tag plans that it has not logged, else '' (also
    for a bisection, which evaluates only the levels its search visits)."""
    if run["branch"] == BISECTION:
        return ""
    planned = {int(level) for level in str(run.get("levels") or "").split(",") if level.strip().isdigit()}
    missing = sorted(planned - logged)
    if not missing:
        return ""
    return f"incomplete: level(s) {', '.join(map(str, missing))} of {len(planned)} planned not logged"


def collect(client, name: str) -> Collected:
    """Read experiment `name` from the store behind `client` into a Collected."""
    experiment = find_experiment(client, name)
    runs = search_all_runs(client, experiment.experiment_id, PAGE_SIZE)
    frame = runs_frame(runs)
    known = frame["run_kind"].isin([C.RUN_KIND_TRAJECTORY, C.RUN_KIND_BRANCH])
    structured = frame["run_kind"] == C.RUN_KIND_STRUCTURED
    kept = [run for run, keep in zip(runs, known | structured) if keep]
    history = fetch_histories(client, kept)
    points = points_frame(history)
    structured_ids = set(frame.loc[structured, "run_id"])
    structured_points = points[points["run_id"].isin(structured_ids) & (points["level"] == 0)].drop(columns="level")
    series_runs = _problems(frame[known].reset_index(drop=True), history, points)
    old = superseded_runs(series_runs)
    dropped = structured_ids | set(series_runs.loc[old, "run_id"])
    return Collected(
        experiment=name,
        experiment_id=experiment.experiment_id,
        tracking_uri=client.tracking_uri,
        runs=series_runs[~old].reset_index(drop=True),
        points=points[~points["run_id"].isin(dropped)].reset_index(drop=True),
        structured=frame[structured].merge(structured_points, on="run_id", how="left").reset_index(drop=True),
        ignored=frame[~(known | structured)].reset_index(drop=True),
        superseded=series_runs[old].reset_index(drop=True),
    )
