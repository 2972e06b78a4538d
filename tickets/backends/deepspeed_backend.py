"""DeepSpeed fine-tuning in one process (no launcher), keeping masks exact in the model and in every fp32 master copy.

The engine trains a replica of the model; the original module is never converted by DeepSpeed (no bf16 cast, no
ZeRO-3 partitioning, no hooks), and `unwrap()` copies the fp32 master weights back into its own parameters. Pruned
entries are zeroed in the gradients by tensor hooks (before ZeRO reduces them, so Adam's moments stay zero there)
and, after every optimizer step, in the low-precision weights and the fp32 masters explicitly.
"""

from __future__ import annotations

import copy
import os
import socket
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..devices import allow_tf32, to_device, training_device
from ..errors import TicketsError
from .deepspeed_config import check_device, engine_config, recipe_settings
from .torch_backend import linear_schedule

if TYPE_CHECKING:
    from ..config import TrainConfig

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def import_deepspeed():
    """The deepspeed module, or a TicketsError saying why it cannot be used.

    Its C++ ops compile on first use into TORCH_EXTENSIONS_DIR, set here to ~/.cache/torch_extensions if unset.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions"))
    try:
        import deepspeed
    except Exception as exc:  # a broken install raises more than ImportError
        raise TicketsError(f"the deepspeed backend needs an importable deepspeed package: {exc}") from exc
    return deepspeed


class SingleProcessGroup:
    """A distributed world of one process on a free local port, for as long as it is open.

    Sets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE and LOCAL_RANK and starts the process group; `close()` destroys
    the group and restores the environment, so the next level in the same process can start its own. A process
    group that already exists (started by someone else) is used as it is and left alone.
    """

    def __init__(self):
        deepspeed = import_deepspeed()
        self.saved = {key: os.environ.get(key) for key in DIST_ENV}
        self.owned = not torch.distributed.is_initialized()
        if not self.owned:
            return
        try:
            self._start(deepspeed)
        except BaseException:
            self._restore_env()
            raise

    def _start(self, deepspeed) -> None:
        backend = deepspeed.accelerator.get_accelerator().communication_backend_name()
        for attempt in range(PORT_ATTEMPTS):
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                              LOCAL_RANK="0")
            try:
                deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
                return
            except torch.distributed.DistNetworkError:  # another process took the port in the meantime
                if attempt == PORT_ATTEMPTS - 1:
                    raise

    def close(self) -> None:
        """Destroy the process group this object started and restore the environment variables."""
        if self.owned and torch.distributed.is_initialized():
            import deepspeed

            deepspeed.comm.destroy_process_group()
            forget_deepspeed_groups()
        if self.owned:
            self._restore_env()
        self.owned = False

    def _restore_env(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


STALE_GROUPS = ("_WORLD_GROUP", "_ZERO_PARAM_INTRA_PARALLEL_GROUP", "_TENSOR_MODEL_PARALLEL_GROUP",
                "_MODEL_PARALLEL_GROUP", "_DATA_PARALLEL_GROUP", "mesh_device", "mpu")


def forget_deepspeed_groups() -> None:
    """Drop DeepSpeed's cached process groups once the world they belong to is destroyed, so the next engine in this
    process builds its own. DeepSpeed 0.19.8 does this in `destroy_process_group`; 0.19.7 and older keep the dead
    world's clone, and the next engine's first broadcast fails on it ('Group ... is not registered')."""
    from deepspeed.utils import groups

    for name in STALE_GROUPS:
        if hasattr(groups, name):
            setattr(groups, name, None)
    for name in ("_EXPERT_PARALLEL_GROUP", "_EXPERT_PARALLEL_GROUP_RANKS", "_EXPERT_DATA_PARALLEL_GROUP",
                 "_EXPERT_DATA_PARALLEL_GROUP_RANKS", "_ALL_TO_ALL_GROUP"):
        getattr(groups, name, {}).clear()


def engine_device_rank(deepspeed, device: torch.device) -> int:
    """The device index DeepSpeed's engine is to use for the run's `device` (a TicketsError where its accelerator
    cannot train there)."""
    accelerator = deepspeed.accelerator.get_accelerator().device_name()
    if accelerator != device.type:
        raise TicketsError(f"the deepspeed backend trains on DeepSpeed's accelerator ({accelerator}), but this run's "
                           f"device is {device}; use the torch backend there")
    return device.index or 0


class DeepSpeedBackend:
    """Trains a replica of the model with a DeepSpeed engine (AdamW, linear schedule) on the run's device; masks stay
    exactly zero."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int,
                 masked: list[tuple[nn.Parameter, torch.Tensor]]):
        deepspeed = import_deepspeed()
        settings = recipe_settings(cfg)
        check_device(settings, torch.cuda.is_available())
        device_rank = engine_device_rank(deepspeed, training_device())
        names = {id(p): n for n, p in model.named_parameters()}
        missing = [p for p, _ in masked if id(p) not in names]
        if missing:
            raise TicketsError(f"{len(missing)} masked tensors are not parameters of the model being trained")
        self.model = model
        self.accumulation = settings.grad_accum
        with torch.no_grad():
            for param, keep in masked:
                param.mul_(keep)
        self.group = SingleProcessGroup()
        try:
            replica = copy.deepcopy(model).train()
            optimizer = torch.optim.AdamW([p for p in replica.parameters() if p.requires_grad],
                                          lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
            warmup = int(cfg.warmup_ratio * total_steps)
            schedule = partial(linear_schedule, warmup_steps=warmup, total_steps=total_steps)
            with torch.random.fork_rng():
                self.engine, self.optimizer, _, _ = deepspeed.initialize(
                    args=SimpleNamespace(device_rank=device_rank), model=replica, optimizer=optimizer,
                    lr_scheduler=schedule, config=engine_config(settings, cfg.batch_size, cfg.max_grad_norm))
        except BaseException:
            self.group.close()
            raise
        self.device = self.engine.device
        allow_tf32(self.device)
        self.replica_params = dict(self.engine.module.named_parameters())
        self.pruned = [(self.replica_params[names[id(p)]], (keep == 0).to(self.device)) for p, keep in masked]
        self.hooks = [param.register_hook(partial(_zero_pruned_grad, pruned)) for param, pruned in self.pruned]
        self.fp32_of = _unfused_masters(self.optimizer)
        self.fragments = _pruned_fragments(self.pruned)
        self.apply_masks()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one micro-batch."""
        return self.engine(**to_device(batch, self.device)).loss

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of `loss` (already weighted by the caller); pruned entries get zero gradient."""
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> None:
        """Clip, update and advance the schedule once for the accumulated micro-batches, then re-apply the masks."""
        self.engine.step()
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Set every pruned weight to exactly zero in the engine's weights and in every fp32 master copy."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        for param, pruned in self.pruned:
            if hasattr(param, "ds_tensor"):
                _zero_zero3(param, pruned, rank)
            else:
                param.masked_fill_(pruned, 0)
            if id(param) in self.fragments:
                param._hp_mapping.hp_fragment.masked_fill_(self.fragments[id(param)], 0)
            if id(param) in self.fp32_of:
                self.fp32_of[id(param)].masked_fill_(pruned, 0)

    @torch.no_grad()
    def unwrap(self) -> nn.Module:
        """The original module, on the training device, holding the fp32 weights trained so far."""
        self.model.to(self.device)
        for name, param in self.model.named_parameters():
            param.copy_(self.full_fp32(self.replica_params[name]).view_as(param))
        return self.model

    def full_fp32(self, param: nn.Parameter) -> torch.Tensor:
        """The whole fp32 master of one engine parameter (the parameter itself where it is its own master)."""
        from deepspeed.utils import safe_get_full_fp32_param

        if hasattr(param, "ds_id") or getattr(param, "_hp_mapping", None) is not None:
            full = safe_get_full_fp32_param(param)
            if full is not None:
                return full
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                return param.detach().float().clone()
        return self.fp32_of.get(id(param), param).detach().float()

    def close(self) -> None:
        """Release the engine and its process group (the original module keeps its trained weights)."""
        if self.group is None:
            return
        try:
            for hook in self.hooks:
                hook.remove()
            self.engine.destroy()
        finally:
            self.engine = self.optimizer = None
            self.replica_params, self.pruned, self.fp32_of, self.fragments, self.hooks = {}, [], {}, {}, []
            self.group.close()
            self.group = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _zero_pruned_grad(pruned: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad.masked_fill(pruned, 0)


def _zero_zero3(param: nn.Parameter, pruned: torch.Tensor, rank: int) -> None:
    """Zero the pruned entries of a ZeRO-3 parameter: its local partition, and its full data where gathered."""
    from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

    local = param.ds_tensor.data.view(-1)
    flat = pruned.view(-1)
    part = flat[rank * local.numel():(rank + 1) * local.numel()]
    local[: part.numel()].masked_fill_(part, 0)
    if param.data.numel() == pruned.numel():
        param.data.masked_fill_(pruned.view_as(param.data), 0)
    fp32 = safe_get_local_fp32_param(param)
    if fp32 is not None:
        part = part.to(fp32.device)
        fp32 = fp32.clone()
        fp32.view(-1)[: part.numel()].masked_fill_(part, 0)
        safe_set_local_fp32_param(param, fp32)


def _pruned_fragments(pruned: list[tuple[nn.Parameter, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """For each parameter whose fp32 master is a fragment of a ZeRO 1/2 partition (by id): the pruned entries of that
    fragment, on the fragment's device (the CPU with optimizer offload), so no step copies a mask."""
    fragments = {}
    for param, mask in pruned:
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is not None:
            address = mapping.lp_fragment_address
            fragments[id(param)] = mask.view(-1).narrow(0, address.start, address.numel).to(mapping.hp_fragment.device)
    return fragments


def _unfused_masters(optimizer) -> dict[int, torch.Tensor]:
    """fp32 masters of DeepSpeed's unfused fp16/bf16 optimizer (ZeRO 0), by id of the low-precision parameter."""
    lows, highs = getattr(optimizer, "fp16_groups", None), getattr(optimizer, "fp32_groups", None)
    if not lows or not highs:
        return {}
    return {id(low): high for low_group, high_group in zip(lows, highs) for low, high in zip(low_group, high_group)}
