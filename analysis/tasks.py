"""The dev metrics each task reports, and which metrics are better when lower, from the task registry of `tickets`."""

from __future__ import annotations

from tickets.tasks import LOWER_IS_BETTER, TASKS

TASK_METRICS: dict[str, tuple[str, ...]] = {name: task.metric_names for name, task in TASKS.items()}


def task_metrics(task: str, main_metric: str = "") -> tuple[str, ...]:
    """The task's standard dev metrics, main metric first (from the run's `main_metric` tag when it has one, else the
    registry's)."""
    known = TASKS.get(task)
    standard = (known.main_metric, *known.metric_names) if known else ()
    return tuple(dict.fromkeys(m for m in (main_metric, *standard) if m))


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    return metric not in LOWER_IS_BETTER
