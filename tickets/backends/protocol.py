"""The contract between the fine-tuning loop (`tickets.training.fine_tune`) and a backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import TrainConfig


class Backend(Protocol):
    """Trains one model with one recipe for a fixed number of optimizer steps, keeping pruned weights exactly zero.

    It trains on the run's device (`tickets.devices.training_device()`) in the recipe's precision. Per optimizer step
    the loop calls `forward` and `backward` once per micro-batch (`accumulation` of them, each loss already weighted
    by its share of the batch), then `step` once; `unwrap` may come at any step, `close` comes last.
    """

    accumulation: int
    device: torch.device

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int,
                 masked: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        """Set up training of `model` in place: the recipe `cfg`, its `total_steps`, (parameter, 0/1 keep) pairs."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one micro-batch."""

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of `loss`; pruned weights get none."""

    def step(self) -> None:
        """One optimizer and learning-rate-schedule step for the accumulated micro-batches; pruned weights stay zero."""

    def unwrap(self) -> nn.Module:
        """The model being trained, with ordinary parameters holding the weights trained so far."""

    def close(self) -> None:
        """Release what the backend holds; the model keeps its trained weights."""
