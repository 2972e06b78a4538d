"""Settings of a training recipe, an IMP trajectory and a branch run, and their content keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace

from . import RESULTS_VERSION
from .backends import PRECISIONS, backend_helps, check_backend, resolve_backend
from .pruning import SCHEDULES, pruning_method_helps, target_sparsity
from .errors import TicketsError
from .settings import check, setting

# Settings that do not change results: where the data lies (its content is fingerprinted), the model name (its
# identity is), how far the trajectory runs, how often it is evaluated on the way.
IDENTITY_EXCLUDED = frozenset({"data_dir", "model", "levels", "train.eval_every", "task"})
# Without early stopping, how often the next mask is drawn is a measurement that changes no result.
EARLY_STOP_SETTINGS = frozenset({"early_stop.threshold", "early_stop.check_every", "early_stop.relative"})


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning recipe, used unchanged at every level and by every branch."""

    epochs: float = setting(1.0, "training epochs (a fraction trains on part of the data)", gt=0)
    batch_size: int = setting(16, "examples per optimizer step", gt=0)
    learning_rate: float = setting(1e-4, "AdamW peak learning rate", gt=0, flag="--lr")
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = setting(0.0, "fraction of the optimizer steps with linear learning-rate warmup", ge=0, lt=1)
    max_grad_norm: float = setting(1.0, "gradient-norm clipping threshold (0: no clipping)", ge=0)
    max_seq_length: int = setting(128, "tokens per example (longer ones are truncated)", gt=0)
    max_train_samples: int | None = setting(None, "train on a fixed random subset of N training examples (SQuAD: "
                                                  "questions; default: all)", gt=0)
    max_eval_samples: int | None = setting(None, "evaluate on only the first N examples of each eval split "
                                                 "(SQuAD: questions; default: all)", gt=0)
    eval_batch_size: int = setting(64, "examples per evaluation batch", gt=0)
    eval_every: int = setting(0, "also evaluate every N optimizer steps (0: only after training)", ge=0)
    backend: str = setting("torch", "fine-tuning backend", choices=backend_helps)
    precision: str = setting("fp32", "training precision", choices=PRECISIONS)
    deepspeed: dict = setting(help="DeepSpeed settings: zero_stage, grad_accum or micro_batch_size, "
                                   "offload_optimizer, config (see tickets.backends.deepspeed_config)",
                              default_factory=dict)

    def validate(self) -> TrainConfig:
        """Raise a TicketsError naming the first out-of-range setting."""
        check(self)
        check_backend(self)
        return self


@dataclass(frozen=True)
class EarlyStopConfig:
    """Early-Bird stopping of pruned IMP levels (You et al. 2020): every `check_every` steps a level draws the mask the
    next level would get and measures its normalised Hamming distance to the previous check's; with `window` > 0 a
    pruned level that has a next level stops once its last `window` distances are all <= `threshold`, or, with
    `relative` > 0, all <= `relative` x the level's first distance (a threshold on the level's own scale)."""

    window: int = setting(0, "stop a pruned level once its last N mask distances are all <= the threshold (0: train "
                             "every level to the end)", ge=0, flag="--early-stop-window")
    threshold: float = setting(0.1, "the mask distance (normalised Hamming) at or below which the next mask counts as "
                                    "converged", ge=0, le=1, flag="--early-stop-threshold")
    check_every: int = setting(0, "draw the next level's mask every N optimizer steps, from step 0 (0: a tenth of the "
                                  "level's steps)", ge=0, flag="--mask-check-every")
    relative: float = setting(0.0, "stop once the last N mask distances are all <= this fraction of the level's first "
                                   "distance, instead of the fixed threshold (0: the fixed threshold)", ge=0, lt=1,
                              flag="--early-stop-relative")

    @property
    def enabled(self) -> bool:
        """True when pruned levels may stop early."""
        return self.window > 0

    def every(self, steps: int) -> int:
        """Steps between two checks in a level of `steps` optimizer steps."""
        return self.check_every or max(1, round(steps / 10))


