"""The interface every task kind implements, with the parts most kinds share."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import TaskData, existing_file, find_folder
from .task import Task


class TaskKind:
    """A kind of task: how its examples are read and batched, which head it trains, how it is evaluated."""

    head = "AutoModelForSequenceClassification"  # the transformers Auto class of the model with this kind's head
    pretrained_head = False  # whether a checkpoint's own head of this kind is kept where the checkpoint has one
    splits_dev = False  # whether it can train on part of a dev set and evaluate on the rest (Task.dev_split)

    def head_class(self):
        """The transformers Auto class that builds a model with this kind's head."""
        import transformers

        return getattr(transformers, self.head)

    def configure(self, config, num_labels: int) -> None:
        """Set this kind's head settings on a model config, in place."""

    def load(self, task: Task, tokenizer, data_dir: str | None, max_seq_length: int, max_train_samples: int | None,
             max_eval_samples: int | None) -> TaskData:
        """The task's train and eval splits, capped and tokenised, from `data_dir` or, if None, the Hub."""
        raise NotImplementedError

    def data_files(self, task: Task, data_dir: str) -> list[tuple[str, Path]]:
        """(role, path) of every local file `load` reads, train first; a missing file raises the loader's error."""
        folder = find_folder(data_dir, task)
        evals = [(split.name, existing_file(folder / split.file)) for split in task.eval_splits]  # checked first
        return [("train", self.train_file(task, folder)), *evals]

    def train_file(self, task: Task, folder: Path) -> Path:
        """The local file the train split is read from."""
        return existing_file(folder / task.train_split.file)

    def hub_source(self, task: Task) -> tuple[str, str | None, list[str]]:
        """The Hub dataset `load` reads without `data_dir`: (path, config name, the splits read)."""
        return task.hub[0], task.hub[1], [split.hub for split in task.splits]

    def evaluate(self, model, data: TaskData, batch_size: int) -> dict[str, float]:
        """Every metric of the task plus "eval_loss", with the model already in eval mode and gradients off."""
        raise NotImplementedError

    def compute_metrics(self, task: Task, split: str, predictions, labels) -> dict[str, float]:
        """The task's metrics on one eval split, from predictions and labels in this kind's form."""
        raise NotImplementedError


def model_outputs(model, batch: dict[str, torch.Tensor]):
    """The model's outputs on `batch`, moved to the model's device."""
    device = next(model.parameters()).device
    return model(**{key: value.to(device) for key, value in batch.items()})
