"""Branches of a trajectory level (Chen et al. 2020's baselines and transfer): a registry of branch kinds.

A per-level kind trains once, from the weights and mask its `prepare` sets, with the trajectory's recipe at the
sparsity of one IMP level. A chain kind (standard pruning) runs its own series of levels (`tickets.standard`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .config import TrajectoryConfig, content_hash
from .errors import TicketsError
from .masks import Mask
from .lineage import SOURCE_MASK_HASH, SUPERSEDES, supersede
from .paths import MASK, REWIND_POINT_WEIGHTS, TRAINED_WEIGHTS, TRAJECTORY_SETTINGS, level_dir
from .models import POOLER_WEIGHT, initializer_weights, model_id
from .pruning import prune
from .records import finished_metrics, read_json, reusable_metrics, write_result_dir
from .session import TaskSession
from .weights import load_parameter_state, load_weights

TICKET = "ticket"
REINIT_SCOPES = ("prunable", "encoder")
DEFAULT_REINIT_SCOPE = "prunable"
RANDOM_PRUNE_SEED_OFFSET = 104729
REINIT_SEED_OFFSET = 7919


@dataclass(frozen=True)
class BranchConfig:
    """One per-level branch run: `kind` trained with the trajectory's recipe at the sparsity of `mask_path`.

    `reinit_scope` (random-reinit only): `prunable` redraws the prunable weights (the paper's baseline), `encoder`
    every encoder parameter (embeddings, LayerNorms and biases included).
    """

    kind: str
    trajectory: TrajectoryConfig
    mask_path: str
    source_dir: str | None = None
    reinit_scope: str = DEFAULT_REINIT_SCOPE

    def validate(self) -> BranchConfig:
        """Raise a TicketsError naming the first bad setting; return self."""
        branch = get_branch_kind(self.kind)
        if branch.chain:
            raise TicketsError(f"branch '{self.kind}' is a chain of its own levels: run it with `tickets.standard`")
        if self.reinit_scope not in REINIT_SCOPES:
            raise TicketsError(f"unknown reinit scope '{self.reinit_scope}'; choose one of {', '.join(REINIT_SCOPES)}")
        if self.reinit_scope != DEFAULT_REINIT_SCOPE and self.kind != "random-reinit":
            raise TicketsError("reinit scope applies to the random-reinit branch only")
        self.trajectory.validate()
        source = Mask.load(self.mask_path)
        if self.kind == TICKET:
            _check_ticket(self, int(source.metadata.get("level", 0)))
        if self.kind == "transfer" and _same_task(source.metadata.get("source_task"), self.trajectory.task):
            raise TicketsError(f"the mask was found on '{self.trajectory.task}' itself: "
                               "give the target task with --task")
        if branch.needs(self) is not None:
            if self.source_dir is None:
                raise TicketsError(f"branch '{self.kind}' needs --trajectory "
                                   "(the folder of the IMP run it branches from)")
            needed = self.source_file()
            if not os.path.isfile(needed):
                raise TicketsError(f"branch '{self.kind}' needs '{needed}', which does not exist")
        return self

    def source_file(self) -> str:
        """The file of the source trajectory this branch starts from."""
        return os.path.join(self.source_dir, get_branch_kind(self.kind).needs(self))

    def options(self) -> dict:
        """The branch's own settings beyond its kind (empty for kinds that have none)."""
        return branch_options(self.kind, self.reinit_scope)

    def content_key(self) -> str:
        """A hash of the branch kind and options, the recipe and the mask's content."""
        mask = Mask.load(self.mask_path)
        return content_hash({"kind": self.kind, **self.options(), "trajectory": self.trajectory.identity(),
                             "mask": mask.content_hash()})


def _same_task(source_task: str | None, task: str) -> bool:
    """True when a mask found on `source_task` would be trained on that same task (names compared canonically)."""
    from .tasks import get_task

    try:
        return get_task(str(source_task)).name == get_task(task).name
    except TicketsError:  # no source task, or one this code does not know: not the target
        return False


def branch_options(kind: str, reinit_scope: str) -> dict:
    """The settings of a branch of `kind` beyond its kind, as recorded and hashed (empty for kinds that have none)."""
    return {"reinit_scope": reinit_scope} if kind == "random-reinit" else {}


@dataclass(frozen=True)
class BranchKind:
    """A registered branch kind: its one-line definition, the file of the source trajectory folder it needs (a path
    in that folder, or None), and how it sets the weights and mask of its run (per-level kinds) or that it is a chain
    of its own levels. `reproduces` (optional) names a finished result folder that this branch's training would
    reproduce bit for bit, whose result it then takes instead of training (such a kind records `evaluation_steps`,
    the steps it trained itself)."""

    name: str
    definition: str
    needs: Callable[[BranchConfig], str | None]
    prepare: Callable[[BranchConfig, TaskSession, Mask], Mask] | None = None
    chain: bool = False
    reproduces: Callable[[BranchConfig], str | None] | None = None


def _rewind_point_file(cfg: BranchConfig) -> str | None:
    return REWIND_POINT_WEIGHTS if cfg.trajectory.rewinds else None


def _dense_trained_file(cfg: BranchConfig) -> str:
    return os.path.join(level_dir("", 0), TRAINED_WEIGHTS)


def _load_rewind_point(cfg: BranchConfig, session: TaskSession) -> None:
    """theta_i: the trajectory's rewind point, or theta_0 (with head gamma_0) for rewind 0."""
    load_parameter_state(session.model, session.theta_0)
    if cfg.trajectory.rewinds:
        load_parameter_state(session.model, load_weights(cfg.source_file()))


def _random_prune(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    _load_rewind_point(cfg, session)
    weights = {n: session.prunable[n].detach() for n in source.tensors}
    keep = prune("random", weights, source.sparsity, seed=cfg.trajectory.seed + RANDOM_PRUNE_SEED_OFFSET)
    return _branch_mask(session, keep, source, cfg.kind)


def _random_reinit(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    _load_rewind_point(cfg, session)
    fresh = initializer_weights(session.model, cfg.trajectory.seed + REINIT_SEED_OFFSET)
    redrawn = fresh if cfg.reinit_scope == "encoder" else {n: fresh[n] for n in session.prunable}
    prefix = session.model.base_model_prefix + "."
    load_parameter_state(session.model, {prefix + n: t for n, t in redrawn.items()})
    return _branch_mask(session, source.tensors, source, cfg.kind)


def _magnitude_from(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    weights = {n: session.prunable[n].detach() for n in source.tensors}
    keep = prune("magnitude", weights, source.sparsity, seed=cfg.trajectory.seed)
    return _branch_mask(session, keep, source, cfg.kind)


def _oneshot(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, session.theta_0)
    return _magnitude_from(cfg, session, source)


def _oneshot_finetuned(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, load_weights(cfg.source_file()))
    return _magnitude_from(cfg, session, source)


def _transfer(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    load_parameter_state(session.model, session.theta_0)
    return _branch_mask(session, source.tensors, source, cfg.kind)


def _ticket(cfg: BranchConfig, session: TaskSession, source: Mask) -> Mask:
    """theta_i loaded as an IMP level loads it, under the level's own mask."""
    load_parameter_state(session.model, session.theta_0)
    load_parameter_state(session.model, load_weights(cfg.source_file()))
    return _branch_mask(session, source.tensors, source, cfg.kind)


def _check_ticket(cfg: BranchConfig, level: int) -> None:
    if level < 1:
        raise TicketsError(f"a ticket is the mask of a pruned level (level >= 1), got level {level}")
    if not cfg.trajectory.rewind_head:
        raise TicketsError("a ticket trains from theta_i with its head gamma_i: it needs rewind_head")


def _same_level_trained_to_the_end(cfg: BranchConfig) -> str | None:
    """The trajectory level whose mask this ticket evaluates, when that level trained to the end with this recipe:
    it is then the ticket's full-length training already."""
    mask = Mask.load(cfg.mask_path)
    folder = level_dir(cfg.source_dir, int(mask.metadata.get("level", 0)))
    metrics = finished_metrics(folder)
    if metrics is None or (metrics.get("early_stop") or {}).get("stopped_at_step") is not None:
        return None
    settings = os.path.join(cfg.source_dir, TRAJECTORY_SETTINGS)
    if not os.path.isfile(settings) or not os.path.isfile(os.path.join(folder, MASK)):
        return None
    recipe = TrajectoryConfig.from_dict(read_json(settings)["config"]).without_early_stop()
    if recipe.identity() != cfg.trajectory.without_early_stop().identity():
        return None
    return folder if Mask.load(os.path.join(folder, MASK)).content_hash() == mask.content_hash() else None


def _fitted(source: Mask, session: TaskSession) -> Mask:
    """The source mask checked against the session's model; its pooler tensor is left out where the model has no
    pooler (a span-head model given a mask from a GLUE model that prunes it)."""
    shapes = session.encoder_shapes()
    if POOLER_WEIGHT in source.tensors and POOLER_WEIGHT not in shapes:
        source = Mask({n: t for n, t in source.tensors.items() if n != POOLER_WEIGHT}, dict(source.metadata))
    source.check_shapes(shapes, f"model '{model_id(session.model)}'")
    return source


def _branch_mask(session: TaskSession, keep: dict[str, torch.Tensor], source: Mask, kind: str) -> Mask:
    mask = session.make_mask(keep, level=int(source.metadata.get("level", 0)), method=kind)
    mask.metadata["source_task"] = source.metadata.get("source_task", session.task.name)
    mask.metadata["target_task"] = session.task.name
    return mask


BRANCHES: dict[str, BranchKind] = {
    kind.name: kind
    for kind in (
        BranchKind("random-prune", "a uniformly random mask of the level's sparsity over the prunable set, from "
                   "theta_i", _rewind_point_file, _random_prune),
        BranchKind("random-reinit", "the IMP mask on theta_i whose prunable weights are redrawn with the model's own "
                   "initializer (reinit scope 'encoder': every encoder weight)", _rewind_point_file, _random_reinit),
        BranchKind("oneshot", "magnitude pruning of theta_0 to the level's sparsity in one shot", lambda cfg: None,
                   _oneshot),
        BranchKind("standard", "Han et al.: a chain of its own levels, each pruning its previous level's trained "
                   "weights by global magnitude and training on, never rewinding", _dense_trained_file, chain=True),
        BranchKind("oneshot-finetuned", "magnitude pruning of the dense fine-tuned weights to the level's sparsity in "
                   "one shot, trained on", _dense_trained_file, _oneshot_finetuned),
        BranchKind("transfer", "a mask found on another task (or MLM) on theta_0 with a fresh head", lambda cfg: None,
                   _transfer),
        BranchKind(TICKET, "the level's own mask on theta_i, trained to the end: the ticket of a level that stopped "
                   "early (tickets.early); a level that trained to the end is its own ticket",
                   lambda cfg: REWIND_POINT_WEIGHTS, _ticket, reproduces=_same_level_trained_to_the_end),
    )
}
BRANCH_KINDS = tuple(BRANCHES)
# What a trajectory level records beyond its training, left out when a branch takes that level's result.
_LEVEL_ONLY = ("target_sparsity", "rewind_steps", "content_key", "run_key", "mask_distance", "mask_check_s",
               "early_stop")


def get_branch_kind(name: str) -> BranchKind:
    """The registered branch kind called `name`."""
    if name not in BRANCHES:
        raise TicketsError(f"unknown branch '{name}'; choose one of {', '.join(BRANCHES)}")
    return BRANCHES[name]


def run_branch(cfg: BranchConfig, out_dir: str, run_key: str | None = None, progress: bool = True) -> dict:
    """Train one per-level branch into `out_dir` (mask.safetensors, metrics.json); reuse it when already finished with
    this content key (which covers the mask it starts from); a finished result of another key is stale: set aside in
    `out_dir/superseded/` and trained again.

    `run_key` is the key of the run this result belongs to (a sweep's piece key), recorded beside the branch's own
    content key; by default the branch's own key."""
    cfg.validate()
    key = cfg.content_key()
    reused = reusable_metrics(out_dir, key)
    if reused is not None:
        return reused
    supersedes = None  # a finished result of another key (its mask, recipe or kind changed) is kept aside
    if finished_metrics(out_dir) is not None:
        supersedes = supersede([out_dir], out_dir, f"was trained from another mask than '{cfg.mask_path}' holds now "
                                                   "or with other settings")
    started_at = time.time()
    kind = get_branch_kind(cfg.kind)
    same = kind.reproduces(cfg) if kind.reproduces is not None else None
    if same is not None:
        return _take_result(cfg, same, out_dir, key, run_key, started_at, supersedes)
    session = TaskSession.open(cfg.trajectory)
    source = _fitted(Mask.load(cfg.mask_path), session)
    mask = kind.prepare(cfg, session, source)
    level = int(source.metadata.get("level", 0))
    result = session.train(mask, progress=progress, description=f"{cfg.kind} level {level}")
    metrics = session.record(mask, result, level=level, started_at=started_at)
    if kind.reproduces is not None:
        metrics["evaluation_steps"] = result.steps
    metrics.update(_branch_fields(cfg, source, key, run_key, supersedes))
    write_result_dir(out_dir, lambda tmp: mask.save(os.path.join(tmp, MASK)), metrics)
    return metrics


def _branch_fields(cfg: BranchConfig, source: Mask, key: str, run_key: str | None, supersedes: str | None) -> dict:
    """What a branch's metrics.json adds to its training record: kind, options, keys, source (and the stale result
    it replaced) and recipe."""
    return {"branch": cfg.kind, **cfg.options(), "content_key": key, "run_key": run_key or key,
            "source_task": source.metadata.get("source_task", ""), "source_mask": os.path.abspath(cfg.mask_path),
            SOURCE_MASK_HASH: source.content_hash(), **({SUPERSEDES: supersedes} if supersedes else {}),
            "config": asdict(cfg.trajectory), "reused": False}


def _take_result(cfg: BranchConfig, folder: str, out_dir: str, key: str, run_key: str | None,
                 started_at: float, supersedes: str | None) -> dict:
    """The branch's result taken from `folder`, whose training it would reproduce: that folder's training record
    (metrics, steps, loss, its wall time as `source_wall_time_s`) with 0 `evaluation_steps`."""
    found = finished_metrics(folder)
    metrics = {k: v for k, v in found.items() if k not in _LEVEL_ONLY}
    source = Mask.load(cfg.mask_path)
    mask = Mask(source.tensors, {**source.metadata, "method": cfg.kind, "target_task": cfg.trajectory.task})
    metrics.update(evaluation_steps=0, same_as=os.path.abspath(folder), source_wall_time_s=found["wall_time_s"],
                   wall_time_s=time.time() - started_at, started_at=started_at, finished_at=time.time(),
                   **_branch_fields(cfg, source, key, run_key, supersedes))
    write_result_dir(out_dir, lambda tmp: mask.save(os.path.join(tmp, MASK)), metrics)
    return metrics
