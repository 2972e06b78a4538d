"""The dev metrics each task reports, and which metrics are better when lower (mirrors tickets.tasks)."""

from __future__ import annotations

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("matched_accuracy", "mismatched_accuracy"),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "mlm": ("masked_accuracy", "perplexity"),
}
LOWER_IS_BETTER = frozenset({"perplexity", "eval_loss"})


def task_metrics(task: str, main_metric: str = "") -> tuple[str, ...]:
    """The task's standard dev metrics, main metric first (from the run's `main_metric` tag when it has one)."""
    known = TASK_METRICS.get(task, ())
    first = main_metric or (known[0] if known else "")
    return tuple(dict.fromkeys(m for m in (first, *known) if m))


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    return metric not in LOWER_IS_BETTER
