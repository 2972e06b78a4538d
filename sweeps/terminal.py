"""What the CLI prints: the dry-run trial table, count and cost table, and the end-of-sweep summary."""

from __future__ import annotations

import shlex
from collections import Counter

from rich.console import Console
from rich.table import Table

from cluster.tracking import ui_command

from .cost import Estimate
from .plan import Piece
from .result import SweepResult
from .sizes import LOCAL
from .spec import Spec
from .store import ResultsStore


def trial_table(spec: Spec, pieces: list[Piece], held: dict[str, int]) -> Table:
    """One row per trial with its content key and how many of its runs the results store already holds (`held`)."""
    table = Table(title=f"sweep {spec.name}: trials", box=None, header_style="bold")
    for column in ("#", "kind", "task", "seed", "rewind", "method", "level", "sparsity", "content key", "finished"):
        table.add_column(column, no_wrap=True)
    for index, piece in enumerate(pieces, 1):
        cfg = piece.recipe
        method = cfg.method
        if piece.is_trajectory:
            level, sparsity = f"0-{cfg.levels}", f"0-{spec.level_sparsity(cfg.levels):.3g}"
            task = cfg.task
        elif piece.is_chain:
            level, sparsity = f"1-{cfg.levels}", f"{spec.level_sparsity(1):.3g}-{spec.level_sparsity(cfg.levels):.3g}"
            task = cfg.task
        elif piece.is_structured:
            level, sparsity, task, method = "0", "searched", cfg.task, piece.options["strategy"]
        else:
            level, sparsity = str(piece.level), f"{spec.level_sparsity(piece.level):.3g}"
            task = cfg.task if piece.kind != "transfer" else f"{piece.source_task}->{cfg.task}"
        done = held.get(piece.key, 0)
        finished = f"{done}/{len(piece.levels)}" if done else "-"
        table.add_row(str(index), piece.kind, task, str(cfg.seed), piece.rewind_label, method, level, sparsity,
                      piece.key, finished)
    return table


def count_line(spec: Spec, pieces: list[Piece]) -> str:
    """The trial count by kind, and how many fine-tuning runs that is."""
    kinds = Counter(p.kind for p in pieces)
    runs = sum(len(p.levels) for p in pieces)
    parts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    levels = f"; levels 0-{spec.last_level} per trajectory" if spec.pruning is not None else ""
    return f"{len(pieces)} trials ({parts}); {runs} fine-tuning runs{levels}"


def cost_table(name: str, estimate: Estimate) -> Table:
    """Per task and in total: trials, fine-tuning runs and optimizer steps with how many the store holds, and the
    device-hours still to run."""
    table = Table(title=f"sweep {name}: cost on {estimate.device.name}", box=None, header_style="bold")
    for column in ("task", "train rows", "trials", "runs", "held", "optimizer steps", "held", "device-hours to run"):
        table.add_column(column, no_wrap=True, justify="left" if column == "task" else "right")
    for cost in estimate.tasks:
        rows = f"{cost.size.train_rows:,}" + ("" if cost.size.source == LOCAL else f" ({cost.size.source})")
        table.add_row(cost.task, rows, *_cost_cells(cost.trials, cost.runs, cost.runs_held, cost.steps,
                                                    cost.steps_held, cost.hours))
    totals = [estimate.total(name) for name in ("trials", "runs", "runs_held", "steps", "steps_held", "hours")]
    table.add_row("total", "", *_cost_cells(*totals), style="bold")
    return table


def _cost_cells(trials, runs, runs_held, steps, steps_held, hours) -> list[str]:
    return [f"{trials:,}", f"{runs:,}", f"{runs_held:,}", f"{steps:,}", f"{steps_held:,}",
            _hours(hours)]


def _hours(hours: float | None) -> str:
    return "?" if hours is None else f"{hours:,.1f}" if hours >= 1 else f"{hours:.2f}"


