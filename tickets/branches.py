"""Branches of a trajectory level: random pruning, random re-initialisation, one-shot, standard pruning, transfer."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .config import BRANCH_KINDS, TrajectoryConfig, content_hash
from .errors import TicketsError
from .imp import DENSE_TRAINED, REWIND_POINT, level_dir
from .masks import Mask
from .models import build_random_encoder, model_id
from .pruning import prune
from .records import reusable_metrics, write_result_dir
from .session import TaskSession
from .weights import load_parameter_state, load_weights


@dataclass(frozen=True)
class BranchConfig:
    """One branch run: `kind` trained with the trajectory's recipe at the sparsity of `mask_path`."""

    kind: str
    trajectory: TrajectoryConfig
    mask_path: str
    source_dir: str | None = None

    def validate(self) -> BranchConfig:
        """Raise a TicketsError naming the first bad setting; return self."""
        if self.kind not in BRANCH_KINDS:
            raise TicketsError(f"unknown branch '{self.kind}'; choose one of {', '.join(BRANCH_KINDS)}")
        self.trajectory.validate()
        Mask.load(self.mask_path)
        needs_folder = self.kind == "standard" or (self.kind == "random-prune" and self.trajectory.rewind > 0)
        if needs_folder:
            if self.source_dir is None:
                raise TicketsError(f"branch '{self.kind}' needs --trajectory (the folder of the IMP run it branches from)")
            needed = _source_file(self)
            if not os.path.isfile(needed):
                raise TicketsError(f"branch '{self.kind}' needs '{needed}', which does not exist")
        return self

    def content_key(self) -> str:
        """A hash of the branch kind, the recipe and the mask's content."""
        mask = Mask.load(self.mask_path)
        identity = self.trajectory.identity()
        identity.pop("levels", None)
        return content_hash({"kind": self.kind, "trajectory": identity, "mask": mask.content_hash()})


def _source_file(cfg: BranchConfig) -> str:
    if cfg.kind == "standard":
        return os.path.join(level_dir(cfg.source_dir, 0), DENSE_TRAINED)
    return os.path.join(cfg.source_dir, REWIND_POINT)


def run_branch(cfg: BranchConfig, out_dir: str, progress: bool = True) -> dict:
    """Train one branch into `out_dir` (mask.safetensors, metrics.json); reuse it when already finished."""
    cfg.validate()
    key = cfg.content_key()
    reused = reusable_metrics(out_dir, key)
    if reused is not None:
        return reused
    started_at = time.time()
    source = Mask.load(cfg.mask_path)
    session = TaskSession.open(cfg.trajectory)
    source.check_shapes(session.encoder_shapes(), f"model '{model_id(session.model)}'")
    mask = PREPARE[cfg.kind](cfg, session, source)
    level = int(source.metadata.get("level", 0))
    result = session.train(mask, progress=progress, description=f"{cfg.kind} level {level}")
    metrics = session.record(mask, result, level=level, started_at=started_at)
    metrics.update(
        branch=cfg.kind,
        content_key=key,
        source_task=source.metadata.get("source_task", ""),
        source_mask=os.path.abspath(cfg.mask_path),
        source_mask_hash=source.content_hash(),
        config=asdict(cfg.trajectory),
        reused=False,
    )
    write_result_dir(out_dir, lambda tmp: mask.save(os.path.join(tmp, "mask.safetensors")), metrics)
    return metrics


def _load_rewind_point(cfg: BranchConfig, session: TaskSession) -> None:
    """theta_i: the trajectory's rewind point, or theta_0 (with head gamma_0) for rewind 0."""
    load_parameter_state(session.model, session.theta_0)
    if cfg.trajectory.rewind > 0:
        load_parameter_state(session.model, load_weights(os.path.join(cfg.source_dir, REWIND_POINT)))


def _random_prune(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    _load_rewind_point(cfg, session)
    weights = {n: session.prunable[n].detach() for n in source.tensors}
    keep = prune("random", weights, source.sparsity, seed=cfg.trajectory.seed + 104729)
    return _branch_mask(session, keep, source, "random-prune")


def _random_reinit(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, session.theta_0)
    fresh = build_random_encoder(session.model, cfg.trajectory.seed)
    prefix = session.model.base_model_prefix + "."
    load_parameter_state(session.model, {prefix + n: t for n, t in fresh.items()})
    return _branch_mask(session, source.tensors, source, "random-reinit")


def _oneshot(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, session.theta_0)
    weights = {n: session.prunable[n].detach() for n in source.tensors}
    keep = prune("magnitude", weights, source.sparsity, seed=cfg.trajectory.seed)
    return _branch_mask(session, keep, source, "oneshot")


def _standard(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, load_weights(_source_file(cfg)))
    weights = {n: session.prunable[n].detach() for n in source.tensors}
    keep = prune("magnitude", weights, source.sparsity, seed=cfg.trajectory.seed)
    return _branch_mask(session, keep, source, "standard")


def _transfer(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, session.theta_0)
    return _branch_mask(session, source.tensors, source, "transfer")


def _branch_mask(session: TaskSession, keep: dict[str, torch.Tensor], source: Mask, kind: str) -> Mask:
    mask = session.make_mask(keep, level=int(source.metadata.get("level", 0)), method=kind)
    mask.metadata["source_task"] = source.metadata.get("source_task", session.task.name)
    mask.metadata["target_task"] = session.task.name
    return mask


PREPARE: dict[str, Callable[[BranchConfig, TaskSession, Mask], Mask]] = {
    "random-prune": _random_prune,
    "random-reinit": _random_reinit,
    "oneshot": _oneshot,
    "standard": _standard,
    "transfer": _transfer,
}
