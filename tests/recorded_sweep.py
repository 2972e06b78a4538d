"""MLflow stores written by the sweep's own writer from recorded levels, for the analysis tests.

A sweep spec is planned as `python -m sweeps` plans it; the levels a test gives values for are written into a real
results store as the engine writes them (a result folder per level: its mask and its metrics.json), and the sweep's
own MLflow writer (`sweeps.mlflow_runs.SweepRuns`, `sweeps.sweep_run.open_sweep_run`) logs them exactly as a sweep's
driver does after its trials. So the reader is tested on what the writer writes, without training anything.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from cluster import tracking
from conftest import GLUE_DIR
from sweeps.mlflow_runs import SweepRuns, check_layout
from sweeps.plan import Piece, build_plan
from sweeps.series import series_key
from sweeps.spec import Spec, load_spec
from sweeps.store import ResultsStore, mask_name
from sweeps.sweep_run import open_sweep_run
from tickets.masks import Mask
from tickets.records import write_result_dir

MODEL = "tiny-random-bert"
PRUNABLE = [r"encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight",
            r"encoder\.layer\.\d+\.intermediate\.dense\.weight"]
MASK_SHAPES = {"encoder.layer.0.attention.self.query.weight": (8, 8),
               "encoder.layer.0.intermediate.dense.weight": (16, 8),
               "encoder.layer.1.attention.self.query.weight": (8, 8),
               "encoder.layer.1.intermediate.dense.weight": (16, 8), "pooler.dense.weight": (8, 8)}

# (piece, level) -> the level's metrics.json values ({"metrics": {...}, other fields}), or None: not finished.
Values = Callable[[Piece, int], "dict | None"]


def spec_text(name: str, storage: str, tasks=("sst2",), seeds=(0, 1, 2), levels: int = 3, rate: float = 0.2,
              schedule: str = "original", rewind: str = "0", branches: str = "", transfer: str = "") -> str:
    """A sweep spec on the tiny random BERT and real GLUE data (never trained here: its levels are recorded)."""
    return f"""\
name: {name}
model: {MODEL}
data_dir: {GLUE_DIR}
tasks: [{', '.join(tasks)}]
seeds: {list(seeds)}
pruning: {{rate: {rate}, schedule: {schedule}, levels: {levels}, rewind: [{rewind}]}}
training: {{epochs: 1, batch_size: 8, max_seq_length: 32, max_train_samples: 64, max_eval_samples: 32}}
branches: [{branches}]
transfer: [{transfer}]
storage: {storage}
"""


def make_mask(task: str, seed: int, level: int, sparsity: float, shapes: dict = MASK_SHAPES) -> Mask:
    """A random mask of about `sparsity`, fixed by (task, seed, level)."""
    g = torch.Generator().manual_seed(1000 * level + 10 * seed + sum(map(ord, task)))
    keep = 1.0 - sparsity
    tensors = {n: torch.rand(*s, generator=g) < keep * (0.8 if "query" in n else 1.1) for n, s in shapes.items()}
    return Mask(tensors, {"level": str(level), "seed": str(seed), "source_task": task, "model_id": MODEL})


_EMPTY_DB: list[str] = []


def sqlite_store(root) -> str:
    """The URI of the SQLite MLflow store `root/mlruns.db`, created empty when missing (as a copy of an empty store
    made once per session: creating MLflow's tables takes seconds)."""
    if not _EMPTY_DB:
        path = os.path.join(tempfile.mkdtemp(prefix="empty_mlflow_", dir=root.parent), "mlruns.db")
        tracking.client(f"sqlite:///{path}").search_experiments(max_results=1)
        _EMPTY_DB.append(path)
    if not (root / "mlruns.db").exists():
        shutil.copyfile(_EMPTY_DB[0], root / "mlruns.db")
    return f"sqlite:///{root / 'mlruns.db'}"


@dataclass
class Recorded:
    """A recorded sweep: its spec, plan, results store, MLflow client and writer, and its runs."""

    spec: Spec
    plan: list[Piece]
    store: ResultsStore
    client: object
    experiment_id: str
    runs: SweepRuns
    sweep_run: str | None

    def piece(self, kind: str, task: str, seed: int, level: int | None = None) -> Piece:
        """The plan's piece of `kind` on `task` with `seed` (at `level` for a per-level branch)."""
        found = [p for p in self.plan if p.kind == kind and p.recipe.task == task and p.recipe.seed == seed
                 and (level is None or p.level == level)]
        assert len(found) == 1, f"{len(found)} pieces {kind} {task} s{seed} L{level}"
        return found[0]

    def run_id(self, piece: Piece) -> str:
        """The MLflow run id of the series `piece` belongs to."""
        return self.runs.run_ids[series_key(piece)]


def record(root, text: str, uri: str, values: Values, sweep: bool = True, ended: bool = False) -> Recorded:
    """Write the levels `values` gives (each with a `make_mask` mask of its `mask_sparsity`) into the spec's results
    store and log them with the sweep's writer: runs
    settled as a sweep's driver settles them at its start, the sweep's own run opened (with `sweep`), and, with
    `ended`, the runs closed as at the end of a sweep (incomplete ones FAILED)."""
    path = root / f"spec_{abs(hash(text)) % 10**8}.yaml"
    path.write_text(text)
    spec = load_spec(str(path))
    plan = build_plan(spec)
    store = ResultsStore(spec.storage)
    for piece in plan:
        for level in piece.levels:
            record_level = values(piece, level)
            if record_level is None or store.level_metrics(piece, level) is not None:
                continue
            sparsity = record_level.pop("mask_sparsity", 0.0)
            mask = make_mask(piece.recipe.task, piece.recipe.seed, level, sparsity)
            metrics = {"level": level, "task": piece.recipe.task, "seed": piece.recipe.seed, "model": MODEL,
                       "sparsity": mask.sparsity, "prunable_set": PRUNABLE, "steps": 8, "wall_time_s": 1.0,
                       "started_at": time.time(), "finished_at": time.time(), **record_level}
            write_result_dir(store.result_dir(piece, level),
                             lambda tmp, mask=mask, piece=piece: mask.save(os.path.join(tmp, mask_name(piece))),
                             metrics)
    client = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(client, spec.name, uri)
    check_layout(client, experiment_id, spec.name)
    runs = SweepRuns(client, experiment_id, plan, store)
    runs.settle()
    sweep_run = open_sweep_run(client, experiment_id, spec, text, plan) if sweep else None
    runs.reconcile(ended=ended)
    return Recorded(spec, plan, store, client, experiment_id, runs, sweep_run)


def level_values(metric: str, value: float, level: int, **extra) -> dict:
    """A level's recorded metrics.json values: the task's main metric, eval_loss = 1 - value, train_loss."""
    return {"metrics": {metric: value, "eval_loss": 1.0 - value}, "train_loss": 0.1 * level,
            "mask_sparsity": 0.2 * level, **extra}

