"""Evaluating a model on every eval split of a task."""

from __future__ import annotations

import numpy as np
import torch

from .data import TaskData, eval_loaders
from .metrics import compute_metrics


@torch.no_grad()
def evaluate(model, data: TaskData, batch_size: int) -> dict[str, float]:
    """Every metric of the task plus "eval_loss" (mean per example, or per masked token for MLM), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        if data.task.kind == "mlm":
            return _evaluate_mlm(model, data, batch_size)
        return _evaluate_glue(model, data, batch_size)
    finally:
        model.train(was_training)


def _outputs(model, batch: dict[str, torch.Tensor]):
    device = next(model.parameters()).device
    return model(**{key: value.to(device) for key, value in batch.items()})


def _evaluate_glue(model, data: TaskData, batch_size: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    loss_sum, count = 0.0, 0
    for split, loader in eval_loaders(data, batch_size).items():
        predictions, labels = [], []
        for batch in loader:
            out = _outputs(model, batch)
            n = len(batch["labels"])
            loss_sum += float(out.loss) * n
            count += n
            logits = out.logits.float().cpu()
            predictions.append(logits.squeeze(-1) if data.task.kind == "regression" else logits.argmax(-1))
            labels.append(batch["labels"])
        metrics.update(compute_metrics(data.task, split, torch.cat(predictions).numpy(), torch.cat(labels).numpy()))
    metrics["eval_loss"] = loss_sum / count
    return metrics


def _evaluate_mlm(model, data: TaskData, batch_size: int) -> dict[str, float]:
    loss_sum, correct, count = 0.0, 0, 0
    for loader in eval_loaders(data, batch_size).values():
        for batch in loader:
            masked = batch["labels"] != -100
            n = int(masked.sum())
            if n == 0:
                continue
            out = _outputs(model, batch)
            loss_sum += float(out.loss) * n
            correct += int((out.logits.argmax(-1).cpu()[masked] == batch["labels"][masked]).sum())
            count += n
    mean_loss = loss_sum / count if count else float("nan")
    return {
        "masked_accuracy": correct / count if count else float("nan"),
        "perplexity": float(np.exp(mean_loss)),
        "eval_loss": mean_loss,
    }
