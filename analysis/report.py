"""`python -m analysis report`: summary/matching/transfer CSVs, PNG plots, report.md and a self-contained
report.html for one experiment, with partial results (running, failed, incomplete runs) marked."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone

import pandas as pd

from cluster import conventions as C
from cluster.tracking import is_server

from . import api
from .collect import IMP, TRANSFER, Collected, collect, rows_where
from .document import Document, Link
from .masks import MASK_GROUP, choose_levels, load_masks, random_jaccard
from .matching import DENSE_KEY, dense_stats, threshold
from .plots import layer_sparsity, seed_overlaps, sparsity_curves, task_overlaps, transfer_heatmap
from .publish import publish, sweep_run_id
from .stats import KEY, describe, metric_columns, metric_columns_of
from .structured import structured_table
from .tasks import task_metrics
from .transfer import GROUP as TRANSFER_GROUP
from .transfer import transfer_table

FACETS = ["model", "schedule", "method", "rewind_point"]
_FILE_NAMES = {"model": "model", "schedule": "", "method": "", "rewind_point": "rewind", "level": "level"}


def mean_std(mean, std, n, digits: int = 4) -> str:
    """'mean ± std (n=k)'; '–' when n is 0 or missing."""
    if n is None or pd.isna(n) or int(n) == 0:
        return "–"
    spread = f" ± {std:.{digits}f}" if pd.notna(std) else " ± n/a"
    return f"{mean:.{digits}f}{spread} (n={int(n)})"


def percent(sparsity) -> str:
    """A sparsity fraction as '36.0%' ('?' when unknown)."""
    return "?" if sparsity is None or pd.isna(sparsity) else f"{100 * sparsity:.1f}%"


def varying(frame: pd.DataFrame, columns: list[str]) -> set[str]:
    """The columns that take more than one value in `frame`."""
    return {c for c in columns if c in frame and frame[c].nunique(dropna=False) > 1}


def suffix(values: dict, shown: set[str]) -> str:
    """A file-name suffix naming the values of the `shown` columns, e.g. '_rewind5pct'."""
    parts = [_FILE_NAMES.get(column, column) + re.sub(r"[^A-Za-z0-9.-]+", "-", str(values[column]).replace("%", "pct"))
             for column in values if column in shown]
    return "".join(f"_{part}" for part in parts)


def series_label(row, shown: set[str]) -> str:
    """'IMP', a branch kind, or 'transfer from S', plus the facets in `shown` that tell series apart."""
    if row["branch"] == IMP:
        label = "IMP"
    elif row["branch"] == TRANSFER:
        label = f"transfer from {row['source_task']}"
    else:
        label = row["branch"]
    extra = [f"rewind {row[c]}" if c == "rewind_point" else str(row[c]) for c in FACETS if c in shown]
    return f"{label} ({', '.join(extra)})" if extra else label


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI when the tracking URI is a server (http(s)://host/#/experiments/<id>/runs/<id>),
    else ''."""
    if not is_server(tracking_uri):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_links(rows: pd.DataFrame, collected: Collected, prefix: str = "") -> list[Link]:
    """One Link per (seed, run) of `rows` (columns seed, run_id): 's0' linked to the run's page on a tracking server,
    else 's0 <first 8 characters of the run id>'."""
    pairs = rows[["seed", "run_id"]].dropna().drop_duplicates().sort_values(["seed", "run_id"])
    links = []
    for seed, run_id in pairs.itertuples(index=False):
        url = run_url(collected.tracking_uri, collected.experiment_id, run_id)
        links.append(Link(f"{prefix}s{seed}" + ("" if url else f" {run_id[:8]}"), url))
    return links


def task_metric_list(task: str, main: str, summary: pd.DataFrame) -> list[str]:
    """The task's standard metrics that have data in `summary` (main first); else every metric but eval_loss."""
    present = [m for m in metric_columns_of(summary) if summary[f"{m}_n"].fillna(0).sum() > 0]
    standard = [m for m in task_metrics(task, main) if m in present]
    return standard or [m for m in present if m != "eval_loss"]


