"""Plain PyTorch fine-tuning: AdamW, linear warmup/decay over the level's own steps, gradient clipping; on the run's
device (tickets.devices), in float32 (TF32 matrix multiplications on a GPU) or under bfloat16 autocast."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..devices import allow_tf32, to_device, training_device

if TYPE_CHECKING:
    from ..config import TrainConfig


# The fused AdamW kernel: on CPU about 2.5x faster than the default multi-tensor one, and, unlike it, no slower when
# many gradients are exactly zero (pruned weights), which made masked steps 20-30% slower (bench/masking_overhead.py).
FUSED_DEVICES = ("cpu", "cuda")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup to the base learning rate, then linear decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TorchBackend:
    """Trains a model in place on the run's device with a fresh AdamW and a full schedule, in the recipe's precision.

    Keeps pruned weights exactly zero; the masks live on the device. `accumulation` is the number of micro-batches per
    optimizer step (always 1).
    """

    accumulation = 1

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, masked: list[tuple[nn.Parameter, torch.Tensor]]):
        self.device = training_device()
        allow_tf32(self.device)
        self.autocast = AUTOCAST_DTYPES[cfg.precision]
        self.model = model.to(self.device)
        self.cfg = cfg
        self.masked = [(param, keep.to(self.device)) for param, keep in masked]
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           fused=self.device.type in FUSED_DEVICES)
        self.scheduler = linear_schedule(self.optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
        self.apply_masks()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch (computed under autocast in bf16)."""
        batch = to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.model(**batch).loss

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate and zero the gradients of pruned weights."""
        loss.backward()
        for param, keep in self.masked:
            if param.grad is not None:
                param.grad.mul_(keep)

    def step(self) -> None:
        """Clip, update, advance the schedule. Pruned weights stay exactly zero without re-masking: they start at zero,
        their gradients are always zero, so AdamW's moments for them stay zero and so does every update and decay."""
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Set every pruned weight to exactly zero."""
        for param, keep in self.masked:
            param.mul_(keep)

    def unwrap(self) -> nn.Module:
        """The trained model, with ordinary parameters, on the training device (masks applied once more)."""
        self.apply_masks()
        return self.model

    def close(self) -> None:
        """Release backend resources."""
