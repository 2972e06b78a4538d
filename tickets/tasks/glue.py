"""Tasks in GLUE's format (sentence or sentence-pair examples with one label each): reading their TSV files or the Hub,
tokenising, evaluating. The classification and regression kinds build on it."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import (EncodedExamples, TaskData, eval_indices, eval_loaders, existing_file, find_folder, hub_split,
                    not_text, train_indices)
from ..errors import TicketsError
from . import get_kind
from .kind import TaskKind, model_outputs
from .task import Task


@dataclass
class Examples:
    """Raw examples: one list of strings per text column, and one label per example."""

    texts: tuple[list[str], ...]
    labels: list
    dropped: int = 0  # malformed rows of the file they were read from that were left out

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: list[int]) -> Examples:
        """The examples at `indices`, in that order."""
        return Examples(tuple([column[i] for i in indices] for column in self.texts), [self.labels[i] for i in indices])


class GlueKind(TaskKind):
    """A kind whose tasks are GLUE-format examples, one label each, scored by named metrics per eval split."""

    label_dtype = torch.long
    metrics: dict[str, Callable] = {}  # metric name -> f(labels, predictions)

    def parse_label(self, value: str, task: Task) -> tuple[float | int | None, str | None]:
        """(label, None) for a label as written in a TSV file, or (None, what is wrong with it)."""
        raise NotImplementedError

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics score, from a batch of logits."""
        raise NotImplementedError

    def load(self, task: Task, tokenizer, data_dir: str | None, max_seq_length: int, max_train_samples: int | None,
             max_eval_samples: int | None) -> TaskData:
        """The task's train and eval splits from its TSV files under `data_dir` or, if None, the Hub."""
        if data_dir is None:
            train = _hub_examples(task, task.train_split.hub)
            evals = {split.name: _hub_examples(task, split.hub) for split in task.eval_splits}
        else:
            folder = find_folder(data_dir, task)
            paths = {split.name: existing_file(folder / split.file) for split in task.eval_splits}
            train = read_glue_tsv(self.train_file(task, folder), task, train=True)
            evals = {name: read_glue_tsv(path, task) for name, path in paths.items()}
        dropped_train_rows = train.dropped
        train = train.select(train_indices(len(train), max_train_samples))
        evals = {name: examples.select(eval_indices(len(examples), max_eval_samples)) for name, examples in evals.items()}
        return TaskData(
            task,
            self._encode(train, tokenizer, max_seq_length),
            {name: self._encode(examples, tokenizer, max_seq_length) for name, examples in evals.items()},
            tokenizer.pad_token_id,
            dropped_train_rows=dropped_train_rows,
        )

    def evaluate(self, model, data: TaskData, batch_size: int) -> dict[str, float]:
        """The task's metrics on each eval split, and the mean loss per example over all of them."""
        metrics: dict[str, float] = {}
        loss_sum, count = 0.0, 0
        for split, loader in eval_loaders(data, batch_size).items():
            predictions, labels = [], []
            for batch in loader:
                out = model_outputs(model, batch)
                n = len(batch["labels"])
                loss_sum += float(out.loss) * n
                count += n
                predictions.append(self.predictions(out.logits.float().cpu()))
                labels.append(batch["labels"])
            metrics.update(self.compute_metrics(data.task, split, torch.cat(predictions).numpy(), torch.cat(labels).numpy()))
        metrics["eval_loss"] = loss_sum / count
        return metrics

    def compute_metrics(self, task: Task, split: str, predictions, labels) -> dict[str, float]:
        """The task's metrics on one eval split, from predictions and labels as arrays of the same shape.

        Metrics named after a split (MNLI's "matched_accuracy") are reported only for that split.
        """
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        if predictions.shape != labels.shape or predictions.size == 0:
            raise ValueError(f"need as many predictions as labels, got {predictions.shape} and {labels.shape}")
        prefix = f"{split}_"
        names = [name for name in task.metric_names if name.startswith(prefix)] or list(task.metric_names)
        unknown = [name for name in names if name.removeprefix(prefix) not in self.metrics]
        if unknown:
            raise ValueError(f"no metric {', '.join(unknown)} for task '{task.name}' split '{split}'")
        return {name: float(self.metrics[name.removeprefix(prefix)](labels, predictions)) for name in names}

    def _encode(self, examples: Examples, tokenizer, max_seq_length: int) -> EncodedExamples:
        if len(examples) == 0:
            return EncodedExamples([], None, [], torch.long)
        encoded = tokenizer(*examples.texts, truncation=True, max_length=max_seq_length)
        return EncodedExamples(encoded["input_ids"], encoded.get("token_type_ids"), examples.labels, self.label_dtype)


def read_glue_tsv(path: Path, task: Task, train: bool = False) -> Examples:
    """The examples of one GLUE TSV file (read unquoted, as GLUE writes them).

    A malformed row (wrong number of columns, unparsable or out-of-range label) of an eval file (`train` False) is an
    error naming the file and line, so the eval set is never silently changed; in a train file such rows are dropped
    with a warning, and their count is `Examples.dropped`.
    """
    try:
        return _read_glue_tsv(path, task, train)
    except UnicodeDecodeError as exc:
        raise not_text(path, exc) from None
    except csv.Error as exc:
        raise TicketsError(f"data file '{path}' is not a TSV text file ({exc})") from None


def _read_glue_tsv(path: Path, task: Task, train: bool) -> Examples:
    kind, columns = get_kind(task.kind), task.columns
    texts: tuple[list[str], ...] = tuple([] for _ in columns.texts)
    labels: list = []
    skipped = 0
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(columns.header or next(rows, []))
        missing = [c for c in (*columns.texts, columns.label) if c not in header]
        if missing:
            raise TicketsError(f"'{path}' has no column {', '.join(repr(c) for c in missing)}")
        text_at = [header.index(c) for c in columns.texts]
        label_at = header.index(columns.label)
        for row in rows:
            if len(row) != len(header):
                problem = f"expected {len(header)} tab-separated columns, found {len(row)}"
            else:
                label, problem = kind.parse_label(row[label_at].strip(), task)
            if problem is not None:
                if not train:
                    raise TicketsError(f"malformed row in eval file '{path}', line {rows.line_num}: {problem}")
                skipped += 1
                continue
            for column, at in zip(texts, text_at):
                column.append(row[at])
            labels.append(label)
    if skipped:
        warnings.warn(f"dropped {skipped} malformed rows of train file {path}")
    if not labels:
        raise TicketsError(f"'{path}' has no usable rows")
    return Examples(texts, labels, skipped)


def _hub_examples(task: Task, split: str) -> Examples:
    dataset = hub_split(*task.hub, split)
    return Examples(tuple(list(dataset[c]) for c in task.columns.hub_texts), list(dataset["label"]))