def write_report(client, experiment: str, out_dir: str, overlap_level: int | None = None,
                 overlap_sparsity: float | None = None, masks: bool = True) -> str:
    """Collect `experiment` and write every table, plot and the report into `out_dir`; upload them as artifacts
    `report/` of the experiment's sweep run where it has one (one line on stdout says what happened, a warning on
    stderr when the store cannot be written); return report.md's path."""
    os.makedirs(out_dir, exist_ok=True)
    collected = collect(client, experiment)
    sweep_run = sweep_run_id(client, collected.experiment_id)
    points = api.tidy_points(collected)
    table = api.table_of(points)
    main = api.main_metrics(points)
    summary = api.summary(points)
    matching = api.matching(points)
    seeds = api.paired_by_seed(points)
    paired = api.paired(points)
    transfer = transfer_table(table, main)
    structured = structured_table(collected.structured)
    tables = ["summary.csv", "matching.csv", "paired.csv", "paired_seeds.csv", "transfer.csv", "structured.csv"]
    for name, frame in zip(tables, (summary, matching, paired, seeds, transfer, structured)):
        frame.to_csv(os.path.join(out_dir, name), index=False)

    doc = Document(f"Seed-variance report: {experiment}")
    _setup(doc, collected, table, sweep_run)
    _runs(doc, collected)
    _matching(doc, matching, collected)
    _paired(doc, paired, seeds, collected)
    _tasks(doc, summary, table, main, collected, out_dir)
    _transfer(doc, transfer, out_dir)
    _structured(doc, structured)
    if masks:
        tables += _masks(doc, client, table, out_dir, overlap_level, overlap_sparsity)
    images = [os.path.basename(block[1]) for block in doc.blocks if block[0] == "image"]
    doc.heading("Files")
    if sweep_run:
        doc.text(f"This report's files (artifacts `{C.REPORT_ARTIFACT_DIR}/` of the sweep run {sweep_run} may also "
                 "hold files of earlier reports that this one did not write; only these are current):")
    doc.bullets(tables + images)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as handle:
        handle.write(doc.to_markdown())
    with open(os.path.join(out_dir, "report.html"), "w") as handle:
        handle.write(doc.to_html())
    files = [os.path.join(out_dir, name) for name in ["report.html", "report.md", *tables, *images]]
    _upload(client, collected, sweep_run, files)
    return path


def _upload(client, collected: Collected, sweep_run: str | None, files: list[str]) -> None:
    """Publish the report to the sweep run and say so in one line (a warning on stderr when it cannot)."""
    where = f"artifacts {C.REPORT_ARTIFACT_DIR}/ of the sweep run {sweep_run}"
    if sweep_run is None:
        print(f"experiment '{collected.experiment}' has no sweep run (tag {C.TAG_RUN_KIND}={C.RUN_KIND_SWEEP}): "
              "the report was not uploaded")
        return
    try:
        stale = publish(client, sweep_run, files)
    except Exception as exc:  # noqa: BLE001 - any store failure leaves the report on disk; say so in one line
        text = str(getattr(exc, "message", None) or exc).strip()
        print(f"warning: could not write the report to {where} ({text.splitlines()[0] if text else type(exc).__name__}"
              "); the report on disk is complete", file=sys.stderr)
        return
    print(f"uploaded {len(files)} files to {where}"
          + (f"; {len(stale)} files there are left from an earlier report (MLflow cannot delete artifacts; "
             f"report.md lists the current ones): {', '.join(stale)}" if stale else ""))


def _values(frame: pd.DataFrame, column: str) -> str:
    values = sorted({f"`{v}`" if pd.notna(v) and v != "" else "(not tagged)" for v in frame[column]})
    return ", ".join(values) if values else "(none)"


def _prunable_sets(frame: pd.DataFrame) -> str:
    """The distinct prunable_set tags (JSON lists of parameter-name patterns) as code, one set after another."""
    shown = []
    for value in sorted(set(frame["prunable_set"])):
        try:
            patterns = json.loads(value) if value else []
        except ValueError:
            patterns = [value]
        patterns = patterns if isinstance(patterns, list) else [value]
        shown.append(" ".join(f"`{p}`" for p in patterns) or "(not tagged)")
    return "; ".join(shown) or "(none)"


