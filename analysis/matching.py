"""Matching subnetworks (DESIGN.md): mean over seeds >= dense mean - dense std (matching) or >= dense mean (strictly).

The dense reference of a task is level 0 of its trajectory runs with the same model and rewind point, one value per seed
(averaged where several trajectories share a seed, e.g. two pruning methods). Only pruned levels (level >= 1) are
candidates. Comparisons allow a relative float rounding of 1e-9; for metrics where lower is better the inequalities
flip (mean <= dense mean + dense std, mean <= dense mean).

Beside this rule on means, the per-seed rule judges each seed's ticket against its own dense run under the same
threshold: matching when value >= that seed's dense value - dense std (the std over seeds), strictly matching when
value >= that seed's dense value. A ticket comes from one initialisation, so this asks whether the tickets match,
not whether their average does.
"""

from __future__ import annotations

import numpy as np
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


def dense_per_seed(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per (task, model, rewind point, seed): each metric at level 0 of the trajectory runs (their mean where several
    share the seed) and `dense_run_ids`, those runs' ids joined by ','."""
    dense = table[(table["branch"] == IMP) & (table["level"] == 0)]
    groups = dense.groupby(DENSE_KEY + ["seed"], dropna=False)
    per_seed = groups[metrics].mean()
    per_seed["dense_run_ids"] = groups["run_id"].agg(lambda ids: ",".join(sorted(set(ids))))
    return per_seed.reset_index()


def dense_stats(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per (task, model, rewind point): {metric}_{n,mean,std} of level 0 of the trajectory runs over seeds."""
    groups = dense_per_seed(table, metrics).groupby(DENSE_KEY, dropna=False)
    stats = groups[metrics].agg(["count", "mean", "std"])
    stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
    return stats.reset_index()


def threshold(mean: float, std: float, metric: str) -> float:
    """The matching threshold: dense mean - dense std (dense mean + std where lower is better); NaN without a std."""
    return mean - std if higher_is_better(metric) else mean + std


def at_least(values: pd.Series, bound, higher: bool) -> pd.Series:
    """Whether each value reaches `bound` (a number or a Series aligned with `values`) up to float rounding: >= where
    higher is better, <= where lower is; False where either side is missing."""
    slack = EPS * np.maximum(1.0, np.abs(bound))
    return values >= bound - slack if higher else values <= bound + slack


def seed_verdicts(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The per-seed rule: one row per (series, pruned level, seed, metric) with a value: `value`, `sparsity`,
    `run_id`, the seed's own `dense_value` and `dense_run_ids`, `dense_std` over seeds, and `matching` /
    `strictly_matching` (nullable booleans: missing where the seed has no dense run, and `matching` also where the
    dense std is undefined)."""
    columns = [*SERIES, "level", "seed", "metric", "value", "sparsity", "run_id", "dense_value", "dense_run_ids",
               "dense_std", "matching", "strictly_matching"]
    pruned = table[table["level"] >= 1]
    if pruned.empty or not metrics:
        return pd.DataFrame(columns=columns)
    long = pruned.melt(id_vars=[*SERIES, "level", "seed", "sparsity", "run_id"], value_vars=metrics,
                       var_name="metric", value_name="value").dropna(subset=["value"])
    own = dense_per_seed(table, metrics).melt(id_vars=DENSE_KEY + ["seed", "dense_run_ids"], value_vars=metrics,
                                              var_name="metric", value_name="dense_value")
    spread = dense_stats(table, metrics).melt(id_vars=DENSE_KEY, value_vars=[f"{m}_std" for m in metrics],
                                              var_name="metric", value_name="dense_std")
    spread["metric"] = spread["metric"].str[:-len("_std")]
    out = long.merge(own, on=DENSE_KEY + ["seed", "metric"], how="left")
    out = out.merge(spread, on=DENSE_KEY + ["metric"], how="left")
    higher = out["metric"].map(higher_is_better).astype(bool)
    bounds = {"matching": out["dense_value"] + np.where(higher, -1.0, 1.0) * out["dense_std"],
              "strictly_matching": out["dense_value"]}
    for column, bound in bounds.items():
        reached = np.where(higher, at_least(out["value"], bound, True), at_least(out["value"], bound, False))
        out[column] = pd.array(reached, dtype="boolean")
        out.loc[bound.isna(), column] = pd.NA
    return out[columns].reset_index(drop=True)


def _sparsest(rows: pd.DataFrame) -> pd.Series | None:
    if rows.empty:
        return None
    return rows.sort_values(["sparsity", "level"], na_position="first").iloc[-1]


def find_matching(summary: pd.DataFrame, table: pd.DataFrame, main_metrics: dict[str, str]) -> pd.DataFrame:
    """Per series and task metric: the sparsest matching and strictly matching levels with the dense reference.

    `matching_note` says why a verdict cannot be given (no dense reference; one dense seed, so no dense std and no
    matching verdict, while the strictly matching one still is); it is empty where both verdicts are defined.
    `seedwise_{matching,strict}_{level,sparsity,seeds}`: the sparsest level at which every seed judged by the
    per-seed rule (those with their own dense run) matches, and how many seeds that is.
    """
    metrics = metric_columns_of(summary)
    dense = dense_stats(table, metrics) if metrics else pd.DataFrame(columns=DENSE_KEY)
    seeds = seed_verdicts(table, metrics)
    rows = []
    for key, series in summary.groupby(SERIES, dropna=False, sort=False):
        info = dict(zip(SERIES, key))
        reference = dense[rows_where(dense, {c: info[c] for c in DENSE_KEY})]
        verdicts = seeds[rows_where(seeds, info)]
        judged = _judged_metrics(info["task"], main_metrics.get(info["task"], ""), series, metrics)
        for metric in judged:
            row = _judge(info, metric, metric == judged[0], series, reference)
            rows.append({**row, **_seedwise(verdicts[verdicts["metric"] == metric])})
    columns = SERIES + ["metric", "is_main", "dense_n", "dense_mean", "dense_std", "threshold"]
    for which in ("matching", "strict"):
        columns += [f"{which}_{c}" for c in ("level", "sparsity", "n", "mean", "std")]
    for which in ("matching", "strict"):
        columns += [f"seedwise_{which}_{c}" for c in ("level", "sparsity", "seeds")]
    columns += ["levels_evaluated", "max_sparsity_evaluated", "partial", "matching_note"]
    out = pd.DataFrame(rows, columns=columns)
    for column in ("dense_n", "matching_level", "matching_n", "strict_level", "strict_n", "levels_evaluated",
                   "seedwise_matching_level", "seedwise_matching_seeds", "seedwise_strict_level",
                   "seedwise_strict_seeds"):
        out[column] = out[column].astype("Int64")
    return sort_series(out, SERIES + ["metric"]) if not out.empty else out


def _seedwise(verdicts: pd.DataFrame) -> dict:
    """The sparsest level whose judged seeds all match (per-seed rule), for matching and strictly matching."""
    out = {}
    for which, column in (("matching", "matching"), ("strict", "strictly_matching")):
        judged = verdicts[verdicts[column].notna()]
        per_level = judged.groupby("level").agg(seeds=(column, "size"), hits=(column, "sum"),
                                                sparsity=("sparsity", "mean")).reset_index()
        every = per_level[per_level["hits"] == per_level["seeds"]]
        hit = _sparsest(every)
        out.update({f"seedwise_{which}_level": None if hit is None else int(hit["level"]),
                    f"seedwise_{which}_sparsity": None if hit is None else hit["sparsity"],
                    f"seedwise_{which}_seeds": None if hit is None else int(hit["seeds"])})
    return out


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
    bound = threshold(mean, std, metric)
    pruned = series[(series["level"] >= 1) & (series[f"{metric}_n"] > 0)]
    row = {**info, "metric": metric, "is_main": is_main,
           "dense_n": dense_n, "dense_mean": mean, "dense_std": std, "threshold": bound,
           "levels_evaluated": len(pruned),
           "max_sparsity_evaluated": pruned["sparsity"].max() if len(pruned) else float("nan"),
           "partial": bool(series["partial"].any()) or bool(pruned.empty),
           "matching_note": NOTE_NO_DENSE if pd.isna(mean) else NOTE_ONE_DENSE_SEED if dense_n == 1 else ""}
    for which, limit in (("matching", bound), ("strict", mean)):
        hit = None if pd.isna(limit) else _sparsest(pruned[at_least(pruned[f"{metric}_mean"], limit, higher)])
        row.update({f"{which}_level": None if hit is None else int(hit["level"]),
                    f"{which}_sparsity": None if hit is None else hit["sparsity"],
                    f"{which}_n": None if hit is None else int(hit[f"{metric}_n"]),
                    f"{which}_mean": None if hit is None else hit[f"{metric}_mean"],
                    f"{which}_std": None if hit is None else hit[f"{metric}_std"]})
    return row
