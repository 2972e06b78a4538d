"""The task registry: one entry per task, naming its kind, data location, labels and dev metrics.

A task kind is one module of this package (`tickets/tasks/<kind>.py`, exposing `KIND`); a task is one line of `TASKS`.
This module imports no kind, so reading metric names and directions stays light (analysis/ uses it).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from typing import TYPE_CHECKING

from ..errors import TicketsError
from .task import Columns, Split, Task

if TYPE_CHECKING:
    from .kind import TaskKind

GLUE_HUB = "nyu-mll/glue"
MNLI_SPLITS = (Split("train", "train.tsv", "train"), Split("matched", "dev_matched.tsv", "validation_matched"),
               Split("mismatched", "dev_mismatched.tsv", "validation_mismatched"))

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cola", "CoLA", "classification", 2, ("mcc",), "mcc", hub=(GLUE_HUB, "cola"),
             columns=Columns(("sentence",), "label", ("sentence",), header=("source", "label", "mark", "sentence"))),
        Task("sst2", "SST-2", "classification", 2, ("accuracy",), "accuracy", hub=(GLUE_HUB, "sst2"),
             columns=Columns(("sentence",), "label", ("sentence",))),
        Task("mrpc", "MRPC", "classification", 2, ("accuracy", "f1"), "accuracy", hub=(GLUE_HUB, "mrpc"),
             columns=Columns(("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"))),
        Task("qqp", "QQP", "classification", 2, ("accuracy", "f1"), "accuracy", hub=(GLUE_HUB, "qqp"),
             columns=Columns(("question1", "question2"), "is_duplicate", ("question1", "question2"))),
        Task("stsb", "STS-B", "regression", 1, ("pearson", "spearman"), "pearson", hub=(GLUE_HUB, "stsb"),
             columns=Columns(("sentence1", "sentence2"), "score", ("sentence1", "sentence2"))),
        Task("mnli", "MNLI", "classification", 3, ("matched_accuracy", "mismatched_accuracy"), "matched_accuracy",
             hub=(GLUE_HUB, "mnli"), splits=MNLI_SPLITS, label_names=("entailment", "neutral", "contradiction"),
             columns=Columns(("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"))),
        Task("qnli", "QNLI", "classification", 2, ("accuracy",), "accuracy", hub=(GLUE_HUB, "qnli"),
             label_names=("entailment", "not_entailment"),
             columns=Columns(("question", "sentence"), "label", ("question", "sentence"))),
        Task("rte", "RTE", "classification", 2, ("accuracy",), "accuracy", hub=(GLUE_HUB, "rte"),
             label_names=("entailment", "not_entailment"),
             columns=Columns(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"))),
        Task("wnli", "WNLI", "classification", 2, ("accuracy",), "accuracy", hub=(GLUE_HUB, "wnli"),
             label_names=("not_entailment", "entailment"),
             columns=Columns(("sentence1", "sentence2"), "label", ("sentence1", "sentence2"))),
        Task("mlm", "WikiText-2", "mlm", 0, ("masked_accuracy", "perplexity"), "masked_accuracy",
             hub=("Salesforce/wikitext", "wikitext-2-raw-v1"),
             splits=(Split("train", "train.txt", "train"), Split("dev", "valid.txt", "validation")),
             lower_is_better=("perplexity",), aliases=("wikitext",)),
        Task("squad", "squad/v1.1", "extractive_qa", 0, ("exact_match", "f1"), "f1",
             hub=("rajpurkar/squad", "plain_text"),
             splits=(Split("train", "train-v1.1.json", "train"), Split("dev", "dev-v1.1.json", "validation"))),
        Task("squad-dev-split", "squad/v1.1", "extractive_qa", 0, ("exact_match", "f1"), "f1", dev_split=True,
             hub=("rajpurkar/squad", "plain_text"),
             splits=(Split("train", "dev-v1.1.json", "validation"), Split("dev", "dev-v1.1.json", "validation"))),
    )
}
LOWER_IS_BETTER = frozenset({"eval_loss", *(metric for task in TASKS.values() for metric in task.lower_is_better)})


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _aliases(tasks: dict[str, Task]) -> dict[str, Task]:
    """Lookup keys: every task's name and aliases, and its folder where no other task shares that folder."""
    folders = Counter(_key(task.folder) for task in tasks.values())
    aliases = {_key(task.folder): task for task in tasks.values() if folders[_key(task.folder)] == 1}
    aliases.update({_key(alias): task for task in tasks.values() for alias in task.aliases})
    aliases.update({_key(task.name): task for task in tasks.values()})
    return aliases


_ALIASES = _aliases(TASKS)


def get_task(name: str) -> Task:
    """The task called `name` (case, dashes and underscores ignored; data folder names such as 'SST-2' accepted)."""
    task = _ALIASES.get(_key(str(name)))
    if task is None:
        raise TicketsError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}")
    return task


def get_kind(kind: str) -> TaskKind:
    """The task kind called `kind`: the `KIND` of module tickets.tasks.<kind>."""
    try:
        module = importlib.import_module(f"{__name__}.{kind}") if re.fullmatch(r"[a-z_]+", kind) else None
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{kind}":
            raise
        module = None
    found = getattr(module, "KIND", None)
    if found is None:
        raise TicketsError(f"unknown task kind '{kind}'")
    return found