def _setup(doc: Document, collected: Collected, table: pd.DataFrame, sweep_run: str | None) -> None:
    runs = collected.runs
    unfinished = runs[runs["problem"] != ""]
    if len(unfinished):
        doc.callout(f"PARTIAL RESULTS: {len(unfinished)} of {len(runs)} runs are not complete "
                    f"({collected.problem_counts()}). Rows and cells marked 'partial' have fewer seeds than their "
                    "series; plots draw them with hollow markers.")
    if runs.empty and collected.structured.empty:
        doc.callout("The experiment has no trajectory, branch or structured runs yet.")
    split = sorted(set(runs.loc[runs["not_comparable"] == "true", "task"]))
    if split:
        doc.callout(f"NOT COMPARABLE TO PUBLISHED NUMBERS: {', '.join(split)} trained and evaluated on a split of "
                    "their dev set (the official train set was not available), so their metrics differ in data from "
                    "the papers' results.")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.text(f"Experiment '{collected.experiment}' (id {collected.experiment_id}) in {collected.tracking_uri}, "
             f"read {stamp}.")
    doc.heading("Setup")
    seeds = table.groupby("task")["seed"].nunique() if len(table) else pd.Series(dtype=int)
    kinds = runs["branch"].map(lambda b: "trajectory (IMP)" if b == IMP else f"branch {b}").value_counts()
    structured = collected.structured
    items = [
        f"Model: {_values(pd.concat([runs[['model']], structured.reindex(columns=['model'])]), 'model')}",
        f"Prunable set (tag prunable_set): {_prunable_sets(runs[runs['last_level'].notna()])}",
        f"Pruning methods: {_values(runs, 'method')}; schedules: {_values(runs, 'schedule')}; "
        f"rewind points: {_values(runs, 'rewind_point')} (steps: {_values(runs, 'rewind')})",
        "Tasks (main metric, seeds with results): " + (", ".join(
            f"{t} ({m}, n={int(seeds.get(t, 0))})" for t, m in sorted(collected.main_metrics().items())) or "(none)"),
        "Runs: " + (", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"),
        "Statistics over seeds: n, mean, sample std (ddof=1, n/a for n=1), min, median, max. Matching: mean >= "
        "dense mean - dense std; strictly matching: mean >= dense mean (dense = level 0 of the IMP trajectories "
        "with the same task, model and rewind point). Per-seed rule: each seed's ticket against its own dense run "
        "under the same threshold (value >= that seed's dense value - dense std; strictly: >= its dense value).",
    ]
    if sweep_run:
        items.append(f"Sweep run: {sweep_run} (this report is stored as its artifacts `{C.REPORT_ARTIFACT_DIR}/`).")
    if len(structured):
        searches = int((structured["subnetwork"] == C.SUBNETWORK_SEARCH).sum())
        unfinished = int((structured["status"] != "FINISHED").sum())
        items.append(f"Structured runs: {searches} searches ({_values(structured, 'method')}), "
                     f"{len(structured) - searches} retrained subnetworks; {unfinished} not finished; tasks "
                     f"{_values(structured, 'task')}, seeds {_values(structured, 'seed')}")
    ignored = collected.ignored
    ignored = ignored[ignored["run_kind"] != C.RUN_KIND_SWEEP] if "run_kind" in ignored else ignored
    if len(ignored):
        items.append(f"{len(ignored)} runs without run_kind trajectory/branch/structured/sweep were ignored.")
    if collected.duplicates():
        items.append(f"{collected.duplicates()} level values were logged by more than one run of the same result "
                     "(same series, seed and content key); one is used: the finished run's, else the newest's.")
    if len(collected.superseded):
        items.append(f"{len(collected.superseded)} runs of older results were superseded: where the runs of a "
                     "series and seed hold different results (content keys), only the run started last is used, "
                     "even where it failed or is still running (see Incomplete, failed and running runs).")
    doc.bullets(items)