@dataclass(frozen=True)
class TrajectoryConfig:
    """One IMP trajectory: task x seed x rewind x method (Chen et al. 2020, Algorithm 1)."""

    task: str = setting(help="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), mlm, squad or "
                             "squad-dev-split")
    seed: int = setting(0, "random seed (task head, data order, random pruning)", ge=0)
    model: str | None = setting(None, "hub id or local folder (default: the embedded all-MiniLM-L6-v2)")
    data_dir: str | None = setting(None, "folder in each task's own layout (DIR/SST-2/train.tsv, "
                                         "DIR/squad/v1.1/dev-v1.1.json); default: the Hugging Face Hub")
    method: str = setting("magnitude", "pruning method", choices=pruning_method_helps, label="pruning method")
    rate: float = setting(0.1, "fraction pruned per level", gt=0, lt=1, label="pruning rate")
    schedule: str = setting("original", "sparsity schedule: original prunes rate x the original count per level, "
                                        "remaining rate x what is left", choices=SCHEDULES)
    levels: int = setting(3, "last level to run (level 0 is dense)", ge=0)
    rewind: int = setting(0, "rewind point in steps (0 = pre-trained weights)", ge=0)
    rewind_percent: float | None = setting(None, "rewind point as a percentage of one training run's optimizer steps, "
                                                 "resolved from the training set actually loaded (instead of --rewind)",
                                           ge=0, lt=100)
    rewind_head: bool = setting(True, "reset the task head to gamma_i (its weights at the rewind point) at every "
                                      "level; the reference code keeps the trained head")
    include_pooler: bool | None = setting(None, "prune the pooler dense weight (default: only where the model's pooler "
                                                "was pre-trained)", off_flag="--exclude-pooler")
    train: TrainConfig = field(default_factory=TrainConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)

    def validate(self) -> TrajectoryConfig:
        """Raise a TicketsError naming the first bad setting; return self."""
        from .tasks import get_task

        get_task(self.task)
        check(self)
        if self.rewind_percent is not None and self.rewind:
            raise TicketsError("give the rewind point in steps or as a percentage (rewind_percent), not both")
        target_sparsity(self.levels, self.rate, self.schedule)
        self.train.validate()
        check(self.early_stop)
        if self.early_stop.enabled and not self.rewind_head:
            raise TicketsError("early stopping needs the head rewound at every level (rewind_head): a kept head would "
                               "come from a level that stopped early, so no full-length training could evaluate its "
                               "ticket")
        return self

    def without_early_stop(self) -> TrajectoryConfig:
        """The same recipe with every level trained to the end (how a ticket of an early-stopped level is evaluated)."""
        return replace(self, early_stop=EarlyStopConfig())

    @property
    def rewinds(self) -> bool:
        """True when the surviving weights rewind to a point after training started (theta_i is not theta_0)."""
        return self.rewind > 0 or bool(self.rewind_percent)

    def rewind_steps(self, total_steps: int) -> int:
        """The rewind point in optimizer steps, for a training run of `total_steps` steps."""
        return self.rewind if self.rewind_percent is None else round(self.rewind_percent / 100 * total_steps)

    def identity(self) -> dict:
        """What determines the trajectory's results: the settings that differ from their defaults (not where the data
        lies, how many levels run, or eval_every; the early-stop settings only where early stopping is on; the
        backend that runs, `auto` resolved on this run's device), a
        fingerprint of the data read, the model's identity, the results version. A new setting with a default leaves
        existing identities unchanged."""
        from .models import resolve_model
        from .provenance import data_fingerprint, model_identity
        from .tasks import get_task

        excluded = IDENTITY_EXCLUDED if self.early_stop.enabled else IDENTITY_EXCLUDED | EARLY_STOP_SETTINGS
        train = replace(self.train, backend=resolve_backend(self.train.backend))  # the backend that runs, not `auto`
        settings = _non_default(replace(self, train=train), excluded)
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
        data["early_stop"] = EarlyStopConfig(**data.get("early_stop", {}))
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
