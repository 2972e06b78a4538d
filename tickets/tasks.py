"""The task registry: the nine GLUE tasks and masked language modelling, with their dev metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import TicketsError


@dataclass(frozen=True)
class Task:
    """A task: its canonical name, data folder, kind of head, and the dev metrics it reports."""

    name: str
    folder: str
    kind: str
    num_labels: int
    metric_names: tuple[str, ...]
    main_metric: str


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cola", "CoLA", "classification", 2, ("mcc",), "mcc"),
        Task("sst2", "SST-2", "classification", 2, ("accuracy",), "accuracy"),
        Task("mrpc", "MRPC", "classification", 2, ("accuracy", "f1"), "accuracy"),
        Task("qqp", "QQP", "classification", 2, ("accuracy", "f1"), "accuracy"),
        Task("stsb", "STS-B", "regression", 1, ("pearson", "spearman"), "pearson"),
        Task("mnli", "MNLI", "classification", 3, ("matched_accuracy", "mismatched_accuracy"), "matched_accuracy"),
        Task("qnli", "QNLI", "classification", 2, ("accuracy",), "accuracy"),
        Task("rte", "RTE", "classification", 2, ("accuracy",), "accuracy"),
        Task("wnli", "WNLI", "classification", 2, ("accuracy",), "accuracy"),
        Task("mlm", "WikiText-2", "mlm", 0, ("masked_accuracy", "perplexity"), "masked_accuracy"),
    )
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {_key(alias): task for task in TASKS.values() for alias in (task.name, task.folder)}
_ALIASES[_key("wikitext")] = TASKS["mlm"]


def get_task(name: str) -> Task:
    """The task called `name` (case, dashes and underscores ignored; GLUE folder names and 'wikitext2' accepted)."""
    task = _ALIASES.get(_key(str(name)))
    if task is None:
        raise TicketsError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}")
    return task