def _runs(doc: Document, collected: Collected) -> None:
    doc.heading("Incomplete, failed and running runs")
    everything = collected.runs
    waiting = (everything["status"] == "SCHEDULED") & everything["last_level"].isna()
    runs = everything[(everything["problem"] != "") & ~waiting]
    if waiting.any():
        kinds = everything.loc[waiting, "branch"].map(lambda b: "trajectory" if b == IMP else b).value_counts()
        doc.text(f"{int(waiting.sum())} runs are scheduled and have not started: "
                 + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + ".")
    if runs.empty and not waiting.any():
        doc.text(f"All {len(everything)} runs finished with every planned level." if len(everything) else "No runs.")
    if not runs.empty:
        doc.table(_problem_rows(runs, collected))
    _superseded(doc, collected)
    _mixed_versions(doc, collected)


def _superseded(doc: Document, collected: Collected) -> None:
    """The runs of older results that the current run of their series and seed replaced, by id."""
    old = collected.superseded
    if old.empty:
        return
    doc.text(f"{len(old)} superseded runs (an older result of their series and seed: another content key than the "
             "run started last, whose levels alone are shown, even where it failed or is still running):")
    rows = []
    for _, run in old.sort_values(["task", "branch", "seed", "start_time"], kind="stable").iterrows():
        url = run_url(collected.tracking_uri, collected.experiment_id, run["run_id"])
        started = pd.to_datetime(run["start_time"], unit="ms", utc=True)
        rows.append({"run": run["run_name"], "run id": Link(run["run_id"], url), "kind": run["branch"],
                     "task": run["task"], "seed": run["seed"], "source": run["source_task"], "status": run["status"],
                     "content key": run["content_key"], "started (UTC)": started.strftime("%Y-%m-%d %H:%M")})
    doc.table(pd.DataFrame(rows))


def _mixed_versions(doc: Document, collected: Collected) -> None:
    """The cells whose seeds ran on different torch, transformers or deepspeed versions."""
    cells = collected.mixed_versions()
    if cells.empty:
        return
    shown = varying(collected.runs, FACETS)
    doc.callout(f"MIXED LIBRARY VERSIONS: in {len(cells)} cells (series and level) the seeds ran on different "
                f"library versions (tag {C.TAG_VERSIONS}; runs without it are not counted):")
    doc.bullets([f"{row['task']}, {series_label(row, shown)}, level {row['level']}: " + "; ".join(row["versions"])
                 for _, row in cells.iterrows()])


def _problem_rows(runs: pd.DataFrame, collected: Collected) -> pd.DataFrame:
    """One row per incomplete, failed or running run."""
    rows = []
    for _, run in runs.iterrows():
        logged = pd.to_datetime(run["last_logged"], unit="ms", utc=True) if pd.notna(run["last_logged"]) else None
        url = run_url(collected.tracking_uri, collected.experiment_id, run["run_id"])
        rows.append({"run": run["run_name"], "run id": Link(run["run_id"], url), "kind": run["branch"],
                     "task": run["task"],
                     "seed": run["seed"], "source": run["source_task"], "status": run["status"],
                     "levels logged": "none" if pd.isna(run["last_level"]) else f"up to {run['last_level']}",
                     "levels planned": run["levels_planned"], "problem": run["problem"],
                     "last metric (UTC)": logged.strftime("%Y-%m-%d %H:%M") if logged is not None else ""})
    return pd.DataFrame(rows)


