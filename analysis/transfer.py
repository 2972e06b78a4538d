"""Transfer (Chen et al. section 5): TRANSFER(S,T), the metric on task T of a mask found on task S, against
TRANSFER(T,T), T's own IMP trajectories at the same level and rewind point. The difference is the difference of the two means; its n and std come from the seeds present
on both sides (per-seed differences, ddof=1)."""

from __future__ import annotations

import pandas as pd

from .collect import IMP, TRANSFER, rows_where
from .tasks import task_metrics

GROUP = ["model", "schedule", "method", "rewind_point", "level"]
COLUMNS = GROUP + ["source_task", "task", "sparsity", "metric", "is_main",
                   "transfer_n", "transfer_mean", "transfer_std", "self_source", "self_n", "self_mean", "self_std",
                   "diff", "diff_n", "diff_std"]


def transfer_table(table: pd.DataFrame, main_metrics: dict[str, str]) -> pd.DataFrame:
    """One row per (model, schedule, method, rewind point, level, source task, target task, metric of the target)."""
    transfers = table[table["branch"] == TRANSFER]
    imp = table[table["branch"] == IMP]
    rows = []
    for key, group in transfers.groupby(GROUP + ["source_task", "task"], dropna=False, sort=True):
        info = dict(zip(GROUP + ["source_task", "task"], key))
        where = {c: info[c] for c in GROUP}
        target = info["task"]
        reference = imp[rows_where(imp, {**where, "task": target})]
        main = main_metrics.get(target, "")
        for metric in [m for m in task_metrics(target, main) if m in group.columns]:
            rows.append({**info, "sparsity": group["sparsity"].mean(), "metric": metric, "is_main": metric == main,
                         **_compare(group, reference, metric), "self_source": IMP if len(reference) else ""})
    out = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("transfer_n", "self_n", "diff_n"):
        out[column] = out[column].astype("Int64")
    return out


def _compare(transfer: pd.DataFrame, reference: pd.DataFrame, metric: str) -> dict:
    t = transfer[["seed", metric]].dropna()
    s = reference[["seed", metric]].dropna() if metric in reference else pd.DataFrame(columns=["seed", metric])
    paired = t.merge(s, on="seed", suffixes=("_t", "_s"))
    diffs = paired[f"{metric}_t"] - paired[f"{metric}_s"]
    t_values, s_values = t[metric].astype(float), s[metric].astype(float)
    return {"transfer_n": len(t), "transfer_mean": t_values.mean(), "transfer_std": t_values.std(),
            "self_n": len(s), "self_mean": s_values.mean(), "self_std": s_values.std(),
            "diff": t_values.mean() - s_values.mean(), "diff_n": len(diffs), "diff_std": diffs.astype(float).std()}
