"""Fine-tuning backends (a registry of records): how a model is wrapped, stepped and kept exactly masked.

A backend is a class with the `Backend` protocol; a new one is one module plus one record below. Backend modules are
imported only when their backend is used, so this registry imports neither them nor the recipe settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Callable

from ..errors import TicketsError
from .deepspeed_config import check_device, recipe_settings
from .protocol import Backend

if TYPE_CHECKING:
    from ..config import TrainConfig

AUTO = "auto"
PRECISIONS = {
    "fp32": "float32 throughout (TF32 matrix multiplications on a GPU)",
    "bf16": "bfloat16 compute, float32 weights: autocast (torch backend), or DeepSpeed's bf16 engine with float32 "
            "masters",
    "fp16": "float16 with loss scaling: DeepSpeed on a GPU only",
}


@dataclass(frozen=True)
class BackendKind:
    """A registered backend: its name, a one-line help, how its class is imported, whether it can be imported on
    this machine, and a check of a recipe's settings for it (None: it has none) that raises a TicketsError."""

    name: str
    help: str
    load: Callable[[], type[Backend]]
    available: Callable[[], bool]
    check: Callable[[TrainConfig], None] | None = None


def _torch_backend() -> type[Backend]:
    from .torch_backend import TorchBackend

    return TorchBackend


def _deepspeed_backend() -> type[Backend]:
    from .deepspeed_backend import DeepSpeedBackend

    return DeepSpeedBackend


def _deepspeed_installed() -> bool:
    return find_spec("deepspeed") is not None  # deepspeed itself is imported only when a DeepSpeed run starts


def _check_torch(cfg: TrainConfig) -> None:
    if cfg.precision == "fp16":
        raise TicketsError("precision fp16 needs the deepspeed backend on a GPU (loss scaling); the torch backend "
                           "trains in fp32 or bf16")


def _check_deepspeed(cfg: TrainConfig) -> None:
    import torch

    check_device(recipe_settings(cfg), torch.cuda.is_available())


BACKEND_REGISTRY: dict[str, BackendKind] = {
    kind.name: kind
    for kind in (
        BackendKind("torch", "plain PyTorch: AdamW, linear schedule, on the GPU when there is one (bf16: autocast)",
                    _torch_backend, lambda: True, _check_torch),
        BackendKind("deepspeed", "a single-process DeepSpeed engine (precision, ZeRO stage, accumulation, offload)",
                    _deepspeed_backend, _deepspeed_installed, _check_deepspeed),
    )
}


def backend_helps() -> dict[str, str]:
    """Every backend choice of a recipe (`auto` first) with its one-line help."""
    auto = "DeepSpeed on a machine with a GPU (where it is installed), plain PyTorch otherwise"
    return {AUTO: auto, **{name: kind.help for name, kind in BACKEND_REGISTRY.items()}}


def resolve_backend(name: str, on_gpu: bool | None = None) -> str:
    """The backend `auto` means for a run on a GPU or not (`on_gpu`; default: whether the run's device here is one):
    DeepSpeed on a GPU where it is installed, plain PyTorch otherwise; any other `name` as it is."""
    if name != AUTO:
        return name
    if on_gpu is None:
        from ..devices import training_device

        on_gpu = training_device().type == "cuda"
    return "deepspeed" if on_gpu and BACKEND_REGISTRY["deepspeed"].available() else "torch"


def backend_kind(name: str) -> BackendKind:
    """The registered backend `name` means here (after resolving `auto`), if it can be imported on this machine."""
    kind = BACKEND_REGISTRY.get(resolve_backend(name))
    if kind is None or not kind.available():
        available = sorted(n for n, k in BACKEND_REGISTRY.items() if k.available())
        raise TicketsError(f"unknown or unavailable backend '{name}'; available: {AUTO}, {', '.join(available)}")
    return kind


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under `name` (after resolving `auto`)."""
    return backend_kind(name).load()


def check_backend(cfg: TrainConfig) -> None:
    """Raise a TicketsError, before any compute, when the recipe's backend or its settings cannot run here.

    The DeepSpeed settings are checked whichever backend is chosen: `auto` picks DeepSpeed on a machine with a GPU.
    """
    recipe_settings(cfg)
    kind = backend_kind(cfg.backend)
    if kind.check is not None:
        kind.check(cfg)