def _matching(doc: Document, matching: pd.DataFrame, collected: Collected) -> None:
    doc.heading("Matching subnetworks")
    if matching.empty:
        doc.text("No results yet.")
        return
    doc.text("Per task, series and metric: the sparsest pruned level whose mean over seeds is matching "
             "(>= dense mean - std) and strictly matching (>= dense mean); and, by the per-seed rule, the sparsest "
             "level at which every seed's ticket matches its own dense run (seeds without one are not judged). "
             "Full table: matching.csv.")
    shown = varying(collected.runs, FACETS)
    rows = []
    for _, row in matching.iterrows():
        found = {}
        for which in ("matching", "strict"):
            undefined = pd.isna(row["threshold"] if which == "matching" else row["dense_mean"])
            if pd.isna(row[f"{which}_level"]) and undefined and row["matching_note"]:
                found[which] = f"no verdict: {row['matching_note']}"
            elif pd.isna(row[f"{which}_level"]):
                found[which] = f"none of {row['levels_evaluated']} pruned levels"
            else:
                found[which] = (f"level {row[f'{which}_level']} ({percent(row[f'{which}_sparsity'])}): "
                                + mean_std(row[f"{which}_mean"], row[f"{which}_std"], row[f"{which}_n"]))
        rows.append({"task": row["task"], "series": series_label(row, shown), "metric": row["metric"],
                     "dense (level 0)": mean_std(row["dense_mean"], row["dense_std"], row["dense_n"]),
                     "threshold": "" if pd.isna(row["threshold"]) else f"{row['threshold']:.4f}",
                     "sparsest matching": found["matching"], "sparsest strictly matching": found["strict"],
                     "sparsest matching in every seed (per-seed rule)": _seedwise(row),
                     "partial": "partial" if row["partial"] else ""})
    doc.table(pd.DataFrame(rows))


def _seedwise(row: pd.Series) -> str:
    parts = []
    for which, name in (("matching", "matching"), ("strict", "strictly")):
        level = row[f"seedwise_{which}_level"]
        parts.append(f"{name}: none" if pd.isna(level) else
                     f"{name}: level {level} ({percent(row[f'seedwise_{which}_sparsity'])}, "
                     f"all {row[f'seedwise_{which}_seeds']} seeds judged)")
    return "; ".join(parts)


def _paired(doc: Document, paired: pd.DataFrame, seeds: pd.DataFrame, collected: Collected) -> None:
    doc.heading("IMP minus each baseline, paired by seed")
    if paired.empty:
        doc.text("No baseline shares a pruned level and a seed with an IMP trajectory yet.")
        return
    doc.text("Per task, level and baseline (main metric; every standard metric in paired.csv, one row per seed in "
             "paired_seeds.csv): IMP minus the baseline over the seeds both have, with the 95% confidence interval "
             "and p-value of the paired t-test (n >= 2); each arm's mean over its seeds with the verdict of the rule "
             "on means, and the per-seed rule: in how many seeds the ticket matches its own seed's dense run. Runs: "
             + ("links to the MLflow UI." if is_server(collected.tracking_uri)
                else "seed and the first 8 characters of the run id (full ids in paired_seeds.csv)."))
    shown = varying(collected.runs, FACETS)
    rows = []
    for _, row in paired[paired["is_main"]].iterrows():
        where = {c: row[c] for c in ("task", "model", "schedule", "method", "rewind_point", "level", "baseline",
                                     "metric")}
        per_seed = seeds[rows_where(seeds, where)]
        facets = {_FILE_NAMES[c] or c: row[c] for c in FACETS if c in shown}
        rows.append({"task": row["task"], **facets, "level": row["level"], "sparsity": percent(row["sparsity"]),
                     "baseline": row["baseline"], "metric": row["metric"], "IMP - baseline": _difference(row),
                     "per seed": ", ".join(f"s{s}: {d:+.4f}" for s, d in
                                           per_seed[["seed", "difference"]].dropna().itertuples(index=False)),
                     "IMP verdict": _arm_verdict(row, "imp"), "baseline verdict": _arm_verdict(row, "baseline"),
                     "runs": run_links(per_seed.rename(columns={"imp_run_id": "run_id"}), collected, "IMP ")
                     + run_links(per_seed.rename(columns={"baseline_run_id": "run_id"}), collected,
                                 f"{row['baseline']} ")})
    doc.table(pd.DataFrame(rows))