def cost_lines(estimate: Estimate) -> list[str]:
    """What the estimate rests on, one line each, after the device-hours already held (and the whole sweep's)."""
    held, rest = estimate.total("hours_held"), estimate.total("hours")
    lines = []
    if held is not None and rest is not None:
        lines.append(f"device-hours: {_hours(rest)} to run, {_hours(held)} held (results the store already has: "
                     f"not run again), {_hours(held + rest)} for the whole sweep")
    lines += [f"estimate: {line}" for line in estimate.basis]
    return lines


def unevaluated_text(metrics: dict) -> str:
    """What the summary shows for a level whose ticket was not trained to the end."""
    if metrics.get("predicted"):
        return f"predicted {'match' if metrics['matches'] else 'no match'} (not evaluated)"
    return "not evaluated"


def results_table(result: SweepResult, limit: int = 40) -> Table | None:
    """The main dev metric of every finished level and branch; for a level a ticket search did not train to the end,
    its verdict marked as predicted (boundary) or "not evaluated" (bisection), never a value (None for sweeps of more
    than `limit` trials)."""
    if len(result.pieces) > limit:
        return None
    store = ResultsStore(result.storage)
    table = Table(title=f"sweep {result.name}: results", box=None, header_style="bold")
    for column in ("trial", "level", "sparsity", "metric", "value"):
        table.add_column(column, no_wrap=True)
    for piece in result.pieces:
        for level in store.finished_levels(piece):
            metrics = store.level_metrics(piece, level)
            name = metrics["main_metric"]
            evaluated = metrics.get("evaluated") is not False
            shown = f"{metrics['metrics'][name]:.4f}" if evaluated else unevaluated_text(metrics)
            table.add_row(piece.name, str(level), f"{metrics['sparsity']:.3f}", name, shown)
    return table


def print_summary(console: Console, result: SweepResult) -> None:
    """The results, where they are, how to open them, how many trials ran at once on how many nodes, and what a
    stop signal left unfinished."""
    table = results_table(result)
    if table is not None:
        console.print(table)
    trained = f"{result.levels_trained} level/branch runs trained"
    if result.trials:
        lost = f", {result.node_losses} after a lost node" if result.node_losses else ""
        trained += f" in {result.trials} trials ({result.retries} retries{lost}) on {len(result.nodes)} node(s)"
    console.print(f"\nsweep {result.name}: {len(result.complete)}/{len(result.pieces)} trials complete; {trained}; "
                  f"{result.levels_logged} levels logged to MLflow now")
    if result.mean_trials is not None:
        console.print(f"wall {result.wall_s:.0f} s; trials at once: at most {result.peak_trials}, "
                      f"{result.mean_trials:.1f} on average ({result.busy_s:.0f} s of trials over "
                      f"{result.wall_s:.0f} s; training itself {result.train_s:.0f} s)")
    if result.superseded or result.stale:
        console.print(f"[yellow]stale[/]: {result.superseded} results trained again because the mask or rewind "
                      f"point they were trained from had changed (found stale at the start: "
                      f"{', '.join(result.stale) or 'none'}); the old ones are kept in a `superseded/` folder "
                      "beside the new")
    if result.stopped_by:
        console.print(f"[yellow]stopped[/] by {result.stopped_by}: finished levels are kept; the MLflow runs of "
                      "unfinished series are KILLED")
    for name in result.failed:
        console.print(f"[red]incomplete[/]: {name} (re-run the same spec to resume it)")
    console.print(f"results: {result.storage}/results/<content key>/ (masks and metrics.json per level)")
    console.print(f"MLflow: experiment '{result.name}' at {result.tracking_uri}")
    console.print(f"open it: {ui_command(result.tracking_uri)}")
    if result.view_url:
        console.print(f"IMP vs baselines by sparsity (runs grouped by series, mean over seeds): {result.view_url}",
                      soft_wrap=True, markup=False)
    console.print(f"report: {report_command(result)}", soft_wrap=True, markup=False)


def report_command(result: SweepResult) -> str:
    """The `python -m analysis report` command that turns this sweep's MLflow runs into its report."""
    return (f"python -m analysis report --experiment {shlex.quote(result.name)} "
            f"--tracking-uri {shlex.quote(result.tracking_uri)} --out {shlex.quote('reports/' + result.name)}")
