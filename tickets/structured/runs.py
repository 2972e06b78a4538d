"""Structured runs written to folders: the search (fine-tune, score, prune) and the retraining of a subnetwork."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

from torch.utils.data import DataLoader, Subset

from ..config import TrajectoryConfig, content_hash
from ..data import Collate, TaskData
from ..devices import placed, training_device
from ..errors import TicketsError
from ..masks import Mask
from ..models import load_tokenizer, model_id
from ..paths import COMPACT_MODEL, GOOD_MASK, IMPORTANCE, MASK
from ..records import finished_metrics, read_json, reusable_metrics, write_json, write_result_dir
from ..session import TaskSession
from ..settings import check, setting
from . import get_structured_strategy, structured_strategy_helps
from .compact import compact, export_compacted
from .importance import Importance
from .search import search
from .structure import Layout, Structure
from .subnetworks import SUBNETWORKS, subnetwork

RETRAIN_KINDS = (*SUBNETWORKS, "full")


@dataclass(frozen=True)
class SearchConfig:
    """One structured search: the recipe that fine-tunes the full model, then how structures are scored and pruned."""

    trajectory: TrajectoryConfig
    strategy: str = setting("gradient-importance", "how heads and MLP blocks are scored",
                            choices=structured_strategy_helps, label="structured strategy")
    threshold: float = setting(0.9, "stop when the dev metric falls below this fraction of the full model's", gt=0,
                               le=1)
    head_fraction: float = setting(0.1, "fraction of the remaining heads pruned per step", gt=0, lt=1,
                                   label="head fraction")
    importance_samples: int | None = setting(256, "dev examples used to score heads and MLPs (null in a spec: the "
                                                  "whole first eval split, as Prasanna et al. did)", gt=0)

    def validate(self) -> SearchConfig:
        """Raise a TicketsError naming the first bad setting; return self."""
        check(self)
        self.trajectory.validate()
        return self

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "trajectory"}
        return {**data, "trajectory": asdict(self.trajectory)}

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        """Rebuild from `to_dict` output."""
        known = {f.name for f in fields(cls)} - {"trajectory"}
        return cls(TrajectoryConfig.from_dict(data["trajectory"]), **{k: v for k, v in data.items() if k in known})

    def content_key(self) -> str:
        """A hash of everything that determines the search's result."""
        identity = self.to_dict()
        identity["trajectory"] = self.trajectory.identity()
        return content_hash(identity)


def importance_batches(data: TaskData, samples: int | None, batch_size: int) -> list[dict]:
    """The first `samples` examples (None: all) of the task's first eval split, batched, for importance scoring."""
    split = next(iter(data.evals.values()))
    subset = Subset(split, range(len(split) if samples is None else min(samples, len(split))))
    return list(DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=Collate(data.pad_token_id)))


def _mask_metadata(session: TaskSession, subnet: str, extra: dict | None = None) -> dict:
    return {
        "model_id": model_id(session.model),
        "source_task": session.task.name,
        "seed": session.cfg.seed,
        "subnetwork": subnet,
        **(extra or {}),
    }