def _difference(row: pd.Series) -> str:
    if not row["n"]:
        return "– (no seed in both)"
    text = f"{row['mean_difference']:+.4f}"
    if pd.notna(row["std_difference"]):
        text += f" ± {row['std_difference']:.4f}"
    text += f" (n={row['n']})"
    if pd.notna(row["ci_low"]):
        text += f", 95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    if pd.notna(row["p_value"]):
        text += f", p={row['p_value']:.3g}"
    return text


def _arm_verdict(row: pd.Series, arm: str) -> str:
    """'mean 0.8300 (n=3): matching; per seed: matching in 3 of 3, strictly in 1 of 3' for one arm of a paired row."""
    if not row[f"{arm}_n"]:
        return "no values"
    strict, matching = row[f"{arm}_strictly_matching"], row[f"{arm}_matching"]
    if pd.isna(strict):
        on_means = "no verdict (no dense reference)"
    elif strict:
        on_means = "strictly matching"
    elif pd.isna(matching):
        on_means = "not strictly matching (no dense std for matching)"
    else:
        on_means = "matching" if matching else "not matching"
    judged = row[f"{arm}_seeds_judged"]
    if not judged:
        per_seed = "no seed has its own dense run"
    elif pd.isna(row[f"{arm}_matching_seeds"]):
        per_seed = f"strictly in {row[f'{arm}_strictly_matching_seeds']} of {judged} (no dense std for matching)"
    else:
        per_seed = (f"matching in {row[f'{arm}_matching_seeds']} of {judged}, "
                    f"strictly in {row[f'{arm}_strictly_matching_seeds']} of {judged}")
    return f"mean {row[f'{arm}_mean']:.4f} (n={row[f'{arm}_n']}): {on_means}; per seed: {per_seed}"


def _tasks(doc: Document, summary: pd.DataFrame, table: pd.DataFrame, main: dict, collected: Collected,
           out_dir: str) -> None:
    if summary.empty:
        return
    shown_files = varying(collected.runs, ["model", "rewind_point"])
    shown_labels = varying(collected.runs, ["schedule", "method"])
    dense = dense_stats(table, metric_columns(table))
    curves = summary[summary["branch"] != TRANSFER]
    for key, rows in curves.groupby(["task", "model", "rewind_point"], dropna=False, sort=True):
        facet = dict(zip(["task", "model", "rewind_point"], key))
        metrics = task_metric_list(facet["task"], main.get(facet["task"], ""), rows)
        if not metrics:
            continue
        doc.heading(f"Task {facet['task']}" + "".join(f", {_FILE_NAMES[c]} {facet[c]}"
                                                       for c in ["model", "rewind_point"] if c in shown_files))
        reference = dense[rows_where(dense, {c: facet[c] for c in DENSE_KEY})]
        ref = {}
        for m in metrics:
            if len(reference):
                n, mean, std = (reference.iloc[0][f"{m}_{s}"] for s in ("n", "mean", "std"))
                ref[m] = (int(n), mean, std, threshold(mean, std, m))
        series = {series_label(part.iloc[0], shown_labels): part
                  for _, part in rows.groupby(["method", "schedule", "branch"], dropna=False, sort=False)}
        title = f"{facet['task']}, model {facet['model']}, rewind {facet['rewind_point']}"
        if (rows["level"] >= 1).any():
            name = f"curves_{facet['task']}{suffix(facet, shown_files)}.png"
            sparsity_curves(series, ref, metrics, title, os.path.join(out_dir, name))
            doc.image(os.path.join(out_dir, name), f"{title}: {', '.join(metrics)} against sparsity; red line: "
                                                   "matching threshold")
        else:
            doc.text("Only the dense network (level 0) so far: no curve to draw.")
        doc.table(_level_table(rows, table, metrics, shown_labels, collected))


def _level_table(rows: pd.DataFrame, table: pd.DataFrame, metrics: list[str], shown: set[str],
                 collected: Collected) -> pd.DataFrame:
    out = []
    for _, row in rows.iterrows():
        entry = {"series": series_label(row, shown), "level": row["level"], "sparsity": percent(row["sparsity"]),
                 "seeds": f"{row['n']} of {row['seeds_expected']}" + (" (partial)" if row["partial"] else "")}
        entry.update({m: describe(row, m) for m in metrics})
        entry["runs"] = run_links(table[rows_where(table, {c: row[c] for c in KEY})], collected)
        out.append(entry)
    return pd.DataFrame(out)


