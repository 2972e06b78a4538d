"""Dev metrics from predictions and labels, as the task's kind computes them."""

from __future__ import annotations

from .tasks import Task, get_kind


def compute_metrics(task: Task, split: str, predictions, labels) -> dict[str, float]:
    """The task's metrics on one eval split (class ids for classification, scores for regression, answer texts for
    question answering). Metrics named after a split (MNLI's "matched_accuracy") are reported only for that split."""
    return get_kind(task.kind).compute_metrics(task, split, predictions, labels)
