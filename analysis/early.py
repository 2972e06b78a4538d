"""`python -m analysis early`: an early-stopped IMP sweep (tickets.early) against a full-IMP sweep of the same spec.

Per task (and model, schedule, method, rewind point): each level's mask-distance curve and the step at which it
stopped, the fine-tuning steps of the early search (its trajectories, level 0 and every stopped level included), of
its ticket evaluations (steps a ticket run trained itself: 0 where a level that trained to the end is its own ticket)
and of the full sweep's trajectories (their ratio is the headline), the sparsest matching level of each (DESIGN.md's
rule over seeds, analysis.matching), each level's ticket accuracy over seeds for both (early: the `ticket`,
`ticket-bisect` or `ticket-boundary` series; full: the IMP levels themselves), and the Jaccard overlap of the early and
the full mask of the same level and seed. With `ticket-boundary`, per seed: the boundary the search predicted, the one
its ticket trainings measured and full IMP's (the same per-seed rule), and how often the prediction hit; a level it did
not train to the end is counted as predicted and never given a ticket accuracy.

Sources, all through MLflow: the level records are the runs' `levels/level_XX.json` artifacts (each level's
metrics.json: `mask_distance`, `early_stop`, `steps`, `evaluation_steps`, `bisection`, `boundary`); masks are the
trajectory runs' `masks/level_XX.safetensors` artifacts, so the report needs no access to the sweeps' results stores.
"""

from __future__ import annotations

import json
import os
import tempfile

import pandas as pd

from cluster import conventions as C

from .collect import BISECTION, IMP, Collected, collect
from .document import Document
from .errors import AnalysisError
from .matching import find_matching
from .report import mean_std, percent, suffix, varying
from .stats import planned_seeds, summarise
from .tasks import higher_is_better

TICKET, BISECT, BOUNDARY = "ticket", BISECTION, "ticket-boundary"  # tickets.bisection's KIND and BOUNDARY
TICKET_SERIES = (TICKET, BISECT, BOUNDARY)
SEARCH_RECORDS = ("bisection", "boundary")  # where a ticket search's levels keep its record (tickets.bisection)
GROUP = ["task", "model", "schedule", "method", "rewind_point"]
PAIR = GROUP + ["seed"]


def write_early_report(client, experiment: str, against: str, out_dir: str) -> str:
    """Collect both experiments, write early.csv, early_seeds.csv, early_distances.csv, early_summary.csv, the
    distance plots and early.md / early.html into `out_dir`; return early.md's path."""
    os.makedirs(out_dir, exist_ok=True)
    early, full = collect(client, experiment), collect(client, against)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="analysis-early-") as tmp:
        records = level_records(client, early, (IMP, *TICKET_SERIES), tmp, problems)
        full_records = level_records(client, full, (IMP,), tmp, problems)
        seeds = seed_table(records, full_records, early.main_metrics())
        seeds = add_overlaps(client, seeds, records, full_records, tmp, problems)
    if not len(seeds):
        raise AnalysisError(f"experiment '{experiment}' has no finished early-stopped trajectory level to compare")
    distances = distance_table(records)
    levels = level_table(seeds)
    boundaries = boundary_table(records, full_records)
    summary = summary_table(seeds, early, full, boundaries)
    for name, frame in (("early", levels), ("early_seeds", seeds), ("early_distances", distances),
                        ("early_summary", summary), ("early_boundary", boundaries)):
        frame.to_csv(os.path.join(out_dir, f"{name}.csv"), index=False)
    doc = _document(experiment, against, summary, levels, seeds, distances, records, boundaries, problems, out_dir)
    path = os.path.join(out_dir, "early.md")
    with open(path, "w") as handle:
        handle.write(doc.to_markdown())
    with open(os.path.join(out_dir, "early.html"), "w") as handle:
        handle.write(doc.to_html())
    return path


