"""Sentence-pair regression (GLUE's STS-B): a fresh one-output head trained on squared error, scored by Pearson and
Spearman correlation."""

from __future__ import annotations

import math

import torch
from scipy.stats import pearsonr, spearmanr

from .glue import GlueKind
from .task import Task


class RegressionKind(GlueKind):
    """Float scores in the files; the prediction is the single output."""

    label_dtype = torch.float32
    metrics = {
        "pearson": lambda labels, predictions: pearsonr(labels, predictions).statistic,
        "spearman": lambda labels, predictions: spearmanr(labels, predictions).statistic,
    }

    def configure(self, config, num_labels: int) -> None:
        """A head of `num_labels` outputs trained with mean squared error."""
        config.num_labels = num_labels
        config.problem_type = "regression"

    def parse_label(self, value: str, task: Task) -> tuple[float | None, str | None]:
        """(score, None) for a finite number, or (None, what is wrong with it)."""
        try:
            score = float(value)
        except ValueError:
            return None, f"label {value!r} cannot be parsed"
        return (score, None) if math.isfinite(score) else (None, f"label {value!r} is not a finite number")

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """The predicted scores."""
        return logits.squeeze(-1)


KIND = RegressionKind()
