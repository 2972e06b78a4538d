"""The sweep itself in MLflow: the experiment's description and one run (run_kind=sweep) holding the spec and the
plan as artifacts, to which `python -m analysis report` adds the report. It is not the parent of the series runs:
MLflow's runs table and charts fold child runs under their parent, which would hide the series to compare."""

from __future__ import annotations

import csv
import io
import time

from cluster import conventions as cv
from tickets.models import DEFAULT_MODEL

from .plan import Piece
from .series import group_series, level_sparsity
from .spec import Spec

PLAN_COLUMNS = ("trial", "kind", "series", "run_name", "task", "source_task", "seed", "rewind", "level", "sparsity",
                "content_key", "series_key")


def description(spec: Spec, plan: list[Piece]) -> str:
    """What the sweep is, in a few Markdown lines (the experiment description in the MLflow UI)."""
    parts = [f"**Sweep `{spec.name}`**: model {spec.model or DEFAULT_MODEL}; tasks {', '.join(spec.tasks)}; "
             f"seeds {', '.join(map(str, spec.seeds))}."]
    if spec.pruning is not None:
        p = spec.pruning
        parts.append(f"IMP ({', '.join(p.method)}, rate {p.rate:g}, schedule {p.schedule}) to "
                     f"{spec.level_sparsity(spec.last_level):.0%} sparsity over {spec.last_level} levels, rewind "
                     f"{', '.join(map(str, p.rewind))}.")
    if spec.branches:
        parts.append(f"Baselines at their levels: {', '.join(b.label for b in spec.branches)}.")
    if spec.transfer:
        pairs = "; ".join(f"{', '.join(t.sources)} -> {', '.join(t.targets)} at {t.sparsity:.0%}" for t in spec.transfer)
        parts.append(f"Transfer: {pairs}.")
    if spec.structured is not None:
        parts.append(f"Structured subnetworks: {', '.join(spec.structured.subnetworks)}.")
    fine_tunings = sum(len(piece.levels) for piece in plan)
    parts.append(f"{len(plan)} trials, {fine_tunings} fine-tunings. Each run is one series (tag `series`: imp, "
                 "random-prune, ...) of one task x seed x rewind, its levels as steps and `sparsity` as a metric. "
                 f"The spec and the plan are artifacts of the run `sweep {spec.name}`; "
                 f"`python -m analysis report --experiment {spec.name}` adds its report there.")
    return "\n\n".join(parts)


def plan_csv(plan: list[Piece]) -> str:
    """The plan as CSV: one row per trial and level, with the series (run) it logs to."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PLAN_COLUMNS)
    writer.writeheader()
    for series in group_series(plan):
        for piece in series.pieces:
            for level in piece.levels:
                sparsity = "" if piece.is_structured or (level == 0 and not piece.is_trajectory) else \
                    level_sparsity(piece, level, 0.0)
                writer.writerow({
                    "trial": piece.name, "kind": piece.kind, "series": series.label, "run_name": series.name,
                    "task": piece.recipe.task, "source_task": piece.source_task or "", "seed": piece.recipe.seed,
                    "rewind": piece.rewind_label, "level": level, "sparsity": sparsity, "content_key": piece.key,
                    "series_key": series.key,
                })
    return out.getvalue()


def open_sweep_run(client, experiment_id: str, spec: Spec, spec_text: str, plan: list[Piece]) -> str:
    """The sweep's run (found by run kind, created when missing), marked RUNNING, with the spec and plan logged and
    the experiment description set."""
    client.set_experiment_tag(experiment_id, cv.EXPERIMENT_TAG_DESCRIPTION, description(spec, plan))
    found = client.search_runs([experiment_id], filter_string=f"tags.{cv.TAG_RUN_KIND} = '{cv.RUN_KIND_SWEEP}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {cv.TAG_RUN_KIND: cv.RUN_KIND_SWEEP, "mlflow.runName": f"sweep {spec.name}"}
        run_id = client.create_run(experiment_id, start_time=int(time.time() * 1000), tags=tags,
                                   run_name=f"sweep {spec.name}").info.run_id
    client.log_text(run_id, spec_text, cv.SPEC_ARTIFACT)
    client.log_text(run_id, plan_csv(plan), cv.PLAN_ARTIFACT)
    return run_id


def close_sweep_run(client, run_id: str, complete: bool, stopped: bool = False) -> None:
    """End the sweep's run: FINISHED when every trial is complete, else KILLED when a stop signal ended the sweep,
    else FAILED."""
    status = "FINISHED" if complete else "KILLED" if stopped else "FAILED"
    client.set_terminated(run_id, status, end_time=int(time.time() * 1000))

