"""Sentence and sentence-pair classification (GLUE's CoLA, SST-2, MRPC, QQP, MNLI, QNLI, RTE, WNLI): a fresh
classifier on the pooled output, scored by accuracy, F1 of the positive class or Matthews correlation."""

from __future__ import annotations

import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .glue import GlueKind
from .task import Task


class ClassificationKind(GlueKind):
    """Class ids from names or numbers in the files; the predicted class is the arg-max of the logits."""

    metrics = {"accuracy": accuracy_score, "f1": f1_score, "mcc": matthews_corrcoef}

    def configure(self, config, num_labels: int) -> None:
        """A classifier over `num_labels` classes trained with cross-entropy."""
        config.num_labels = num_labels
        config.problem_type = "single_label_classification"

    def parse_label(self, value: str, task: Task) -> tuple[int | None, str | None]:
        """(class id, None) for a label name or class id, or (None, what is wrong with it)."""
        try:
            label = task.label_names.index(value) if value in task.label_names else int(value)
        except ValueError:
            names = f" (expected one of {', '.join(task.label_names)} or a class id)" if task.label_names else ""
            return None, f"label {value!r} cannot be parsed{names}"
        if 0 <= label < task.num_labels:
            return label, None
        return None, f"label {value!r} is out of range (0..{task.num_labels - 1})"

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """The predicted class ids."""
        return logits.argmax(-1)


KIND = ClassificationKind()
