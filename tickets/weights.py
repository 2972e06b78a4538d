"""Saving and restoring model weights as safetensors (never pickle), tied weights stored once."""

from __future__ import annotations

import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import TicketsError


def parameter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, by name (tied parameters appear once)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def load_parameter_state(model: nn.Module, state: dict[str, torch.Tensor], prefix_filter: str | None = None) -> None:
    """Copy `state` into the model's parameters (all of them, or those starting with `prefix_filter`)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            if prefix_filter is not None and not name.startswith(prefix_filter):
                continue
            if name not in params or params[name].shape != value.shape:
                raise TicketsError(f"saved weight '{name}' does not fit this model")
            params[name].copy_(value)


def save_weights(state: dict[str, torch.Tensor], path: str) -> None:
    """Write a parameter state to `path` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        save_file({n: t.contiguous() for n, t in state.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """Read a parameter state written by `save_weights`."""
    if not os.path.isfile(path):
        raise TicketsError(f"weights file '{path}' does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise TicketsError(f"cannot read weights file '{path}': {exc}") from exc