def _transfer(doc: Document, transfer: pd.DataFrame, out_dir: str) -> None:
    doc.heading("Transfer")
    if transfer.empty:
        doc.text("The experiment has no transfer runs.")
        return
    doc.text("TRANSFER(S,T): the metric on task T of the mask found on task S. TRANSFER(T,T) comes from T's own IMP "
             "trajectories at the same level (column 'reference': none where T has none). Difference = difference of the means; its n and std come from per-seed differences "
             "over the seeds present on both sides. Full table: transfer.csv.")
    shown = varying(transfer, TRANSFER_GROUP)
    for key, rows in transfer[transfer["is_main"]].groupby(TRANSFER_GROUP, dropna=False, sort=True):
        facet = dict(zip(TRANSFER_GROUP, key))
        if len(rows) < 2:
            continue  # one source and one target: the table below says all a heatmap would
        name = f"transfer{suffix(facet, shown)}.png"
        title = (f"Transfer at level {facet['level']} (sparsity {percent(rows['sparsity'].mean())}), "
                 f"method {facet['method']}, rewind {facet['rewind_point']}")
        transfer_heatmap(rows, title, os.path.join(out_dir, name))
        doc.image(os.path.join(out_dir, name), f"{title}; blue: better than T's own mask, red: worse, white: equal")
    facets = [c for c in FACETS if c in shown]
    table = [{**{_FILE_NAMES[c] or c: r[c] for c in facets},
              "S": r["source_task"], "T": r["task"], "level": r["level"], "sparsity": percent(r["sparsity"]),
              "metric": r["metric"], "TRANSFER(S,T)": mean_std(r["transfer_mean"], r["transfer_std"], r["transfer_n"]),
              "TRANSFER(T,T)": mean_std(r["self_mean"], r["self_std"], r["self_n"]),
              "reference": r["self_source"] or "none",
              "difference": "–" if pd.isna(r["diff"]) else
              f"{r['diff']:+.4f} (std {r['diff_std']:.4f} over n={r['diff_n']} paired seeds)"
              if pd.notna(r["diff_std"]) else f"{r['diff']:+.4f} (n={r['diff_n']} paired seeds)"}
             for _, r in transfer.iterrows()]
    doc.table(pd.DataFrame(table))


def _structured(doc: Document, structured: pd.DataFrame) -> None:
    doc.heading("Structured subnetworks (attention heads and MLP blocks)")
    if structured.empty:
        doc.text("The experiment has no structured runs.")
        return
    doc.text("Per task: the full model fine-tuned in each seed's search, the good subnetwork the search kept "
             "(before retraining), and the good, random and bad subnetworks of the same size, each retrained from "
             "the pre-trained weights with the search's seed (Prasanna et al. 2020). Sparsity: of the prunable "
             "weights. Heads and MLPs: mean kept of total. Full table: structured.csv.")
    shown = varying(structured, ["model", "method"])
    rows = []
    for _, row in structured.iterrows():
        entry = {"task": row["task"], **{c: row[c] for c in ("model", "method") if c in shown},
                 "subnetwork": row["subnetwork"], "metric": row["metric"],
                 "value": mean_std(row["mean"], row["std"], row["n"])
                 + (f" [{row['min']:.4f}, {row['max']:.4f}]" if row["n"] else ""),
                 "sparsity": percent(row["sparsity"]),
                 "heads": f"{row['heads_kept']:.1f} of {row['heads_total']:.0f}" if pd.notna(row["heads_kept"]) else "?",
                 "MLPs": f"{row['mlps_kept']:.1f} of {row['mlps_total']:.0f}" if pd.notna(row["mlps_kept"]) else "?",
                 "partial": "partial" if row["partial"] else ""}
        rows.append(entry)
    doc.table(pd.DataFrame(rows))


