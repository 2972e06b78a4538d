"""Matching subnetworks (DESIGN.md): mean over seeds >= dense mean - dense std (matching) or >= dense mean (strictly).

The dense reference of a task is level 0 of its trajectory runs with the same model and rewind point, one value per seed
(averaged where several trajectories share a seed, e.g. two pruning methods). Only pruned levels (level >= 1) are
candidates. Comparisons allow a relative float rounding of 1e-9; for metrics where lower is better the inequalities
flip (mean <= dense mean + dense std, mean <= dense mean).
"""

from __future__ import annotations

import pandas as pd

from .collect import IMP, SERIES, rows_where
from .stats import metric_columns_of, sort_series
from .tasks import higher_is_better, task_metrics

DENSE_KEY = ["task", "model", "rewind_point"]
EPS = 1e-9
NOTE_NO_DENSE = ("no dense reference: no level-0 IMP trajectory run of this task, model and rewind point, "
                 "so neither verdict can be given")
NOTE_ONE_DENSE_SEED = ("dense std undefined with n=1 seed: matching needs >= 2 dense seeds "
                       "(strictly matching uses the mean only)")


def dense_stats(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per (task, model, rewind point): {metric}_{n,mean,std} of level 0 of the trajectory runs over seeds."""
    dense = table[(table["branch"] == IMP) & (table["level"] == 0)]
    per_seed = dense.groupby(DENSE_KEY + ["seed"], dropna=False)[metrics].mean().reset_index()
    groups = per_seed.groupby(DENSE_KEY, dropna=False)
    stats = groups[metrics].agg(["count", "mean", "std"])
    stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
    return stats.reset_index()


def _at_least(values: pd.Series, bound: float, higher: bool) -> pd.Series:
    slack = EPS * max(1.0, abs(bound))
    return values >= bound - slack if higher else values <= bound + slack


def _sparsest(rows: pd.DataFrame) -> pd.Series | None:
    if rows.empty:
        return None
    return rows.sort_values(["sparsity", "level"], na_position="first").iloc[-1]


def find_matching(summary: pd.DataFrame, table: pd.DataFrame, main_metrics: dict[str, str]) -> pd.DataFrame:
    """Per series and task metric: the sparsest matching and strictly matching levels with the dense reference.

    `matching_note` says why a verdict cannot be given (no dense reference; one dense seed, so no dense std and no
    matching verdict, while the strictly matching one still is); it is empty where both verdicts are defined.
    """
    metrics = metric_columns_of(summary)
    dense = dense_stats(table, metrics) if metrics else pd.DataFrame(columns=DENSE_KEY)
    rows = []
    for key, series in summary.groupby(SERIES, dropna=False, sort=False):
        info = dict(zip(SERIES, key))
        reference = dense[rows_where(dense, {c: info[c] for c in DENSE_KEY})]
        judged = _judged_metrics(info["task"], main_metrics.get(info["task"], ""), series, metrics)
        for metric in judged:
            rows.append(_judge(info, metric, metric == judged[0], series, reference))
    columns = SERIES + ["metric", "is_main", "dense_n", "dense_mean", "dense_std", "threshold"]
    for which in ("matching", "strict"):
        columns += [f"{which}_{c}" for c in ("level", "sparsity", "n", "mean", "std")]
    columns += ["levels_evaluated", "max_sparsity_evaluated", "partial", "matching_note"]
    out = pd.DataFrame(rows, columns=columns)
    for column in ("dense_n", "matching_level", "matching_n", "strict_level", "strict_n", "levels_evaluated"):
        out[column] = out[column].astype("Int64")
    return sort_series(out, SERIES + ["metric"]) if not out.empty else out


def _judged_metrics(task: str, main: str, series: pd.DataFrame, metrics: list[str]) -> list[str]:
    has_data = [m for m in metrics if series[f"{m}_n"].fillna(0).sum() > 0]
    standard = [m for m in task_metrics(task, main) if m in has_data]
    return standard or [m for m in has_data if m != "eval_loss"]


def _judge(info: dict, metric: str, is_main: bool, series: pd.DataFrame, reference: pd.DataFrame) -> dict:
    higher = higher_is_better(metric)
    if reference.empty or pd.isna(reference.iloc[0][f"{metric}_mean"]):
        dense_n, mean, std = 0, float("nan"), float("nan")
    else:
        ref = reference.iloc[0]
        dense_n, mean, std = int(ref[f"{metric}_n"]), ref[f"{metric}_mean"], ref[f"{metric}_std"]
    threshold = mean - std if higher else mean + std
    pruned = series[(series["level"] >= 1) & (series[f"{metric}_n"] > 0)]
    row = {**info, "metric": metric, "is_main": is_main,
           "dense_n": dense_n, "dense_mean": mean, "dense_std": std, "threshold": threshold,
           "levels_evaluated": len(pruned),
           "max_sparsity_evaluated": pruned["sparsity"].max() if len(pruned) else float("nan"),
           "partial": bool(series["partial"].any()) or bool(pruned.empty),
           "matching_note": NOTE_NO_DENSE if pd.isna(mean) else NOTE_ONE_DENSE_SEED if dense_n == 1 else ""}
    for which, bound in (("matching", threshold), ("strict", mean)):
        hit = None if pd.isna(bound) else _sparsest(pruned[_at_least(pruned[f"{metric}_mean"], bound, higher)])
        row.update({f"{which}_level": None if hit is None else int(hit["level"]),
                    f"{which}_sparsity": None if hit is None else hit["sparsity"],
                    f"{which}_n": None if hit is None else int(hit[f"{metric}_n"]),
                    f"{which}_mean": None if hit is None else hit[f"{metric}_mean"],
                    f"{which}_std": None if hit is None else hit[f"{metric}_std"]})
    return row
