"""A loaded task: data, model with fresh head, theta_0 and the prunable set, shared by the levels of one run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
from torch import nn

from . import RESULTS_VERSION
from .config import TrajectoryConfig
from .data import TaskData, load_task_data
from .masks import Mask
from .models import base_model, build_model, head_state, load_tokenizer, model_id, prunable_parameters, prunable_patterns
from .tasks import Task, get_task
from .training import StepWatch, TrainResult, fine_tune, masked_pairs
from .versions import library_versions
from .weights import parameter_state


@dataclass
class TaskSession:
    """Everything a level or branch run of one (model, task, seed) needs, loaded once."""

    cfg: TrajectoryConfig
    task: Task
    data: TaskData
    model: nn.Module
    theta_0: dict[str, torch.Tensor]
    patterns: tuple[str, ...]
    prunable: dict[str, nn.Parameter]

    @classmethod
    def open(cls, cfg: TrajectoryConfig) -> TaskSession:
        """Load data first (so a missing file fails before the model loads), then the model with head gamma_0."""
        task = get_task(cfg.task)
        tokenizer = load_tokenizer(cfg.model)
        train = cfg.train
        data = load_task_data(
            task, tokenizer, cfg.data_dir, train.max_seq_length, train.max_train_samples, train.max_eval_samples
        )
        model = build_model(cfg.model, task.kind, task.num_labels, cfg.seed)
        patterns = prunable_patterns(model, cfg.include_pooler)
        return cls(cfg, task, data, model, parameter_state(model), patterns, prunable_parameters(model, patterns))

    def encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of every encoder parameter, by encoder-relative name."""
        return {n: tuple(p.shape) for n, p in base_model(self.model).named_parameters()}

    def full_mask(self) -> Mask:
        """The dense mask (nothing pruned) over the prunable set."""
        keep = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in self.prunable.items()}
        return self.make_mask(keep, level=0)

    def make_mask(self, keep: dict[str, torch.Tensor], level: int, method: str | None = None) -> Mask:
        """A mask with this run's metadata."""
        meta = {
            "model_id": model_id(self.model),
            "level": level,
            "source_task": self.task.name,
            "seed": self.cfg.seed,
            "method": method or self.cfg.method,
            "schedule": self.cfg.schedule,
            "rate": self.cfg.rate,
            "rewind": self.cfg.rewind,
            "kind": "unstructured",
            "prunable_set": json.dumps(list(self.patterns)),
        }
        return Mask(keep, {k: str(v) for k, v in meta.items()})

    def train(self, mask: Mask, capture_at: int | None = None, progress: bool = True, description: str = "train",
              watch: StepWatch | None = None) -> TrainResult:
        """Fine-tune the session's model, as currently loaded, under `mask` (a `watch` may look on and stop it)."""
        mask.check_shapes(self.encoder_shapes(), f"model '{model_id(self.model)}'")
        params = dict(base_model(self.model).named_parameters())
        pairs = masked_pairs(params, mask.tensors)
        return fine_tune(self.model, self.data, self.cfg.train, pairs, self.cfg.seed, capture_at, progress, description,
                         watch)

    def head_state(self) -> dict[str, torch.Tensor]:
        """The current task-head weights."""
        return head_state(self.model)

    def record(self, mask: Mask, result: TrainResult, level: int, started_at: float) -> dict:
        """The metrics.json content of a finished run, with the library versions it ran on (`versions`)."""
        return {
            "level": level,
            "task": self.task.name,
            "seed": self.cfg.seed,
            "model": model_id(self.model),
            "sparsity": mask.sparsity,
            "prunable_set": list(self.patterns),
            "steps": result.steps,
            "train_loss": result.train_loss,
            "wall_time_s": result.wall_time_s,
            "started_at": started_at,
            "finished_at": time.time(),
            "metrics": result.metrics,
            "main_metric": self.task.main_metric,
            "eval_history": result.eval_history,
            "results_version": RESULTS_VERSION,
            "versions": library_versions(),
            "head_init": getattr(self.model, "ticket_head_init", None),
            "dropped_train_rows": self.data.dropped_train_rows,
            "not_comparable_to_published": self.task.dev_split,
        }
