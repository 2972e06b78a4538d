"""Paired comparisons by seed: at every pruned level of a task, IMP minus each baseline (random pruning, random
re-initialisation, one-shot, standard pruning, ...) over the seeds both have, and each arm's verdict under the rule
on means and under the per-seed rule (matching.seed_verdicts: each seed's ticket against its own dense run).

Arms are paired on task, model, schedule, method, rewind point, level and seed; transfer runs are compared in
transfer.py instead. The mean difference, its sample std (ddof=1), and the 95% confidence interval and two-sided
p-value of the paired t-test (scipy.stats.ttest_rel) are over the paired seeds; the rule on means uses each arm's
mean over all of its seeds at the level, as matching.csv does.
"""

from __future__ import annotations

import warnings

import pandas as pd
from scipy import stats

from .collect import IMP, TRANSFER
from .matching import DENSE_KEY, at_least, dense_stats, seed_verdicts, threshold
from .stats import metric_columns
from .tasks import higher_is_better, task_metrics

PAIR = ["task", "model", "schedule", "method", "rewind_point", "level"]
ARMS = ("imp", "baseline")
CONFIDENCE = 0.95
_PER_ARM = ["sparsity", "value", "matching", "strictly_matching", "run_id", "dense_value", "dense_std",
            "dense_run_ids"]
SEED_COLUMNS = PAIR + ["baseline", "metric", "is_main", "seed", "imp_sparsity", "baseline_sparsity", "imp_value",
                       "baseline_value", "difference", "dense_value", "dense_std", "imp_matching",
                       "imp_strictly_matching", "baseline_matching", "baseline_strictly_matching", "imp_run_id",
                       "baseline_run_id", "dense_run_ids"]
COLUMNS = (PAIR + ["sparsity", "baseline", "metric", "is_main", "n", "seeds", "mean_difference", "std_difference",
                   "ci_low", "ci_high", "p_value", "per_seed_differences", "dense_n", "dense_mean", "dense_std",
                   "threshold"]
           + [f"{arm}_{c}" for arm in ARMS for c in ("n", "mean", "matching", "strictly_matching", "seeds_judged",
                                                     "matching_seeds", "strictly_matching_seeds", "run_ids")])


def judged_metrics(table: pd.DataFrame, task: str, main: str) -> list[str]:
    """The task's standard metrics with values in `table` (main first); else every metric with values but eval_loss."""
    rows = table[table["task"] == task]
    present = [m for m in metric_columns(table) if rows[m].notna().any()]
    return [m for m in task_metrics(task, main) if m in present] or [m for m in present if m != "eval_loss"]


def _arm_first(column: str) -> str:
    """'value_imp' -> 'imp_value' (the merge's suffix as a prefix)."""
    for arm in ARMS:
        if column.endswith(f"_{arm}"):
            return f"{arm}_{column[:-len(arm) - 1]}"
    return column


def paired_seeds(table: pd.DataFrame, main_metrics: dict[str, str]) -> pd.DataFrame:
    """One row per (task, model, schedule, method, rewind point, level, baseline, metric, seed) where IMP or the
    baseline has a value: both values, IMP minus baseline (missing unless both have the seed), the seed's own dense
    value and the dense std, each arm's per-seed verdicts, and the run ids."""
    metrics = {task: judged_metrics(table, task, main_metrics.get(task, "")) for task in table["task"].unique()}
    verdicts = seed_verdicts(table, sorted({m for ms in metrics.values() for m in ms}))
    judged = pd.Series([m in metrics.get(t, ()) for t, m in zip(verdicts["task"], verdicts["metric"])],
                       index=verdicts.index, dtype=bool)
    verdicts = verdicts[judged]
    imp = verdicts.loc[verdicts["branch"] == IMP, PAIR + ["metric", "seed", *_PER_ARM]]
    baselines = verdicts[~verdicts["branch"].isin([IMP, TRANSFER])].rename(columns={"branch": "baseline"})
    on = PAIR + ["metric", "baseline", "seed"]
    imp = baselines[PAIR + ["metric", "baseline"]].drop_duplicates().merge(imp, on=PAIR + ["metric"])
    seeds = imp.merge(baselines[on + _PER_ARM], on=on, how="outer", suffixes=("_imp", "_baseline"))
    seeds = seeds.rename(columns=_arm_first)
    for column in ("dense_value", "dense_std", "dense_run_ids"):
        seeds[column] = seeds.pop(f"imp_{column}").combine_first(seeds.pop(f"baseline_{column}"))
    seeds["difference"] = seeds["imp_value"] - seeds["baseline_value"]
    seeds["is_main"] = [metrics[t][0] == m for t, m in zip(seeds["task"], seeds["metric"])]
    seeds["seed"] = seeds["seed"].astype("Int64")
    order = PAIR + ["baseline", "is_main", "metric", "seed"]
    seeds = seeds.sort_values(order, ascending=[True] * len(PAIR) + [True, False, True, True], kind="stable")
    return seeds[SEED_COLUMNS].reset_index(drop=True)