def level_records(client, collected: Collected, branches: tuple[str, ...], tmp: str,
                  problems: list[str]) -> pd.DataFrame:
    """One row per committed level of the runs of `branches`: the run's tags (task, seed, ..., branch) and `record`,
    the level's metrics.json read from its artifact (None where it could not be read; the problem is noted)."""
    runs = collected.runs[collected.runs["branch"].isin(branches)]
    points = collected.points[["run_id", "level"]].merge(runs[["run_id", "branch", *PAIR]], on="run_id")
    rows = []
    for row in points.itertuples(index=False):
        artifact = C.level_artifact_path(int(row.level))
        try:
            path = client.download_artifacts(row.run_id, artifact, os.path.join(tmp, row.run_id))
            with open(path) as handle:
                record = json.load(handle)
        except Exception as exc:  # noqa: BLE001 - a missing level file is reported, not fatal
            problems.append(f"{collected.experiment}: run {row.run_id} {artifact}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            record = None
        rows.append({**row._asdict(), "record": record})
    frame = pd.DataFrame(rows, columns=["run_id", "level", "branch", *PAIR, "record"])
    return frame[frame["record"].notna()].reset_index(drop=True)


def seed_table(records: pd.DataFrame, full_records: pd.DataFrame, main_metrics: dict[str, str]) -> pd.DataFrame:
    """One row per (task, ..., seed, level) of the early trajectories: its stop, its steps and check seconds, its
    ticket's steps and main metric, and the full sweep's steps and main metric of the same level."""
    rows = []
    search = records[records["branch"] == IMP]
    tickets = {_key(r): r.record for r in records[records["branch"] != IMP].itertuples()}
    full = {_key(r): r.record for r in full_records.itertuples()}
    for r in search.itertuples():
        level, record = int(r.level), r.record
        metric = record.get("main_metric") or main_metrics.get(r.task, "")
        stop = record.get("early_stop") or {}
        ticket = tickets.get(_key(r))
        if ticket is None and level == 0:
            ticket = record  # the dense level trains to the end: it is its own reference
        reference = full.get(_key(r))
        rows.append({
            **{c: getattr(r, c) for c in PAIR}, "level": level, "sparsity": record["sparsity"], "metric": metric,
            "run_id": r.run_id, "stopped_at_step": stop.get("stopped_at_step"),
            "converged_at_step": stop.get("converged_at_step"), "may_stop": stop.get("may_stop"),
            "search_steps": record["steps"], "mask_check_s": record.get("mask_check_s"),
            "wall_time_s": record["wall_time_s"],
            "search_metric": record["metrics"].get(metric),
            "ticket_evaluated": None if ticket is None else ticket.get("evaluated", True),
            "ticket_predicted": ticket is not None and bool(ticket.get("predicted")),
            "evaluation_steps": _evaluation_steps(ticket, level),
            "ticket_metric": None if ticket is None else ticket["metrics"].get(metric),
            "full_steps": None if reference is None else reference["steps"],
            "full_metric": None if reference is None else reference["metrics"].get(metric),
        })
    columns = [*PAIR, "level", "sparsity", "metric", "run_id", "stopped_at_step", "converged_at_step", "may_stop",
               "search_steps", "mask_check_s", "wall_time_s", "search_metric", "ticket_evaluated", "ticket_predicted",
               "evaluation_steps", "ticket_metric",
               "full_steps", "full_metric"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(PAIR + ["level"], kind="stable").reset_index(drop=True)


def _key(row) -> tuple:
    return (*(getattr(row, c) for c in PAIR), int(row.level))


def _evaluation_steps(ticket: dict | None, level: int) -> int:
    """Steps a ticket evaluation trained itself (0 for level 0, a taken result, an unevaluated bisection level)."""
    if ticket is None or level == 0:
        return 0
    return int(ticket.get("evaluation_steps", ticket["steps"]))


def add_overlaps(client, seeds: pd.DataFrame, records: pd.DataFrame, full_records: pd.DataFrame, tmp: str,
                 problems: list[str]) -> pd.DataFrame:
    """`seeds` with the Jaccard overlap and Hamming distance of the early and the full trajectory's mask of each pruned
    level (from the runs' mask artifacts)."""
    from tickets.masks import Mask, overlap

    full_runs = {(*(getattr(r, c) for c in PAIR), int(r.level)): r.run_id
                 for r in full_records.itertuples()}
    jaccard, hamming = [], []
    for row in seeds.itertuples():
        other = full_runs.get((*(getattr(row, c) for c in PAIR), row.level))
        if row.level == 0 or other is None:
            jaccard.append(None)
            hamming.append(None)
            continue
        artifact = C.mask_artifact_path(int(row.level))
        try:
            masks = [Mask.load(client.download_artifacts(run, artifact, os.path.join(tmp, "masks", run)))
                     for run in (row.run_id, other)]
            found = overlap(*masks)
        except Exception as exc:  # noqa: BLE001 - an unreadable mask is reported, not fatal
            problems.append(f"{row.task} seed {row.seed} level {row.level}: {artifact}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            found = {"jaccard": None, "hamming": None}
        jaccard.append(found["jaccard"])
        hamming.append(found["hamming"])
    return seeds.assign(jaccard=jaccard, hamming=hamming)


def distance_table(records: pd.DataFrame) -> pd.DataFrame:
    """Every mask-distance point of the early trajectories: (task, ..., seed, level, step, distance)."""
    rows = [{**{c: getattr(r, c) for c in PAIR}, "level": int(r.level), "step": point["step"],
             "distance": point["distance"]}
            for r in records[records["branch"] == IMP].itertuples() for point in r.record.get("mask_distance") or []]
    return pd.DataFrame(rows, columns=[*PAIR, "level", "step", "distance"])


def level_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, ..., level): seeds, how many stopped and where, the steps of each kind summed over seeds,
    the ticket's and the full level's main metric (n, mean, std over seeds) and the mask overlap (mean, min, max)."""
    rows = []
    for key, group in seeds.groupby(GROUP + ["level"], dropna=False, sort=True):
        stopped = pd.to_numeric(group["stopped_at_step"], errors="coerce").dropna()
        row = dict(zip(GROUP + ["level"], key))
        row.update(sparsity=group["sparsity"].mean(), metric=group["metric"].iloc[0], seeds=len(group),
                   stopped=len(stopped), stop_step_mean=stopped.mean() if len(stopped) else None,
                   stop_step_min=stopped.min() if len(stopped) else None,
                   stop_step_max=stopped.max() if len(stopped) else None,
                   search_steps=int(group["search_steps"].sum()), evaluation_steps=int(group["evaluation_steps"].sum()),
                   full_steps=_total(group["full_steps"]), predicted=int(group["ticket_predicted"].sum()))
        for which in ("search", "ticket", "full"):
            values = pd.to_numeric(group[f"{which}_metric"], errors="coerce").dropna()
            row.update({f"{which}_n": len(values), f"{which}_mean": values.mean() if len(values) else None,
                        f"{which}_std": values.std() if len(values) > 1 else None})
        overlaps = pd.to_numeric(group["jaccard"], errors="coerce").dropna()
        row.update(jaccard_n=len(overlaps), jaccard_mean=overlaps.mean() if len(overlaps) else None,
                   jaccard_min=overlaps.min() if len(overlaps) else None,
                   jaccard_max=overlaps.max() if len(overlaps) else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _total(values: pd.Series) -> int | None:
    numbers = pd.to_numeric(values, errors="coerce")
    return None if numbers.isna().any() else int(numbers.sum())


def boundary_table(records: pd.DataFrame, full_records: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, ..., seed) of a `ticket-boundary` search: the sparsest matching level it predicted, the one
    its ticket trainings measured, full IMP's by the same per-seed rule (the last level before the first whose metric
    falls below the seed's dense metric minus the tolerance), the levels it trained to the end, and whether the
    prediction and the measured boundary equal full IMP's (exactly, and within one level)."""
    columns = [*PAIR, "tolerance", "predicted_level", "measured_level", "full_level", "levels_evaluated",
               "predicted_hit", "predicted_within_one", "measured_hit", "measured_within_one"]
    full = {}
    for r in full_records.itertuples():
        full.setdefault(tuple(getattr(r, c) for c in PAIR), {})[int(r.level)] = r.record
    rows, seen = [], set()
    for r in records[records["branch"] == BOUNDARY].itertuples():
        record, key = r.record.get("boundary"), tuple(getattr(r, c) for c in PAIR)
        if not record or key in seen:
            continue
        seen.add(key)
        level = _per_seed_boundary(full.get(key, {}), record)
        predicted, measured = record["predicted_sparsest_matching_level"], record["sparsest_matching_level"] or 0
        rows.append({**dict(zip(PAIR, key)), "tolerance": record["tolerance"], "predicted_level": predicted,
                     "measured_level": measured, "full_level": level,
                     "levels_evaluated": ",".join(map(str, record["levels_evaluated"])),
                     "predicted_hit": None if level is None else predicted == level,
                     "predicted_within_one": None if level is None else abs(predicted - level) <= 1,
                     "measured_hit": None if level is None else measured == level,
                     "measured_within_one": None if level is None else abs(measured - level) <= 1})
    return pd.DataFrame(rows, columns=columns).sort_values(PAIR, kind="stable").reset_index(drop=True)


def _per_seed_boundary(levels: dict[int, dict], record: dict) -> int | None:
    """Full IMP's sparsest matching level of one seed by a boundary record's rule (None without its dense level)."""
    if 0 not in levels:
        return None
    metric, tolerance = record["main_metric"], record["tolerance"]
    lower = not higher_is_better(metric)
    threshold = levels[0]["metrics"][metric] + (tolerance if lower else -tolerance)
    boundary = 0
    for level in sorted(lv for lv in levels if lv > 0):
        value = levels[level]["metrics"].get(metric)
        if value is None or (value > threshold if lower else value < threshold):
            break
        boundary = level
    return boundary


def summary_table(seeds: pd.DataFrame, early: Collected, full: Collected, boundaries: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, ...): the steps of the search, of the ticket evaluations and of the full sweep, their
    ratio (the headline), the checks' share of the search's level time, the sparsest matching level of the
    early tickets and of full IMP (DESIGN.md's rule over seeds), and with a boundary search how often its predicted
    and its measured per-seed boundary equal full IMP's."""
    matches = {"early": _matching(early, TICKET_SERIES), "full": _matching(full, (IMP,))}
    rows = []
    for key, group in seeds.groupby(GROUP, dropna=False, sort=True):
        info = dict(zip(GROUP, key))
        search, evaluation = int(group["search_steps"].sum()), int(group["evaluation_steps"].sum())
        full_steps = _total(group["full_steps"])
        checked = group[pd.to_numeric(group["mask_check_s"], errors="coerce").notna()]
        row = {**info, "seeds": group["seed"].nunique(), "search_steps": search, "evaluation_steps": evaluation,
               "early_steps": search + evaluation, "full_steps": full_steps,
               "steps_ratio": (search + evaluation) / full_steps if full_steps else None,
               "search_ratio": search / full_steps if full_steps else None,
               "mask_check_share": checked["mask_check_s"].sum() / checked["wall_time_s"].sum()
               if len(checked) else None,
               "mask_check_share_max": (checked["mask_check_s"] / checked["wall_time_s"]).max()
               if len(checked) else None}
        mine = _of_group(boundaries, info)
        for column in ("predicted_hit", "predicted_within_one", "measured_hit", "measured_within_one"):
            judged = mine[column].dropna() if len(mine) else mine
            row[f"boundary_{column}_rate"] = judged.astype(bool).mean() if len(judged) else None
        row["boundary_seeds"] = len(mine)
        for which, found in matches.items():
            hit = found.get(tuple(info[c] for c in GROUP), {})
            row.update({f"{which}_matching_level": hit.get("matching_level"),
                        f"{which}_matching_sparsity": hit.get("matching_sparsity"),
                        f"{which}_matching_mean": hit.get("matching_mean"),
                        f"{which}_matching_std": hit.get("matching_std"),
                        f"{which}_matching_n": hit.get("matching_n"),
                        f"{which}_threshold": hit.get("threshold"),
                        f"{which}_matching_note": hit.get("matching_note", "")})
        rows.append(row)
    return pd.DataFrame(rows)


def _matching(collected: Collected, branches: tuple[str, ...]) -> dict[tuple, dict]:
    """(task, model, schedule, method, rewind point) -> the main-metric matching row of its series of `branches`
    (judged against the experiment's own dense level 0; mask-distance curves left out of the metrics)."""
    table = collected.table()
    table = table.drop(columns=[c for c in table.columns if c.startswith(C.METRIC_MASK_DISTANCE_PREFIX)])
    if table.empty:
        return {}
    summary = summarise(table, planned_seeds(collected.runs))
    found = find_matching(summary, table, collected.main_metrics())
    found = found[found["is_main"] & found["branch"].isin(branches)]
    return {tuple(row[c] for c in GROUP): row.to_dict() for _, row in found.iterrows()}


def _document(experiment: str, against: str, summary: pd.DataFrame, levels: pd.DataFrame, seeds: pd.DataFrame,
              distances: pd.DataFrame, records: pd.DataFrame, boundaries: pd.DataFrame, problems: list[str],
              out_dir: str) -> Document:
    doc = Document(f"Early tickets: {experiment} against full IMP {against}")
    doc.text("Early search: every pruned level stops once the mask of its next level has converged (Early-Bird: the "
             "last `window` normalised Hamming distances between masks drawn every `check_every` steps are all <= "
             "`threshold`); level 0 trains to the end. A stopped level's accuracy is not its ticket's: each ticket is "
             "trained to the end from theta_i with its mask. Steps: search = every level of the early trajectories; "
             "evaluations = what ticket runs trained themselves (a level that trained to the end is its own ticket: "
             "0); full = every level of the full sweep's trajectories. Matching: mean over seeds >= dense mean - "
             "dense std, each experiment against its own level 0.")
    rules = _search_records(records, BISECT)
    if rules:
        doc.callout("Bisection over levels: " + rules[0]["assumption"] + ". Levels it did not evaluate are "
                    "inferred from that assumption and have no ticket accuracy.")
    predicted = _search_records(records, BOUNDARY)
    if predicted:
        doc.callout("PREDICTED, NOT MEASURED: the boundary search trains to the end only the level its prediction "
                    "names as the sparsest matching one and the next sparser one (bisecting the levels on the side a "
                    "verdict points to where it contradicts the prediction). Prediction: " + predicted[0]["predictor"] + ". "
                    "Every other level's verdict is predicted (column `predicted`) and has no ticket accuracy; "
                    "the search column is the dev metric where a level stopped, not its ticket's.")
    for problem in problems:
        doc.callout(f"missing: {problem}")
    shown = varying(summary, GROUP[1:])
    for _, row in summary.iterrows():
        info = {c: row[c] for c in GROUP}
        doc.heading(f"{row['task']}" + "".join(f", {c} {row[c]}" for c in GROUP[1:] if c in shown))
        ratio = "?" if pd.isna(row["steps_ratio"]) else f"{row['steps_ratio']:.2f}"
        doc.callout(f"fine-tuning steps: early {row['early_steps']:,} (search {row['search_steps']:,} + ticket "
                    f"evaluations {row['evaluation_steps']:,}) vs full IMP {_count(row['full_steps'])}: ratio {ratio} "
                    f"(search alone {_ratio(row['search_ratio'])}); over {row['seeds']} seeds")
        doc.bullets([
            f"sparsest matching level, early tickets: {_matching_text(row, 'early')}",
            f"sparsest matching level, full IMP: {_matching_text(row, 'full')}",
            *([f"boundary per seed (last level before the first below the seed's dense metric - tolerance): "
               f"predicted = full IMP's in {_rate(row['boundary_predicted_hit_rate'])} of "
               f"{row['boundary_seeds']} seeds ({_rate(row['boundary_predicted_within_one_rate'])} within one level); "
               f"measured = full IMP's in {_rate(row['boundary_measured_hit_rate'])} "
               f"({_rate(row['boundary_measured_within_one_rate'])} within one level)"]
              if row.get("boundary_seeds") else []),
            f"mask checks: {_share(row['mask_check_share'])} of the search levels' time "
            f"(worst level {_share(row['mask_check_share_max'])})",
        ])
        rows = _of_group(levels, info)
        doc.table(_level_view(rows))
        curves, stops = _of_group(distances, info), _of_group(seeds, info)
        if len(curves):
            rule = _rule(records, info)
            name = f"early_distances_{row['task']}{suffix(info, shown)}.png"
            path = distance_plot(curves, stops, rule, f"{row['task']}: distance of the next level's mask between "
                                                      "consecutive checks", os.path.join(out_dir, name))
            doc.image(path, "one line per level (mean over seeds; thin: each seed); x: where a level stopped; "
                            "dashed: the fixed threshold, dotted: a relative rule's threshold per level")
        mine = _of_group(boundaries, info)
        if len(mine):
            doc.text("Boundary, per seed: predicted from the search, measured by its ticket trainings, and full "
                     "IMP's by the same rule.")
            doc.table(mine[["seed", "predicted_level", "measured_level", "full_level", "levels_evaluated",
                            "predicted_hit", "measured_hit"]].reset_index(drop=True))
        for kind, what in ((BISECT, "Bisection"), (BOUNDARY, "Boundary search")):
            judged = _search_view(records, info, kind)
            if len(judged):
                doc.text(f"{what}, per seed: the levels trained to the end in order, and why.")
                doc.table(judged)
    doc.heading("Files")
    doc.bullets(["early_summary.csv", "early.csv", "early_seeds.csv", "early_distances.csv", "early_boundary.csv"]
                + [os.path.basename(block[1]) for block in doc.blocks if block[0] == "image"])
    return doc


def distance_plot(curves: pd.DataFrame, stops: pd.DataFrame, rule: dict, title: str, path: str) -> str:
    """One line per level: the mean mask distance over seeds by training step (thin lines: each seed), an x where a
    seed's level stopped, the fixed threshold dashed or, with a relative rule, each level's own threshold dotted
    (symmetric-log y axis: distances span orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for index, (level, rows) in enumerate(curves.groupby("level", sort=True)):
        color = f"C{index % 10}"
        for _, one in rows.groupby("seed"):
            ax.plot(one["step"], one["distance"], color=color, lw=0.7, alpha=0.35)
        mean = rows.groupby("step")["distance"].mean()
        ax.plot(mean.index, mean.values, color=color, lw=2, label=f"level {level}")
        stopped = stops[(stops["level"] == level) & pd.to_numeric(stops["stopped_at_step"], errors="coerce").notna()]
        for stop in stopped.itertuples():
            at = rows[(rows["seed"] == stop.seed) & (rows["step"] == stop.stopped_at_step)]["distance"]
            ax.plot([stop.stopped_at_step], at.iloc[:1], ls="none", marker="x", ms=9, color=color)
        if rule.get("relative"):  # each level's own threshold: a fraction of its first distance (mean over seeds)
            first = rows.sort_values("step").groupby("seed")["distance"].first()
            ax.axhline(rule["relative"] * first.mean(), ls=":", lw=1, color=color)
    if rule.get("relative"):
        ax.plot([], [], ls=":", color="0.3", label=f"threshold {rule['relative']:g} x first distance "
                                                   f"(window {rule.get('window')})")
    elif rule.get("threshold") is not None:
        ax.axhline(rule["threshold"], ls="--", color="0.3",
                   label=f"threshold {rule['threshold']:g} (window {rule.get('window')})")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("training step of the level")
    ax.set_ylabel("normalised Hamming distance")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _level_view(rows: pd.DataFrame) -> pd.DataFrame:
    view = pd.DataFrame({
        "level": rows["level"], "sparsity": rows["sparsity"].map(percent),
        "stopped": [f"{s}/{n}" for s, n in zip(rows["stopped"], rows["seeds"])],
        "stop step": [_range(a, b, c) for a, b, c in zip(rows["stop_step_mean"], rows["stop_step_min"],
                                                         rows["stop_step_max"])],
        "search steps": rows["search_steps"], "evaluation steps": rows["evaluation_steps"],
        "full steps": rows["full_steps"],
        "search (at stop)": [mean_std(m, s, n) for m, s, n in zip(rows["search_mean"], rows["search_std"],
                                                                  rows["search_n"])],
        "predicted": [f"{p}/{n}" for p, n in zip(rows["predicted"], rows["seeds"])],
        "early ticket": [mean_std(m, s, n) for m, s, n in zip(rows["ticket_mean"], rows["ticket_std"],
                                                              rows["ticket_n"])],
        "full IMP": [mean_std(m, s, n) for m, s, n in zip(rows["full_mean"], rows["full_std"], rows["full_n"])],
        "Jaccard early/full": [_range(a, b, c, digits=3) for a, b, c in zip(rows["jaccard_mean"], rows["jaccard_min"],
                                                                             rows["jaccard_max"])],
    })
    return view.reset_index(drop=True)


def _range(mean, low, high, digits: int = 0) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _count(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{int(value):,}"


def _ratio(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{value:.2f}"


def _rate(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{100 * value:.0f}%"


def _share(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{100 * value:.2f}%"


def _matching_text(row: pd.Series, which: str) -> str:
    level = row[f"{which}_matching_level"]
    note = row[f"{which}_matching_note"]
    if level is None or pd.isna(level):
        return f"none ({note})" if note else "none"
    threshold = row[f"{which}_threshold"]
    return (f"level {int(level)} ({percent(row[f'{which}_matching_sparsity'])}), "
            f"{mean_std(row[f'{which}_matching_mean'], row[f'{which}_matching_std'], row[f'{which}_matching_n'])}"
            f" against threshold {threshold:.4f}")


def _rule(records: pd.DataFrame, info: dict) -> dict:
    """The early-stop settings the group's levels recorded (window, threshold, check_every)."""
    mine = _of_group(records, info)
    for r in mine[mine["branch"] == IMP].itertuples():
        if r.record.get("early_stop"):
            return r.record["early_stop"]
    return {}


def _of_group(frame: pd.DataFrame, info: dict) -> pd.DataFrame:
    """The rows of `frame` in the group `info` (task, model, schedule, method, rewind point)."""
    return frame[(frame[GROUP] == pd.Series(info)).all(axis=1)] if len(frame) else frame


def _search_record(record: dict) -> dict | None:
    """The ticket search's own record a level carries (`bisection` or `boundary`), None for other levels."""
    return next((record[name] for name in SEARCH_RECORDS if record.get(name)), None)


def _search_records(records: pd.DataFrame, kind: str) -> list[dict]:
    """The records of the ticket searches of series `kind`, one per level row."""
    return [found for r in records[records["branch"] == kind].itertuples() if (found := _search_record(r.record))]


def _search_view(records: pd.DataFrame, info: dict, kind: str) -> pd.DataFrame:
    """Per seed of the group: each level a ticket search of `kind` judged, in order, with its verdict and reason."""
    rows, seen = [], set()
    mine = _of_group(records, info)
    for r in mine[mine["branch"] == kind].itertuples():
        record = _search_record(r.record)
        if not record or r.seed in seen:
            continue
        seen.add(r.seed)
        for order, step in enumerate(record["trace"], 1):
            rows.append({"seed": r.seed, "order": order, "level": step["level"],
                         "matches": "yes" if step["matches"] else "no", "reason": step["reason"],
                         "sparsest matching": _level_text(record["sparsest_matching_level"])})
    frame = pd.DataFrame(rows, columns=["seed", "order", "level", "matches", "reason", "sparsest matching"])
    return frame.sort_values(["seed", "order"], kind="stable").reset_index(drop=True)


def _level_text(level: int | None) -> str:
    return "none" if level is None else str(level)
