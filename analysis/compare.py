"""`python -m analysis compare`: the same task/method/sparsity cells of several experiments side by side (e.g. two
rewinding settings, two models). Cells are matched on task, method, branch, source task, metric and sparsity rounded
to 0.1%; each experiment contributes its level, n, mean, std, min and max, and every experiment after the first its
difference of means to the first."""

from __future__ import annotations

import os

import pandas as pd

from .collect import TRANSFER, collect
from .document import Document
from .plots import sparsity_curves
from .report import FACETS, mean_std, percent, series_label, task_metric_list, varying
from .stats import KEY, metric_columns_of, planned_seeds, summarise

CELL = ["task", "method", "branch", "source_task", "sparsity_pct", "metric"]
SHOWN = ["level", "n", "mean", "std", "min", "max"]


def _long(summary: pd.DataFrame) -> pd.DataFrame:
    """Summary rows -> one row per (series, level, metric) with that metric's statistics."""
    parts = []
    base = ["label", *KEY, "sparsity", "partial"]
    for metric in metric_columns_of(summary):
        part = summary[base + [f"{metric}_{s}" for s in ("n", "mean", "std", "min", "median", "max")]]
        part = part[part[f"{metric}_n"].fillna(0) > 0]
        parts.append(part.rename(columns=lambda c: c[len(metric) + 1:] if c.startswith(f"{metric}_") else c)
                     .assign(metric=metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=base + ["metric"])


def write_comparison(client, names: list[str], out_dir: str) -> str:
    """Collect each experiment and write compare.csv, compare_<task>.png, compare.md and compare.html."""
    os.makedirs(out_dir, exist_ok=True)
    parts, summaries, mains, labels, notes = [], {}, {}, [], []
    for name in names:
        collected = collect(client, name)
        summary = summarise(collected.table(), planned_seeds(collected.runs))
        inside = [c for c in ("model", "schedule", "rewind_point") if c in varying(collected.runs, FACETS)]
        summary["label"] = [name + "".join(f" [{c}={row[c]}]" for c in inside) for _, row in summary.iterrows()]
        summaries[name] = summary
        labels += list(dict.fromkeys(summary["label"])) or [name]
        mains.update({t: m for t, m in collected.main_metrics().items() if t not in mains})
        parts.append(_long(summary))
        unfinished = int((collected.runs["problem"] != "").sum())
        if unfinished or collected.runs.empty:
            notes.append(f"{name}: {unfinished} of {len(collected.runs)} runs not complete "
                         f"({collected.problem_counts()})" if len(collected.runs) else f"{name}: no runs yet")
    data = pd.concat(parts, ignore_index=True)
    data["sparsity_pct"] = (data["sparsity"] * 100).round(1)
    wide = _side_by_side(data, labels)
    path = os.path.join(out_dir, "compare.csv")
    wide.to_csv(path, index=False)
    _document(names, data, labels, summaries, mains, notes, out_dir)
    return path


def _side_by_side(data: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    if data.empty:
        return pd.DataFrame(columns=CELL)
    cells = data.drop_duplicates(CELL + ["label"]).set_index(CELL + ["label"])[SHOWN].unstack("label")
    wide = pd.DataFrame(index=cells.index)
    for label in labels:
        for stat in SHOWN:
            wide[f"{label}: {stat}"] = cells[(stat, label)] if (stat, label) in cells else float("nan")
    for label in labels[1:]:
        wide[f"{label} - {labels[0]}: mean"] = wide[f"{label}: mean"] - wide[f"{labels[0]}: mean"]
    return wide.reset_index().sort_values(CELL, kind="stable").reset_index(drop=True)


def _document(names: list[str], data: pd.DataFrame, labels: list[str], summaries: dict, mains: dict,
              notes: list[str], out_dir: str) -> None:
    doc = Document(f"Comparison: {' vs '.join(names)}")
    if notes:
        doc.callout("PARTIAL RESULTS: " + "; ".join(notes) + ". Cells with fewer seeds than their series are "
                    "marked 'partial'; `python -m analysis report` lists the runs.")
    doc.text("Cells are matched on task, method, branch, source task, metric and sparsity (to 0.1%). Each cell: "
             "mean ± sample std over seeds (n), and the level it comes from. Full table with min and max: "
             "compare.csv.")
    for task in sorted(data["task"].unique()) if len(data) else []:
        rows = data[data["task"] == task]
        metrics = task_metric_list(task, mains.get(task, ""), pd.concat(
            [s[s["task"] == task] for s in summaries.values()]))
        doc.heading(f"Task {task}")
        series = {}
        for name, summary in summaries.items():
            own = summary[(summary["task"] == task) & (summary["branch"] != TRANSFER)]
            for _, part in own.groupby(["label", "method", "branch"], dropna=False, sort=False):
                series[f"{part.iloc[0]['label']}: {series_label(part.iloc[0], {'method'})}"] = part
        name = f"compare_{task}.png"
        sparsity_curves(series, {}, metrics, f"{task}: {' vs '.join(names)}", os.path.join(out_dir, name))
        doc.image(os.path.join(out_dir, name), f"{task}: {', '.join(metrics)} against sparsity, per experiment")
        for metric in metrics:
            doc.heading(f"{task}: {metric}", 3)
            doc.table(_metric_table(rows[rows["metric"] == metric], labels))
    with open(os.path.join(out_dir, "compare.md"), "w") as handle:
        handle.write(doc.to_markdown())
    with open(os.path.join(out_dir, "compare.html"), "w") as handle:
        handle.write(doc.to_html())


def _metric_table(rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    out = []
    for key, cell in rows.groupby(["method", "branch", "source_task", "sparsity_pct"], dropna=False, sort=True):
        first = cell.iloc[0]
        entry = {"series": series_label(first, {"method"}), "sparsity": percent(first["sparsity"])}
        for label in labels:
            hit = cell[cell["label"] == label]
            entry[label] = "–" if hit.empty else (
                f"{mean_std(hit.iloc[0]['mean'], hit.iloc[0]['std'], hit.iloc[0]['n'])}, level {hit.iloc[0]['level']}"
                + (" (partial)" if hit.iloc[0]["partial"] else ""))
        out.append(entry)
    return pd.DataFrame(out)
