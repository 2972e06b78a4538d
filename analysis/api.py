"""The results of a sweep as Python tables: one tidy table of every point, and the report's statistics computed on it.

    import analysis
    points = analysis.load("quickstart")   # one row per series x task x seed x level, every metric, run ids, status
    analysis.summary(points)               # the report's summary.csv: n, mean, std, min, median, max over seeds
    analysis.matching(points)              # matching.csv; analysis.paired(points): paired.csv

`python -m analysis report` is built on these functions, so a notebook and the report give the same numbers.
"""

from __future__ import annotations

import pandas as pd

from cluster.tracking import resolve_tracking_uri

from .collect import SERIES, STATUS_ORDER, Collected, collect, main_metrics_of, open_client
from .matching import find_matching
from .paired import paired_seeds, paired_table
from .stats import KEY, metric_columns, planned_seeds, summarise

POINT = [*SERIES, "seed", "level", "sparsity"]
RUN_INFO = ["run_id", "run_name", "status", "problem", "main_metric"]
MARKS = ["logged", "partial"]


def load(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Every point of an experiment as one tidy table: one row per series (task, model, schedule, method, branch,
    source task, rewind point) x seed x level.

    Columns: the series columns, `seed`, `level`, `sparsity` (the schedule's), one column per metric logged (the
    task's metrics, `eval_loss`, `train_loss`, ...), then `run_id`, `run_name`, `status` (MLflow's: FINISHED,
    RUNNING, SCHEDULED, FAILED, KILLED), `problem` ('' for a complete run, else why not: 'running', 'failed',
    'incomplete: ...'), `main_metric` (the task's, as the run tagged it), and two marks for a sweep still running:
    `logged` (False for a level a run plans but has not logged yet: its metrics are empty) and `partial` (True for
    every row of a run that is not complete). Where runs of a series and seed hold different results (content keys),
    only the run started last is read, even where it failed or is still running (an older result never fills its
    levels); where runs of the same result hold the same point, the finished one (else the newest) is kept. The
    report does the same.

    `tracking_uri`: an MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the current
    folder). Raises analysis.errors.AnalysisError with one line when the store or the experiment does not exist.
    """
    client = open_client(resolve_tracking_uri(tracking_uri))
    return tidy_points(collect(client, experiment))


def tidy_points(collected: Collected) -> pd.DataFrame:
    """The tidy table `load` returns, from an experiment already collected."""
    runs = collected.runs
    table = collected.table()
    metrics = metric_columns(table)
    info = runs[RUN_INFO]
    logged = table[POINT + metrics + ["run_id"]].merge(info, on="run_id", how="left").assign(logged=True)
    pending = _pending(collected, table).merge(info, on="run_id", how="left").assign(logged=False)
    frame = pd.concat([logged, pending], ignore_index=True) if len(pending) else logged
    frame["partial"] = frame["problem"].fillna("") != ""
    frame["logged"] = frame["logged"].astype(bool)
    frame = frame[POINT + metrics + RUN_INFO + MARKS].sort_values(SERIES + ["seed", "level"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame.attrs.update(experiment=collected.experiment, experiment_id=collected.experiment_id,
                       tracking_uri=collected.tracking_uri)
    return frame


def _pending(collected: Collected, table: pd.DataFrame) -> pd.DataFrame:
    """(series, seed, level, run_id) of the levels runs plan that no run has logged, one planning run each (the
    finished one, else the newest)."""
    planned = planned_seeds(collected.runs)
    if planned.empty:
        return pd.DataFrame(columns=[*KEY, "seed", "run_id"])
    done = table[KEY + ["seed"]].drop_duplicates().assign(_done=True)
    pending = planned.merge(done, on=KEY + ["seed"], how="left")
    pending = pending[pending["_done"].isna()].drop(columns="_done")
    order = collected.runs.set_index("run_id")
    pending = pending.assign(_order=pending["run_id"].map(order["status"]).map(STATUS_ORDER),
                             _start=pending["run_id"].map(order["start_time"]))
    pending = pending.sort_values(["_order", "_start"], ascending=[True, False], kind="stable")
    return pending.drop_duplicates(KEY + ["seed"]).drop(columns=["_order", "_start"]).assign(sparsity=float("nan"))


def table_of(points: pd.DataFrame) -> pd.DataFrame:
    """The logged rows of a tidy table in the shape the statistics read (series, seed, level, sparsity, metrics,
    run_id, status)."""
    logged = points[points["logged"]] if "logged" in points else points
    metrics = [c for c in logged.columns if c not in POINT + RUN_INFO + MARKS]
    return logged[POINT + metrics + ["run_id", "status"]].reset_index(drop=True)


def planned_of(points: pd.DataFrame) -> pd.DataFrame:
    """(series, level, seed) of every row of a tidy table, logged or planned."""
    return points[KEY + ["seed"]].drop_duplicates().reset_index(drop=True)


def main_metrics(points: pd.DataFrame) -> dict[str, str]:
    """Task -> its main metric (the most common `main_metric` of its rows, else the task's standard one)."""
    return main_metrics_of(points)


def summary(points: pd.DataFrame) -> pd.DataFrame:
    """The report's summary.csv: one row per series and level with the mean sparsity, `n` seeds, `seeds_expected`
    (planned or seen in the series), `partial` (n < seeds_expected) and {metric}_{n,mean,std,min,median,max} over
    seeds (sample std, ddof=1) for every metric."""
    return summarise(table_of(points), planned_of(points))


def matching(points: pd.DataFrame) -> pd.DataFrame:
    """The report's matching.csv: per series and task metric, the sparsest matching level (mean over seeds >= dense
    mean - dense std) and strictly matching level (>= dense mean), with the dense reference, and the sparsest level
    at which every seed's ticket matches its own dense run (per-seed rule)."""
    return find_matching(summary(points), table_of(points), main_metrics(points))


def paired(points: pd.DataFrame) -> pd.DataFrame:
    """The report's paired.csv: per task, pruned level and baseline, IMP minus the baseline over the seeds both have
    (mean, std, paired-t 95% interval and p-value), the dense reference, and each arm's verdicts."""
    table = table_of(points)
    return paired_table(table, main_metrics(points), paired_seeds(table, main_metrics(points)))


def paired_by_seed(points: pd.DataFrame) -> pd.DataFrame:
    """The report's paired_seeds.csv: the per-seed rows behind `paired`, with both runs' ids."""
    return paired_seeds(table_of(points), main_metrics(points))
