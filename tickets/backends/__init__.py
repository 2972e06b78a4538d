"""Fine-tuning backends (a registry): how a model is wrapped, stepped and kept exactly masked."""

from __future__ import annotations

from ..errors import TicketsError
from .torch_backend import TorchBackend

BACKENDS = {"torch": TorchBackend}


def resolve_backend(name: str) -> str:
    """The backend `auto` means on this machine (DeepSpeed with a GPU, plain PyTorch on CPU), or `name` itself."""
    if name != "auto":
        return name
    import torch

    return "deepspeed" if torch.cuda.is_available() and "deepspeed" in BACKENDS else "torch"


def get_backend(name: str):
    """The backend class registered under `name` (after resolving `auto`)."""
    resolved = resolve_backend(name)
    if resolved not in BACKENDS:
        raise TicketsError(f"unknown or unavailable backend '{name}'; available: auto, {', '.join(sorted(BACKENDS))}")
    return BACKENDS[resolved]
