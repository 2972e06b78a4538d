"""What fine-tuning used in this process since the meter was last read: device, precision, training samples and the
seconds their steps took (evaluation left out), and the peak GPU memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Usage:
    """The device and precision trained with, training throughput, and peak allocated GPU memory (None on CPU)."""

    device: str
    precision: str
    samples: int
    train_s: float
    peak_memory_mb: float | None

    @property
    def samples_per_s(self) -> float:
        """Training samples per second of training steps."""
        return self.samples / self.train_s if self.train_s > 0 else 0.0


class UsageMeter:
    """Adds up the fine-tuning runs of one process until `take` reads and resets it."""

    def __init__(self):
        self._clear()

    def _clear(self) -> None:
        self.samples, self.train_s = 0, 0.0
        self.device: torch.device | None = None
        self.precision = ""

    def add(self, device: torch.device, precision: str, samples: int, train_s: float) -> None:
        """Count one fine-tuning run: `samples` training examples in `train_s` seconds on `device` at `precision`."""
        self.device, self.precision = device, precision
        self.samples += samples
        self.train_s += train_s

    def take(self) -> Usage | None:
        """What was used since the last `take` (None: nothing was trained), then start counting afresh (peak GPU
        memory included)."""
        if self.device is None:
            return None
        peak = None
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
        used = Usage(str(self.device), self.precision, self.samples, self.train_s, peak)
        self._clear()
        return used


METER = UsageMeter()