def run_search(
    cfg: SearchConfig, out_dir: str, progress: bool = True, on_step: Callable[[dict], None] | None = None
) -> dict:
    """Fine-tune the full model, then prune heads and MLPs while the dev metric holds, all on the run's device; write
    OUT (reused if done)."""
    cfg.validate()
    key = cfg.content_key()
    reused = reusable_metrics(out_dir, key)
    if reused is not None:
        return reused
    started_at = time.time()
    session = TaskSession.open(cfg.trajectory)
    scorer = get_structured_strategy(cfg.strategy).importance
    with placed(session.model, training_device()):  # training, scoring and every evaluation of the search
        trained = session.train(session.full_mask(), progress=progress, description="full model")
        batches = importance_batches(session.data, cfg.importance_samples, cfg.trajectory.train.batch_size)
        found = search(session.model, session.data, batches, scorer, session.task.main_metric, cfg.threshold,
                       cfg.head_fraction, cfg.trajectory.train.eval_batch_size, on_step)
    layout = Layout.of(session.model)
    mask = found.structure.to_mask(_mask_metadata(session, "good", {
        "method": cfg.strategy, "threshold": cfg.threshold, "head_fraction": cfg.head_fraction}))
    accepted = [step for step in found.history if step["above_threshold"]][-1]
    metrics = {
        "task": session.task.name,
        "seed": cfg.trajectory.seed,
        "model": model_id(session.model),
        "main_metric": session.task.main_metric,
        "metrics": trained.metrics,
        "sparsity": 0.0,
        "full_metric": found.full_metric,
        "good_metric_before_retraining": accepted["metric"],
        "threshold": cfg.threshold,
        "structure": found.structure.summary(),
        "weight_sparsity": found.structure.weight_sparsity(layout),
        "history": found.history,
        "mask_hash": mask.content_hash(),
        "train_wall_time_s": trained.wall_time_s,
        "wall_time_s": time.time() - started_at,
        "started_at": started_at,
        "finished_at": time.time(),
        "config": cfg.to_dict(),
        "content_key": key,
        "reused": False,
    }

    def fill(tmp: str) -> None:
        mask.save(os.path.join(tmp, GOOD_MASK))
        write_json(os.path.join(tmp, IMPORTANCE), found.importance.to_json())

    write_result_dir(out_dir, fill, metrics)
    return metrics


def load_search(search_dir: str) -> tuple[dict, Mask, Importance]:
    """A finished search folder's metrics, good mask and full-model importance."""
    metrics = finished_metrics(search_dir)
    if metrics is None or not os.path.isfile(os.path.join(search_dir, GOOD_MASK)):
        raise TicketsError(f"'{search_dir}' is not a finished structured search folder (no metrics.json or {GOOD_MASK})")
    importance = Importance.from_json(read_json(os.path.join(search_dir, IMPORTANCE)))
    return metrics, Mask.load(os.path.join(search_dir, GOOD_MASK)), importance


def search_recipe(search_dir: str) -> TrajectoryConfig:
    """The recipe a search folder was run with (the default for retraining its subnetworks)."""
    metrics, _, _ = load_search(search_dir)
    return SearchConfig.from_dict(metrics["config"]).trajectory


def run_retrain(
    kind: str, cfg: TrajectoryConfig, search_dir: str, out_dir: str, export: bool = False, progress: bool = True
) -> dict:
    """Retrain the `kind` subnetwork (good, random, bad, or the full model) of a search from the pre-trained weights."""
    if kind not in RETRAIN_KINDS:
        raise TicketsError(f"unknown subnetwork '{kind}'; choose one of {', '.join(RETRAIN_KINDS)}")
    cfg.validate()
    search_metrics, good_mask, importance = load_search(search_dir)
    key = content_hash({"kind": kind, "trajectory": cfg.identity(), "good": good_mask.content_hash(),
                        "importance": json.dumps(importance.to_json()), "export": export})
    reused = reusable_metrics(out_dir, key)
    if reused is not None:
        return reused
    started_at = time.time()
    session = TaskSession.open(cfg)
    layout = Layout.of(session.model)
    good = Structure.from_mask(good_mask, layout, f"model '{model_id(session.model)}'")
    structure = Structure.full(layout) if kind == "full" else subnetwork(kind, good, importance, cfg.seed)
    weight_mask = Mask(structure.weight_keep(layout), {"kind": "structured-expanded"})
    result = session.train(weight_mask, progress=progress, description=f"{kind} subnetwork")
    mask = structure.to_mask(_mask_metadata(session, kind, {"source_mask": good_mask.content_hash()}))
    metrics = session.record(weight_mask, result, level=0, started_at=started_at)
    metrics.update(
        subnetwork=kind,
        structure=structure.summary(),
        sparsity=structure.weight_sparsity(layout),
        search_dir=os.path.abspath(search_dir),
        search_full_metric=search_metrics["full_metric"],
        mask_hash=mask.content_hash(),
        source_mask_hash=good_mask.content_hash(),
        config=asdict(cfg),
        content_key=key,
        reused=False,
    )

    def fill(tmp: str) -> None:
        mask.save(os.path.join(tmp, MASK))
        if export:
            export_compacted(compact(session.model, structure), os.path.join(tmp, COMPACT_MODEL), load_tokenizer(cfg.model))

    write_result_dir(out_dir, fill, metrics)
    return metrics
