"""Evaluating a model on every eval split of a task."""

from __future__ import annotations

import torch

from .data import TaskData
from .tasks import get_kind


@torch.no_grad()
def evaluate(model, data: TaskData, batch_size: int) -> dict[str, float]:
    """Every metric of the task plus "eval_loss" (the mean loss, per example or per masked token as the task's kind
    defines it), computed in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        return get_kind(data.task.kind).evaluate(model, data, batch_size)
    finally:
        model.train(was_training)
