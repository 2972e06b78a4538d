"""GLUE dev metrics from predictions and labels (scikit-learn and SciPy)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import Task

METRICS = {
    "accuracy": accuracy_score,
    "f1": f1_score,
    "mcc": matthews_corrcoef,
    "pearson": lambda labels, predictions: pearsonr(labels, predictions).statistic,
    "spearman": lambda labels, predictions: spearmanr(labels, predictions).statistic,
}


def compute_metrics(task: Task, split: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics on one eval split: class ids for classification, scores for regression.

    Metrics named after a split (MNLI's "matched_accuracy") are reported only for that split.
    """
    if task.kind == "mlm":
        raise ValueError("masked language modelling metrics come from token losses, not from compute_metrics")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"need as many predictions as labels, got {predictions.shape} and {labels.shape}")
    prefix = f"{split}_"
    names = [name for name in task.metric_names if name.startswith(prefix)] or list(task.metric_names)
    unknown = [name for name in names if name.removeprefix(prefix) not in METRICS]
    if unknown:
        raise ValueError(f"no metric {', '.join(unknown)} for task '{task.name}' split '{split}'")
    return {name: float(METRICS[name.removeprefix(prefix)](labels, predictions)) for name in names}
