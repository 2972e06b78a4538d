"""Seed statistics: n, mean, std (ddof=1), min, median and max of every metric per (series, level)."""

from __future__ import annotations

import pandas as pd

from cluster.conventions import METRIC_SPARSITY

from .collect import IMP, SERIES
from .tasks import TASK_METRICS

STATS = {"n": "count", "mean": "mean", "std": "std", "min": "min", "median": "median", "max": "max"}
KEY = SERIES + ["level"]
_NOT_METRICS = {"run_id", "seed", "status", "start_time", "level", METRIC_SPARSITY, *SERIES}
_ORDER = list(dict.fromkeys([m for metrics in TASK_METRICS.values() for m in metrics] + ["eval_loss"]))


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a per-level table: standard task metrics first, then eval_loss, then the rest by name."""
    present = [c for c in table.columns if c not in _NOT_METRICS]
    return sorted(present, key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m))


def metric_columns_of(summary: pd.DataFrame) -> list[str]:
    """Metric names that have statistics columns ({metric}_n, ...) in a summary table."""
    return [c[:-2] for c in summary.columns if c.endswith("_n") and c != "n"]


def sort_series(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by `by`, putting the IMP series before the branches."""
    def key(column: pd.Series) -> pd.Series:
        return column.map(lambda b: "" if b == IMP else b) if column.name == "branch" else column

    return frame.sort_values(by, key=key, kind="stable").reset_index(drop=True)


def planned_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """(series, level, seed, run_id) of every level the runs are meant to produce: levels 0..levels_planned of a
    trajectory, the levels a branch series holds (tag `levels`; `source_level` of a transfer)."""
    trajectories = runs[(runs["branch"] == IMP) & runs["levels_planned"].notna()]
    repeated = trajectories.loc[trajectories.index.repeat(trajectories["levels_planned"].astype(int) + 1)]
    repeated = repeated.assign(level=repeated.groupby(level=0).cumcount())
    branches = runs[runs["branch"] != IMP]
    levels = branches["source_level"].astype("string").where(branches["source_level"].notna(), branches["levels"])
    branches = branches.assign(level=levels.fillna("").str.split(",")).explode("level")
    branches = branches[branches["level"] != ""].astype({"level": int})
    return pd.concat([repeated, branches])[KEY + ["seed", "run_id"]].reset_index(drop=True)


def summarise(table: pd.DataFrame, planned: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model, schedule, method, branch, source_task, rewind point, rewind, level) with the mean
    sparsity, the number of seeds `n`, `seeds_expected` (seeds planned for the cell, `planned` as `planned_seeds`
    gives them, or seen in the series at any level; `partial` when n is smaller) and
    {metric}_{n,mean,std,min,median,max} over seeds for every metric."""
    metrics = metric_columns(table)
    groups = table.groupby(KEY, dropna=False, sort=False)
    out = groups.agg(sparsity=(METRIC_SPARSITY, "mean"), n=("seed", "nunique"))
    for metric in metrics:
        stats = groups[metric].agg(list(STATS.values()))
        stats.columns = [f"{metric}_{name}" for name in STATS]
        out = out.join(stats)
    out = out.reset_index()
    seen = out[KEY].merge(table[SERIES + ["seed"]].drop_duplicates(), on=SERIES)
    planned = out[KEY].merge(planned[KEY + ["seed"]], on=KEY)
    expected = pd.concat([seen, planned]).drop_duplicates().groupby(KEY, dropna=False)["seed"].nunique()
    out = out.merge(expected.rename("seeds_expected").reset_index(), on=KEY, how="left")
    out["partial"] = out["n"] < out["seeds_expected"]
    head = KEY + ["sparsity", "n", "seeds_expected", "partial"]
    return sort_series(out[head + [c for c in out.columns if c not in head]], KEY)


def describe(row: pd.Series, metric: str, digits: int = 4) -> str:
    """'mean ± std [min, max] (n=k)' for one metric of a summary row; '–' when no seed has it."""
    n = row.get(f"{metric}_n")
    if n is None or pd.isna(n) or n == 0:
        return "–"
    std = row[f"{metric}_std"]
    spread = f" ± {std:.{digits}f}" if pd.notna(std) else " ± n/a"
    return (f"{row[f'{metric}_mean']:.{digits}f}{spread} "
            f"[{row[f'{metric}_min']:.{digits}f}, {row[f'{metric}_max']:.{digits}f}] (n={int(n)})")
