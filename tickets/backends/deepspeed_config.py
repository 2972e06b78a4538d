"""DeepSpeed settings of a recipe (`TrainConfig.deepspeed`): checked before any compute, turned into an engine config.

Keys: `zero_stage` (0-3), `grad_accum` or `micro_batch_size` (the recipe's `batch_size` is the effective batch),
`offload_optimizer` (bool), and `config`: a DeepSpeed JSON (a dict, or the path of a file) for everything else. The
named keys win over the JSON. The recipe owns the optimizer (AdamW), the learning-rate schedule, gradient clipping,
the batch size and the precision (`TrainConfig.precision`), so a JSON may not set them differently.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import TicketsError
from ..settings import setting

if TYPE_CHECKING:
    from ..config import TrainConfig

ZERO_STAGES = (0, 1, 2, 3)
KEYS = ("zero_stage", "grad_accum", "micro_batch_size", "offload_optimizer", "config")
RECIPE_OWNED = ("optimizer", "scheduler")
DS_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


@dataclass(frozen=True)
class DeepSpeedOptions:
    """The named keys of `TrainConfig.deepspeed` that have command-line flags, as declared settings (None: taken from
    the DeepSpeed JSON, else DeepSpeed's default)."""

    zero_stage: int | None = setting(None, "ZeRO stage 0-3 (default: the DeepSpeed config's, else 0)", ge=0, le=3)
    grad_accum: int | None = setting(None, "micro-batches per optimizer step (divides --batch-size)", gt=0)
    offload_optimizer: bool | None = setting(None, "keep the optimizer state on the CPU (ZeRO stage 1-3)")


@dataclass(frozen=True)
class DeepSpeedSettings:
    """Checked DeepSpeed settings of one recipe (its precision included)."""

    precision: str = "fp32"
    zero_stage: int = 0
    grad_accum: int = 1
    offload_optimizer: bool = False
    extra: dict = field(default_factory=dict)


def read_config_file(path: str) -> dict:
    """The DeepSpeed JSON at `path`, as a dict."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise TicketsError(f"cannot read DeepSpeed config '{path}': {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise TicketsError(f"DeepSpeed config '{path}' is not UTF-8 text (a binary file?)") from None
    except json.JSONDecodeError as exc:
        raise TicketsError(f"DeepSpeed config '{path}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TicketsError(f"DeepSpeed config '{path}' must hold a JSON object, not {type(data).__name__}")
    return data


def recipe_settings(cfg: TrainConfig) -> DeepSpeedSettings:
    """The checked DeepSpeed settings of a recipe, its precision included (a TicketsError names the first problem)."""
    return parse_settings(cfg.deepspeed, cfg.batch_size, cfg.max_grad_norm, cfg.precision)


def parse_settings(settings: dict, batch_size: int, max_grad_norm: float, precision: str) -> DeepSpeedSettings:
    """Check `TrainConfig.deepspeed` against the recipe (its batch size, clipping and precision); raise a TicketsError
    naming the first problem."""
    if not isinstance(settings, dict):
        raise TicketsError(f"DeepSpeed settings must be a mapping of {', '.join(KEYS)}, not {type(settings).__name__}")
    unknown = sorted(set(settings) - set(KEYS))
    if "precision" in unknown:
        raise TicketsError("precision is a recipe setting, not a DeepSpeed one: give --precision (spec: "
                           "training.precision)")
    if unknown:
        raise TicketsError(f"unknown DeepSpeed setting '{unknown[0]}'; known: {', '.join(KEYS)}")
    base = settings.get("config") or {}
    base = read_config_file(base) if isinstance(base, str) else copy.deepcopy(base)
    if not isinstance(base, dict):
        raise TicketsError(f"DeepSpeed 'config' must be a JSON object or the path of one, not {type(base).__name__}")
    for key in RECIPE_OWNED:
        if key in base:
            raise TicketsError(f"the DeepSpeed config sets '{key}', but the recipe owns it (AdamW with a linear "
                               f"schedule); remove it from the DeepSpeed config")
    zero = base.get("zero_optimization") or {}
    declared = _json_precision(base)
    if declared not in ("fp32", precision):
        raise TicketsError(f"the DeepSpeed config enables {declared}, but the recipe's precision is "
                           f"{precision}; set the recipe's precision (--precision, spec training.precision) instead")
    stage = settings.get("zero_stage", zero.get("stage", 0))
    if isinstance(stage, bool) or stage not in ZERO_STAGES:
        raise TicketsError(f"DeepSpeed ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    offload = settings.get("offload_optimizer", _json_offload(zero))
    if not isinstance(offload, bool):
        raise TicketsError(f"DeepSpeed offload_optimizer must be true or false, got {offload!r}")
    if offload and stage == 0:
        raise TicketsError("DeepSpeed optimizer offload needs ZeRO stage 1, 2 or 3, got stage 0")
    _check_recipe_match(base, batch_size, max_grad_norm)
    accum = _grad_accum(settings, base, batch_size)
    extra = {k: v for k, v in base.items() if k not in DS_BATCH_KEYS + ("gradient_clipping",)}
    return DeepSpeedSettings(precision, stage, accum, offload, extra)


def check_device(settings: DeepSpeedSettings, cuda: bool) -> None:
    """Raise a TicketsError when this machine cannot run `settings` (fp16 needs a GPU)."""
    if settings.precision == "fp16" and not cuda:
        raise TicketsError("precision fp16 needs DeepSpeed on a GPU (not supported on CPU); use bf16 or fp32")


def engine_config(settings: DeepSpeedSettings, batch_size: int, max_grad_norm: float) -> dict:
    """The DeepSpeed config dict for one single-process engine running the recipe with `settings`."""
    config = copy.deepcopy(settings.extra)
    config.update(
        train_batch_size=batch_size,
        train_micro_batch_size_per_gpu=batch_size // settings.grad_accum,
        gradient_accumulation_steps=settings.grad_accum,
        gradient_clipping=float(max_grad_norm or 0.0),
        managed_gradient_accumulation=False,
    )
    config.setdefault("steps_per_print", 10**9)
    config["bf16"] = {**config.get("bf16", {}), "enabled": settings.precision == "bf16"}
    config["fp16"] = {**config.get("fp16", {}), "enabled": settings.precision == "fp16"}
    zero = dict(config.get("zero_optimization", {}), stage=settings.zero_stage)
    if settings.offload_optimizer:
        zero["offload_optimizer"] = {**zero.get("offload_optimizer", {}), "device": "cpu"}
        config["zero_force_ds_cpu_optimizer"] = False
    else:
        zero.pop("offload_optimizer", None)
    config["zero_optimization"] = zero
    return config


def _json_precision(base: dict) -> str:
    if (base.get("bf16") or base.get("bfloat16") or {}).get("enabled"):
        return "bf16"
    if (base.get("fp16") or {}).get("enabled"):
        return "fp16"
    return "fp32"


def _json_offload(zero: dict) -> bool:
    device = (zero.get("offload_optimizer") or {}).get("device", "none")
    return device not in ("none", None)


def _check_recipe_match(base: dict, batch_size: int, max_grad_norm: float) -> None:
    if "train_batch_size" in base and base["train_batch_size"] != batch_size:
        raise TicketsError(f"the DeepSpeed config's train_batch_size {base['train_batch_size']} differs from the "
                           f"recipe's batch_size {batch_size}; the recipe's batch_size is the effective batch")
    if "gradient_clipping" in base and float(base["gradient_clipping"]) != float(max_grad_norm or 0.0):
        raise TicketsError(f"the DeepSpeed config's gradient_clipping {base['gradient_clipping']} differs from the "
                           f"recipe's max_grad_norm {max_grad_norm}")


def _grad_accum(settings: dict, base: dict, batch_size: int) -> int:
    from_json = {"grad_accum": base.get("gradient_accumulation_steps"),
                 "micro_batch_size": base.get("train_micro_batch_size_per_gpu")}
    source = settings if {"grad_accum", "micro_batch_size"} & set(settings) else from_json
    accum, micro = source.get("grad_accum"), source.get("micro_batch_size")
    for name, value in (("grad_accum", accum), ("micro_batch_size", micro)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise TicketsError(f"DeepSpeed {name} must be a positive whole number, got {value!r}")
    if micro is not None:
        if batch_size % micro:
            raise TicketsError(f"DeepSpeed micro_batch_size {micro} does not divide the batch_size {batch_size}")
        if accum is not None and accum * micro != batch_size:
            raise TicketsError(f"DeepSpeed grad_accum {accum} x micro_batch_size {micro} != batch_size {batch_size}")
        return batch_size // micro
    accum = accum or 1
    if batch_size % accum:
        raise TicketsError(f"DeepSpeed grad_accum {accum} does not divide the batch_size {batch_size}")
    return accum
