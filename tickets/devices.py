"""The device a process trains and scores on: chosen once (a sweep trial picks the GPU Ray assigned it), honoured by
every phase, with batches copied to it without stalling the host and its memory released between trials."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .errors import TicketsError

CPU = torch.device("cpu")
_chosen: list[torch.device] = []


def pick_device(cuda_count: int, assigned: Sequence[str | int] | None = None, visible: str | None = None,
                current: int = 0) -> torch.device:
    """The device one process trains on, from what it sees: `cuda_count` CUDA devices, the GPU ids Ray `assigned`
    its trial (None outside Ray), the process's CUDA_VISIBLE_DEVICES (`visible`, None when unset) and the current
    CUDA device.

    No CUDA device: the CPU. Outside Ray: the current CUDA device. In a Ray trial: the CPU when Ray assigned no GPU
    (Ray leaves CUDA_VISIBLE_DEVICES alone for a trial without GPUs, so every GPU is visible but none is the trial's);
    otherwise the assigned GPU that comes first among the visible ones, numbered as torch numbers them (its position
    in `visible`, or its own id where `visible` is unset). Trials sharing a GPU (fractional `gpus`) all get that GPU.
    """
    if cuda_count == 0:
        return CPU
    if assigned is None:
        return torch.device("cuda", current)
    if not assigned:
        return CPU
    order = [entry.strip() for entry in visible.split(",") if entry.strip()] if visible is not None else None
    indices = []
    for gpu in (str(gpu) for gpu in assigned):
        if order is None:
            if not gpu.isdigit():
                raise TicketsError(f"Ray assigned GPU '{gpu}' but CUDA_VISIBLE_DEVICES is unset, so its index is "
                                   "unknown")
            indices.append(int(gpu))
        elif gpu in order:
            indices.append(order.index(gpu))
    if not indices:
        raise TicketsError(f"Ray assigned GPU {', '.join(map(str, assigned))}, which CUDA_VISIBLE_DEVICES={visible} "
                           "hides from this process")
    index = min(indices)
    if index >= cuda_count:
        raise TicketsError(f"Ray assigned GPU index {index}, but this process sees only {cuda_count} CUDA devices")
    return torch.device("cuda", index)


def training_device() -> torch.device:
    """The device chosen by the innermost `use_device`, or else the current CUDA device, or the CPU."""
    if _chosen:
        return _chosen[-1]
    cuda = torch.cuda.is_available()
    return pick_device(torch.cuda.device_count() if cuda else 0, current=torch.cuda.current_device() if cuda else 0)


@contextmanager
def use_device(device: torch.device) -> Iterator[torch.device]:
    """While active, every phase of a run (training, importance scoring, evaluation) runs on `device`; a CUDA device
    also becomes torch's current one (which DeepSpeed and autocast follow)."""
    device = torch.device(device)
    previous = torch.cuda.current_device() if device.type == "cuda" else None
    _chosen.append(device)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        yield device
    finally:
        _chosen.pop()
        if previous is not None:
            torch.cuda.set_device(previous)


@contextmanager
def placed(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """While active, `model` lives on `device`; afterwards it is back on the device it came from."""
    home = next(model.parameters()).device
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """`batch` on `device`; host tensors go to a GPU through pinned memory, without making the host wait."""
    if device.type != "cuda":
        return {key: value.to(device) for key, value in batch.items()}
    return {key: (value.pin_memory() if value.device.type == "cpu" else value).to(device, non_blocking=True)
            for key, value in batch.items()}


def allow_tf32(device: torch.device) -> None:
    """On a CUDA device, let float32 matrix multiplications use TF32 tensor cores (process-wide); elsewhere nothing."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"


def release_memory(device: torch.device) -> None:
    """Free what a finished run left behind: unreachable objects and, on a GPU, the allocator's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