def _masks(doc: Document, client, table: pd.DataFrame, out_dir: str, level: int | None,
           sparsity: float | None) -> list[str]:
    """The masks section; returns the tables it wrote."""
    doc.heading("Masks")
    chosen = choose_levels(table, level, sparsity)
    if chosen.empty:
        doc.text("No trajectory level to read masks from" + (f" at level {level}." if level is not None else
                                                              " (no pruned level finished yet)."))
        return []
    loaded = load_masks(client, chosen)
    loaded.layers.to_csv(os.path.join(out_dir, "layer_sparsity.csv"), index=False)
    loaded.overlap.to_csv(os.path.join(out_dir, "overlap.csv"), index=False)
    how = (f"level {level}" if level is not None else f"the level nearest {percent(sparsity)} sparsity"
           if sparsity is not None else "the deepest level every finished trajectory of the group reached")
    doc.text(f"Masks (artifacts `masks/level_XX.safetensors`) of the IMP trajectories at {how} "
             "(--overlap-level / --overlap-sparsity choose another). Tables: layer_sparsity.csv, overlap.csv.")
    if loaded.problems:
        doc.callout(f"Masks that could not be read ({len(loaded.problems)}):")
        doc.bullets(loaded.problems)
    shown = varying(loaded.chosen, MASK_GROUP)
    for key, runs in loaded.chosen.groupby(MASK_GROUP, dropna=False, sort=True):
        facet = dict(zip(MASK_GROUP, key))
        levels = ", ".join(str(v) for v in sorted(runs["level"].unique()))
        title = (f"IMP masks at level {levels} (sparsity {percent(runs['sparsity'].min())}"
                 + (f"-{percent(runs['sparsity'].max())}" if runs["sparsity"].nunique() > 1 else "")
                 + f"), method {facet['method']}, rewind {facet['rewind_point']}")
        doc.heading(title, 3)
        layers = loaded.layers[rows_where(loaded.layers, facet)]
        name = f"layer_sparsity{suffix(facet, shown)}.png"
        layer_sparsity(layers, title, os.path.join(out_dir, name))
        doc.image(os.path.join(out_dir, name), f"Per-layer sparsity: {title}")
        pairs = loaded.overlap[rows_where(loaded.overlap, facet)]
        if pairs.empty:
            doc.text("Only one mask: no overlap to compute.")
            continue
        for plot, stem, what in ((task_overlaps, "overlap_tasks", "between tasks"),
                                 (seed_overlaps, "overlap_seeds", "between seeds")):
            if stem == "overlap_seeds" and not (pairs["task_a"] == pairs["task_b"]).any():
                continue  # one seed per task: nothing between seeds
            if stem == "overlap_tasks" and pd.concat([pairs["task_a"], pairs["task_b"]]).nunique() < 2:
                continue  # one task: its diagonal is the between-seeds heatmap
            name = f"{stem}{suffix(facet, shown)}.png"
            plot(pairs, title, os.path.join(out_dir, name))
            doc.image(os.path.join(out_dir, name), f"Mask overlap (Jaccard) {what}: {title}")
        doc.table(_overlap_table(pairs))
    return ["layer_sparsity.csv", "overlap.csv"]


def _overlap_table(pairs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    tasks = pairs[["task_a", "task_b"]]
    ordered = pairs.assign(first=tasks.min(axis=1), second=tasks.max(axis=1))
    for (a, b), part in ordered.groupby(["first", "second"], sort=True):
        sparsity = pd.concat([part["sparsity_a"], part["sparsity_b"]]).mean()
        rows.append({"task A": a, "task B": b, "pairs": "different seeds" if a == b else "all seed pairs",
                     "Jaccard": mean_std(part["jaccard"].mean(), part["jaccard"].std(), len(part), 3)
                     + f" [{part['jaccard'].min():.3f}, {part['jaccard'].max():.3f}]",
                     "random masks": f"{random_jaccard(sparsity, sparsity):.3f}"})
    return pd.DataFrame(rows)