def paired_table(table: pd.DataFrame, main_metrics: dict[str, str],
                 seeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (task, model, schedule, method, rewind point, level, baseline, metric): the paired difference IMP
    minus baseline over seeds (n, seeds, mean, std, confidence interval, p-value, 'seed:difference' list), the dense
    reference and threshold, and per arm: n and mean over its seeds, the verdicts of the rule on means, the seeds the
    per-seed rule judged and how many of them match / strictly match, and its 'seed:run_id' list."""
    seeds = paired_seeds(table, main_metrics) if seeds is None else seeds
    if seeds.empty:
        return pd.DataFrame(columns=COLUMNS)
    metrics = sorted(set(seeds["metric"]))
    dense = dense_stats(table, metrics)
    rows = []
    for key, group in seeds.groupby(PAIR + ["baseline", "metric"], sort=False, dropna=False):
        info = dict(zip(PAIR + ["baseline", "metric"], key))
        reference = dense.merge(pd.DataFrame([{c: info[c] for c in DENSE_KEY}]), on=DENSE_KEY)
        rows.append({**info, "is_main": bool(group["is_main"].iloc[0]), **_difference(group),
                     **_reference(reference, info["metric"], group)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    for column in ["n", "dense_n"] + [f"{arm}_{c}" for arm in ARMS for c in ("n", "seeds_judged", "matching_seeds",
                                                                            "strictly_matching_seeds")]:
        out[column] = out[column].astype("Int64")
    for column in [f"{arm}_{c}" for arm in ARMS for c in ("matching", "strictly_matching")]:
        out[column] = out[column].astype("boolean")
    return out


def _difference(group: pd.DataFrame) -> dict:
    both = group[group["difference"].notna()]
    out = {"n": len(both), "seeds": ",".join(str(s) for s in both["seed"]),
           "mean_difference": both["difference"].mean(), "std_difference": both["difference"].std(),
           "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
           "per_seed_differences": ";".join(f"{s}:{d:+.6g}" for s, d in zip(both["seed"], both["difference"])),
           "sparsity": round(float(group["imp_sparsity"].combine_first(group["baseline_sparsity"]).mean()), 4)}
    if len(both) >= 2:
        with warnings.catch_warnings():  # identical differences: a zero std, which scipy warns about
            warnings.simplefilter("ignore", RuntimeWarning)
            test = stats.ttest_rel(both["imp_value"].astype(float), both["baseline_value"].astype(float))
            interval = test.confidence_interval(CONFIDENCE)
        out.update({"ci_low": float(interval.low), "ci_high": float(interval.high), "p_value": float(test.pvalue)})
    return out


def _reference(reference: pd.DataFrame, metric: str, group: pd.DataFrame) -> dict:
    if reference.empty or pd.isna(reference.iloc[0][f"{metric}_mean"]):
        n, mean, std = 0, float("nan"), float("nan")
    else:
        n, mean, std = (reference.iloc[0][f"{metric}_{s}"] for s in ("n", "mean", "std"))
    bound = threshold(mean, std, metric)
    out = {"dense_n": int(n), "dense_mean": mean, "dense_std": std, "threshold": bound}
    for arm in ARMS:
        values = group[f"{arm}_value"].dropna()
        arm_mean = values.mean()
        out.update({f"{arm}_n": len(values), f"{arm}_mean": arm_mean,
                    f"{arm}_matching": _verdict(arm_mean, bound, metric),
                    f"{arm}_strictly_matching": _verdict(arm_mean, mean, metric),
                    f"{arm}_run_ids": ";".join(f"{s}:{r}" for s, r in zip(group["seed"], group[f"{arm}_run_id"])
                                               if pd.notna(r))})
        out[f"{arm}_seeds_judged"] = int(group[f"{arm}_strictly_matching"].notna().sum())
        for column in ("matching", "strictly_matching"):
            judged = group[f"{arm}_{column}"].dropna()
            out[f"{arm}_{column}_seeds"] = int(judged.sum()) if len(judged) else None
    return out


def _verdict(value: float, bound: float, metric: str):
    """Whether `value` reaches `bound` under the metric's direction; None where either is missing."""
    if pd.isna(value) or pd.isna(bound):
        return None
    return bool(at_least(pd.Series([value]), bound, higher_is_better(metric)).iloc[0])
