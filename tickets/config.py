"""Settings of a training recipe, an IMP trajectory and a branch run, and their content keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace

from . import RESULTS_VERSION
from .errors import TicketsError
from .pruning import SCHEDULES, check_fraction

BACKENDS = ("auto", "torch", "deepspeed")
# Settings that do not change results: where the data lies (its content is fingerprinted), the model name (its
# identity is), how far the trajectory runs, how often it is evaluated on the way.
IDENTITY_EXCLUDED = frozenset({"data_dir", "model", "levels", "train.eval_every", "task"})


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning recipe, used unchanged at every level and by every branch."""

    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_batch_size: int = 64
    eval_every: int = 0
    backend: str = "torch"
    deepspeed: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Raise a TicketsError naming the first out-of-range setting."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                    "max_seq_length": self.max_seq_length, "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if value is None or value <= 0:
                raise TicketsError(f"{name} must be positive, got {value}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise TicketsError(f"{name} must be positive, got {value}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise TicketsError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.backend not in BACKENDS:
            raise TicketsError(f"unknown backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")
        from .backends import check_backend

        check_backend(self.backend, self.deepspeed, self.batch_size, self.max_grad_norm)
        return self


@dataclass(frozen=True)
class TrajectoryConfig:
    """One IMP trajectory: task x seed x rewind x method (Chen et al. 2020, Algorithm 1)."""

    task: str
    seed: int = 0
    model: str | None = None
    data_dir: str | None = None
    method: str = "magnitude"
    rate: float = 0.1
    schedule: str = "original"
    levels: int = 3
    rewind: int = 0
    rewind_head: bool = True
    include_pooler: bool | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> TrajectoryConfig:
        """Raise a TicketsError naming the first bad setting; return self."""
        from .pruning import STRATEGIES, LAYERWISE, target_sparsity
        from .tasks import get_task

        get_task(self.task)
        check_fraction(self.rate, "pruning rate")
        if self.schedule not in SCHEDULES:
            raise TicketsError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.method not in STRATEGIES and self.method not in LAYERWISE:
            known = sorted(set(STRATEGIES) | set(LAYERWISE))
            raise TicketsError(f"unknown pruning method '{self.method}'; choose one of {', '.join(known)}")
        if self.levels < 0:
            raise TicketsError(f"levels must be >= 0, got {self.levels}")
        if self.rewind < 0:
            raise TicketsError(f"rewind must be >= 0 steps, got {self.rewind}")
        target_sparsity(self.levels, self.rate, self.schedule)
        self.train.validate()
        return self

    def identity(self) -> dict:
        """What determines the trajectory's results: the settings that differ from their defaults (not where the data
        lies, how many levels run, or eval_every), a fingerprint of the data read, the model's identity, the results
        version. A new setting with a default leaves existing identities unchanged."""
        from .models import resolve_model
        from .provenance import data_fingerprint, model_identity
        from .tasks import get_task

        settings = _non_default(self, IDENTITY_EXCLUDED)
        settings["task"] = get_task(self.task).name
        if self.include_pooler is None:
            settings["pooler_pretrained"] = resolve_model(self.model).pooler_pretrained
        return {
            "settings": settings,
            "data": data_fingerprint(get_task(self.task), self.data_dir),
            "model": model_identity(self.model),
            "results_version": RESULTS_VERSION,
        }

    def content_key(self, level: int | None = None) -> str:
        """A short hash of the identity (and level, if given)."""
        data = self.identity()
        if level is not None:
            data["level"] = level
        return content_hash(data)

    @classmethod
    def from_dict(cls, data: dict) -> TrajectoryConfig:
        """Rebuild from `asdict` output."""
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def with_levels(self, levels: int) -> TrajectoryConfig:
        """The same trajectory run to `levels`."""
        return replace(self, levels=levels)


def _non_default(settings, excluded: frozenset[str], prefix: str = "") -> dict:
    """The fields of a settings dataclass (nested ones flattened as `outer.inner`) whose values differ from the
    field's default, leaving out the `excluded` names."""
    changed = {}
    for f in fields(settings):
        name = prefix + f.name
        value = getattr(settings, f.name)
        if name in excluded:
            continue
        if is_dataclass(value):
            changed.update(_non_default(value, excluded, f"{name}."))
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if value != default:
            changed[name] = value
    return changed


def content_hash(data: dict) -> str:
    """A 16-hex-digit SHA-256 of a JSON-serialisable dict."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
