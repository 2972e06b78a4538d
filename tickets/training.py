"""One flat fine-tuning loop: masked steps, periodic evaluation, an optional weight capture for rewinding."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .backends import get_backend
from .config import TrainConfig
from .data import TaskData, training_batches
from .evaluation import evaluate
from .usage import METER
from .weights import parameter_state


@dataclass
class TrainResult:
    """What one fine-tuning run produced."""

    steps: int
    train_loss: float
    wall_time_s: float
    metrics: dict[str, float]
    eval_history: list[dict] = field(default_factory=list)
    captured: dict[str, torch.Tensor] | None = None


class StepWatch(Protocol):
    """Looks at the weights every `every` optimizer steps (from step 0, before the first) and may end training there.

    It must leave the weights, the gradients, the train/eval mode and the random streams as they are; the loop does
    not count its time as training time."""

    every: int

    def __call__(self, step: int, model: nn.Module) -> bool:
        """Look at `model` after `step` steps; True stops training now."""


def masked_pairs(params: dict[str, nn.Parameter], keep: dict[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, 0/1 multiplier) for every tensor the mask covers."""
    return [(params[name], keep[name].to(dtype=params[name].dtype, device=params[name].device)) for name in keep]


def total_steps(data: TaskData, cfg: TrainConfig) -> int:
    """Optimizer steps in one run of the recipe."""
    batches = math.ceil(len(data.train) / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * batches))


def micro_batches(batch: dict[str, torch.Tensor], parts: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """`batch` split along its first dimension into up to `parts` non-empty micro-batches, with their share of rows."""
    rows = len(next(iter(batch.values())))
    if parts == 1:
        return [(batch, 1.0)]
    chunks = [dict(zip(batch, values)) for values in zip(*(t.tensor_split(parts) for t in batch.values()))]
    return [(chunk, len(next(iter(chunk.values()))) / rows) for chunk in chunks if len(next(iter(chunk.values())))]


def fine_tune(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    masked: list[tuple[nn.Parameter, torch.Tensor]],
    seed: int,
    capture_at: int | None = None,
    progress: bool = True,
    description: str = "train",
    watch: StepWatch | None = None,
) -> TrainResult:
    """Train `model` in place with the recipe, keeping masked weights exactly zero; evaluate at the end.

    With `capture_at` = k, the weights after k optimizer steps are returned in `captured` (k = 0: before training).
    A `watch` looks at the weights every `watch.every` steps and may stop training early (`steps` says how many ran).
    The backend trains on the run's device (tickets.devices); the model is back on its own device when this returns.
    The training samples and the seconds their steps took are added to the process's usage meter (tickets.usage).
    """
    torch.manual_seed(seed)
    steps = total_steps(data, cfg)
    home = next(model.parameters()).device
    backend = get_backend(cfg.backend)(model, cfg, steps, masked)
    try:
        captured = _snapshot(backend, home) if capture_at == 0 else None
        history: list[dict] = []
        loss_sum, step, samples, aside = torch.zeros((), dtype=torch.float64, device=backend.device), 0, 0, 0.0
        started = time.perf_counter()
        bar = tqdm(total=steps, desc=description, disable=not progress, leave=False)
        model.train()
        stop = False
        if watch is not None:
            paused = time.perf_counter()
            stop = watch(0, backend.unwrap())
            aside += time.perf_counter() - paused
        for batch in [] if stop else training_batches(data, cfg.batch_size, seed, steps):
            for micro, share in micro_batches(batch, backend.accumulation):
                loss = backend.forward(micro)
                backend.backward(loss * share)
                loss_sum += loss.detach().double() * share  # on the device: no host round trip per step
            backend.step()
            step += 1
            samples += len(next(iter(batch.values())))
            bar.update(1)
            if progress:
                bar.set_postfix(loss=f"{float(loss_sum) / step:.4f}")
            capture = capture_at is not None and step == capture_at
            check = cfg.eval_every and step % cfg.eval_every == 0 and step < steps
            look = watch is not None and step % watch.every == 0
            if capture or check or look:
                float(loss_sum)  # the queued steps finish first: their time is training time
                paused = time.perf_counter()
                if capture:
                    captured = _snapshot(backend, home)
                if check:
                    history.append({"step": step, **evaluate(backend.unwrap(), data, cfg.eval_batch_size)})
                    model.train()
                if look:
                    stop = watch(step, backend.unwrap())
                aside += time.perf_counter() - paused
            if stop:
                break
        train_loss = float(loss_sum) / max(1, step)  # waits for the last step
        METER.add(backend.device, cfg.precision, samples, time.perf_counter() - started - aside)
        bar.close()
        metrics = evaluate(backend.unwrap(), data, cfg.eval_batch_size)
    finally:
        backend.close()
        model.to(home)
    history.append({"step": step, **metrics})
    return TrainResult(step, train_loss, time.perf_counter() - started, metrics, history, captured)


def _snapshot(backend, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: value.to(device) for name, value in parameter_state(backend.unwrap()).items()}
