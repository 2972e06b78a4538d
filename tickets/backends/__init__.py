"""Fine-tuning backends (a registry): how a model is wrapped, stepped and kept exactly masked."""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import TicketsError
from .torch_backend import TorchBackend

BACKENDS = {"torch": TorchBackend}

if find_spec("deepspeed") is not None:  # deepspeed itself is imported only when a DeepSpeed run starts
    from .deepspeed_backend import DeepSpeedBackend

    BACKENDS["deepspeed"] = DeepSpeedBackend


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


def check_backend(name: str, deepspeed: dict, batch_size: int, max_grad_norm: float) -> None:
    """Raise a TicketsError, before any compute, when the backend or its DeepSpeed settings cannot run here."""
    import torch

    from .deepspeed_config import check_device, parse_settings

    settings = parse_settings(deepspeed, batch_size, max_grad_norm)
    get_backend(name)
    if resolve_backend(name) == "deepspeed":
        check_device(settings, torch.cuda.is_available())
