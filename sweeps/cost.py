"""What a sweep will cost before it runs: per task (the task a piece trains on; a transfer's target) its trials,
fine-tuning runs and optimizer steps, how many of them the results store already holds, and the device-hours of the
rest.

Steps: every run of a piece trains `tickets.training.total_steps` steps on its task's training rows (sweeps.sizes).
Device time: about 6 x parameters FLOPs per training token and 2 x per evaluated token, every example counted at
max_seq_length (an upper bound: batches are padded only to their longest example), over the device's dense peak for
the recipe's precision (`DEVICES`; fp32 runs as TF32 on these GPUs) at `ASSUMED_MFU` utilisation. Where bench/gpu.py
measured fine-tuning throughput for a model of the same architecture on the same device class and precision
(its JSON, `runs/bench_gpu.json` by default), the measured tokens per second replace that assumption (an evaluated
token costing a third of a trained one). A run counts whole even where early stopping or a bisection trains less.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace

from tickets.config import TrainConfig
from tickets.models import TINY_CONFIG
from tickets.tasks import get_task
from tickets.training import total_steps

from .errors import SweepError
from .plan import Piece
from .sizes import DataSize, ModelSize, data_size, model_size
from .store import ResultsStore

ASSUMED_MFU = 0.40
TRAIN_FLOPS_PER_PARAMETER, EVAL_FLOPS_PER_PARAMETER = 6, 2
BENCH_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "bench_gpu.json")
# bench/gpu.py's fine-tuned models by architecture (layers, hidden, intermediate), at its full and its --tiny scale
# (where a TINY_CONFIG model stands in for BERT-base): any model of that shape runs at the speed measured for it.
BENCH_MODELS = {
    "full": {(12, 768, 3072): "bert-base (random weights)", (6, 384, 1536): "minilm"},
    "tiny": {tuple(TINY_CONFIG[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size")):
             "bert-base (random weights)"},
}


@dataclass(frozen=True)
class Device:
    """A device class: its dense peak TFLOP/s per recipe precision (per core for a CPU, whose trials use `cpus`)."""

    name: str
    peak_tflops: dict[str, float]
    per_core: bool = False

    def describe(self, precision: str) -> str:
        """The peak used, in words."""
        unit = "TFLOP/s per core" if self.per_core else "TFLOP/s"
        shown = "TF32" if precision == "fp32" and not self.per_core else precision
        return f"{self.peak_tflops[precision]:g} {unit} dense {shown} peak"


# Dense tensor-core peaks of the SXM parts (NVIDIA's data sheets; fp32 recipes run their matrix multiplications as
# TF32); a CPU core: 32 fp32 FLOP per cycle (two 256-bit FMA units) at about 3 GHz.
DEVICES = {
    "A100": Device("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
    "H100": Device("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.7}),
    "H200": Device("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.7}),
    "CPU": Device("CPU", {"bf16": 0.1, "fp16": 0.1, "fp32": 0.1}, per_core=True),
}


def get_device(name: str) -> Device:
    """The device class called `name` (any case), or a SweepError listing the known ones."""
    found = DEVICES.get(name.upper())
    if found is None:
        raise SweepError(f"unknown device '{name}' for the cost estimate; known: {', '.join(DEVICES)}")
    return found


@dataclass(frozen=True)
class Measured:
    """Fine-tuning throughput bench/gpu.py measured, and what it was measured on."""

    tokens_per_s: float
    what: str


def measured_throughput(path: str, device: Device, model: ModelSize, precision: str) -> Measured | None:
    """Dense fine-tuning tokens/s that bench/gpu.py recorded in `path` for a model of `model`'s architecture on
    `device`'s class in `precision` (its torch-backend row), or None when it holds no such measurement."""
    try:
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        scale = "full" if result["scale"]["bert_base"] is None else result["scale"]["bert_base"]
        on_cpu = result["device"] == "cpu"
        rows = result["finetune"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same_class = on_cpu if device.per_core else not on_cpu and device.name in result.get("machine", "")
    bench_model = BENCH_MODELS.get(scale, {}).get(model.architecture)
    if not same_class or bench_model is None:
        return None
    recipe = f"torch {precision}"
    for row in rows:
        if (row.get("model"), row.get("recipe"), row.get("variant")) == (bench_model, recipe, "dense") \
                and (row.get("tokens_per_s") or 0) > 0:
            return Measured(row["tokens_per_s"], f"{bench_model}, {recipe}, on {result['machine']} ({path})")
    return None


@dataclass
class TaskCost:
    """The work of the pieces that train on one task: all of it, what the store holds, and the device-hours of the
    rest (None when the model's size is unknown)."""

    task: str
    size: DataSize
    model: ModelSize | None
    trials: int = 0
    runs: int = 0
    runs_held: int = 0
    steps: int = 0
    steps_held: int = 0
    hours: float | None = 0.0
    hours_held: float | None = 0.0


@dataclass
class Estimate:
    """A sweep's cost per task, on one device class, and the assumptions it rests on."""

    device: Device
    tasks: list[TaskCost]
    basis: list[str] = field(default_factory=list)

    def total(self, name: str) -> float | None:
        """The sum of one TaskCost field over the tasks (None if any task's is unknown)."""
        values = [getattr(task, name) for task in self.tasks]
        return None if any(v is None for v in values) else sum(values)


def held_runs(storage: str, pieces: list[Piece]) -> dict[str, int]:
    """How many runs (levels) of each piece, by content key, the results store in `storage` already holds."""
    store = ResultsStore(storage)
    return {piece.key: len(store.finished_levels(piece)) for piece in pieces}


def run_steps(rows: int, cfg: TrainConfig) -> int:
    """Optimizer steps of one training run over `rows` rows: tickets.training.total_steps of a training set that
    size."""
    return total_steps(SimpleNamespace(train=range(rows)), cfg)


def estimate(pieces: list[Piece], held: dict[str, int], device: Device, cpus: float, unresolved: set[str],
             bench_json: str | None = None) -> Estimate:
    """The cost of `pieces` (with `held[key]` of each piece's runs already in the results store) on `device`
    (a CPU trial: `cpus` cores), with bench/gpu.py's measurements from `bench_json` (default: BENCH_JSON); Hub
    datasets in `unresolved` are not reachable."""
    bench_json = bench_json or BENCH_JSON
    tasks: dict[str, TaskCost] = {}
    speeds: dict[tuple, tuple[float | None, str]] = {}
    for piece in pieces:
        recipe, cfg = piece.recipe, piece.recipe.train
        task = get_task(recipe.task)
        reachable = task.hub[0] not in unresolved
        size = data_size(task.name, recipe.data_dir, recipe.model, cfg.max_seq_length, cfg.max_train_samples,
                         cfg.max_eval_samples, reachable)
        model = model_size(recipe.model, task.name)
        cost = tasks.setdefault(task.name, TaskCost(task.name, size, model))
        steps = run_steps(size.train_rows, cfg)
        runs, done = len(piece.levels), held.get(piece.key, 0)
        cost.trials += 1
        cost.runs += runs
        cost.runs_held += done
        cost.steps += runs * steps
        cost.steps_held += done * steps
        per_run = _run_hours(model, cfg, steps, size, device, cpus, bench_json, speeds)
        for name, count in (("hours", runs - done), ("hours_held", done)):
            value = getattr(cost, name)
            setattr(cost, name, None if value is None or per_run is None else value + count * per_run)
    basis = sorted({how for _, how in speeds.values()}) + _size_notes(tasks.values())
    if any(piece.recipe.early_stop.enabled for piece in pieces):
        basis.append("runs, steps and hours are upper bounds: an early-stopped level ends sooner, and a ticket "
                     "search (bisect, boundary) trains only the tickets it judges")
    return Estimate(device, list(tasks.values()), basis)


def _run_hours(model: ModelSize | None, cfg: TrainConfig, steps: int, size: DataSize, device: Device, cpus: float,
               bench_json: str, speeds: dict) -> float | None:
    """Device-hours of one training run and its evaluations; `speeds` collects how each speed was obtained."""
    if model is None:
        return None
    evaluations = 1 + ((steps - 1) // cfg.eval_every if cfg.eval_every else 0)
    train_tokens = steps * cfg.batch_size * cfg.max_seq_length
    eval_tokens = evaluations * size.eval_rows * cfg.max_seq_length
    key = (model.architecture, cfg.precision)
    if key not in speeds:
        speeds[key] = _speed(model, cfg.precision, device, cpus, bench_json)
    measured, _ = speeds[key]
    if measured is not None:
        return (train_tokens + eval_tokens / 3) / measured / 3600
    flops = model.parameters * (TRAIN_FLOPS_PER_PARAMETER * train_tokens + EVAL_FLOPS_PER_PARAMETER * eval_tokens)
    peak = device.peak_tflops[cfg.precision] * 1e12 * (cpus if device.per_core else 1)
    return flops / (peak * ASSUMED_MFU) / 3600


def _speed(model: ModelSize, precision: str, device: Device, cpus: float, bench_json: str) -> tuple[float | None, str]:
    """(measured tokens/s or None, how the device time of this model and precision is estimated)."""
    measured = measured_throughput(bench_json, device, model, precision)
    if measured is not None:
        return measured.tokens_per_s, (f"{device.name}: measured {measured.tokens_per_s:,.0f} fine-tuning tokens/s by "
                                       f"bench/gpu.py ({measured.what})")
    where = f"{device.name} ({cpus:g} core{'s' if cpus != 1 else ''} per trial)" if device.per_core else device.name
    return None, (f"{where} at {ASSUMED_MFU:.0%} MFU of its {device.describe(precision)} ({precision} recipes), "
                  f"assumed: run bench/gpu.py to measure it; {TRAIN_FLOPS_PER_PARAMETER} x parameters FLOPs per "
                  f"trained token, {EVAL_FLOPS_PER_PARAMETER} x per evaluated token, every example at max_seq_length "
                  "(an upper bound: batches pad only to their longest example)")


def _size_notes(tasks) -> list[str]:
    """One line per source of the row counts, and one per model size."""
    rows: dict[str, list[str]] = defaultdict(list)
    parameters: dict[str, list[str]] = defaultdict(list)
    for cost in tasks:
        rows[cost.size.source].append(cost.task + (f" ({cost.size.note})" if cost.size.note else ""))
        size = "unknown (the model's config is not reachable here, nor documented)" if cost.model is None else \
            f"{cost.model.parameters / 1e6:.1f}M (from its {cost.model.source})"
        parameters[size].append(cost.task)
    return ([f"training rows from {source}: {', '.join(names)}" for source, names in rows.items()]
            + [f"parameters with the task's head: {size} for {', '.join(names)}" for size, names in parameters.items()])
