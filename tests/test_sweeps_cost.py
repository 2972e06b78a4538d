"""The dry run's cost estimate: trials, fine-tuning runs and optimizer steps counted from the training set's real
rows, the results store's finished results subtracted, and the device-hours on an assumed or a measured throughput."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import GLUE_DIR, REPO
from sweeps.cli import main
from sweeps.cost import ASSUMED_MFU, DEVICES, estimate, held_runs
from sweeps.plan import build_plan
from sweeps.sizes import model_size
from sweeps.spec import load_spec
from sweeps.store import ResultsStore
from tickets.imp import run_trajectory

SPEC = f"""\
name: cost
model: tiny-random-bert
data_dir: {GLUE_DIR}
tasks: [sst2, wnli]
seeds: [0, 1]
pruning:
  rate: 0.2
  levels: 2
training:
  epochs: 1
  batch_size: 16
  learning_rate: 0.001
  max_seq_length: 32
  max_train_samples: 40
  max_eval_samples: 16
recipes:
  wnli:
    epochs: 2
    batch_size: 32
    max_train_samples: null
branches:
  - kind: random-prune
    levels: [2]
  - kind: standard
    levels: all
transfer:
  - sources: [sst2]
    targets: [wnli]
    sparsity: 0.4
resources:
  cpus: 1
"""

# Counted by hand. Steps per run: sst2 trains 40 rows (max_train_samples) in batches of 16, 1 epoch: ceil(40/16) = 3;
# wnli all 635 rows of its train.tsv in batches of 32, 2 epochs: 2 x ceil(635/32) = 2 x 20 = 40.
# Trials and runs per task (2 seeds each): trajectories 2 x levels 0-2 = 6 runs; random-prune at level 2: 2 x 1 = 2;
# standard chains 2 x levels 1-2 = 4; and on wnli the sst2 -> wnli transfers, 2 x 1 = 2 (trained with wnli's recipe).
HAND = {
    "sst2": dict(trials=2 + 2 + 2, runs=6 + 2 + 4, steps=(6 + 2 + 4) * 3),          # 6 trials, 12 runs, 36 steps
    "wnli": dict(trials=2 + 2 + 2 + 2, runs=6 + 2 + 4 + 2, steps=(6 + 2 + 4 + 2) * 40),  # 8 trials, 14 runs, 560
}


def _spec(tmp_path):
    path = tmp_path / "cost.yaml"
    path.write_text(textwrap.dedent(SPEC) + f"storage: {tmp_path / 'store'}\n")
    return str(path), load_spec(str(path))


def _estimate(spec, device="CPU", bench_json=None):
    pieces = build_plan(spec)
    held = held_runs(spec.storage, pieces)
    return pieces, estimate(pieces, held, DEVICES[device], spec.resources.cpus, set(), bench_json or "/nonexistent")


def _cost_rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if ": cost on " in line)
    return {line.split()[0]: line.split() for line in lines[start + 2:] if line.split()[:1] in (["sst2"], ["wnli"],
                                                                                               ["total"])}


def test_trials_runs_and_steps_are_counted_from_the_training_sets(tmp_path):
    _, spec = _spec(tmp_path)
    _, cost = _estimate(spec)
    by_task = {task.task: task for task in cost.tasks}
    for task, hand in HAND.items():
        got = by_task[task]
        assert (got.trials, got.runs, got.steps, got.runs_held, got.steps_held) == (*hand.values(), 0, 0), task
    assert by_task["wnli"].size.train_rows == 635 and by_task["wnli"].size.source == "local files"
    assert (cost.total("trials"), cost.total("runs"), cost.total("steps")) == (14, 26, 596)
    # Device time on a CPU core (resources.cpus: 1) at its assumed peak and utilisation: 6 x parameters per trained
    # token (steps x batch x max_seq_length), 2 x per evaluated one (16 eval rows x max_seq_length, once per run).
    parameters = model_size("tiny-random-bert", "sst2").parameters
    flops = parameters * (12 * (6 * 3 * 16 * 32 + 2 * 16 * 32) + 14 * (6 * 40 * 32 * 32 + 2 * 16 * 32))
    assert cost.total("hours") == pytest.approx(flops / (0.1e12 * ASSUMED_MFU) / 3600)
    assert "40% MFU" in cost.basis[0] and "assumed: run bench/gpu.py to measure it" in cost.basis[0]


def test_finished_results_in_the_store_are_subtracted(tmp_path, capsys):
    path, spec = _spec(tmp_path)
    pieces, before = _estimate(spec)
    trajectory = next(p for p in pieces if p.name == "sst2-s0-r0-magnitude")
    run_trajectory(trajectory.recipe.with_levels(0), ResultsStore(spec.storage).path(trajectory.key), progress=False)
    _, after = _estimate(spec)
    sst2 = next(task for task in after.tasks if task.task == "sst2")
    assert (sst2.runs_held, sst2.steps_held) == (1, 3)  # level 0 of one sst2 trajectory: one run of 3 steps
    assert after.total("hours") + after.total("hours_held") == pytest.approx(before.total("hours"))
    assert after.total("hours") < before.total("hours")
    assert main([path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = _cost_rows(out)
    assert rows["sst2"][2:7] == ["6", "12", "1", "36", "3"] and rows["wnli"][2:7] == ["8", "14", "0", "560", "0"]
    assert rows["total"][1:6] == ["14", "26", "1", "596", "3"]
    assert any(line.split()[:2] == ["1", "trajectory"] and line.split()[-1] == "1/3" for line in out.splitlines())


def test_device_picks_the_peak_and_an_unknown_device_is_one_line_exit_2(tmp_path):
    path, spec = _spec(tmp_path)
    _, cpu = _estimate(spec, "CPU")
    _, h100 = _estimate(spec, "H100")
    assert cpu.total("hours") / h100.total("hours") == pytest.approx(494.7 / 0.1)  # fp32 recipe: H100's TF32 peak
    proc = subprocess.run([sys.executable, "-m", "sweeps", path, "--dry-run", "--device", "TPU"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: unknown device 'TPU' for the cost estimate; known: A100, H100, H200, CPU"
    assert main([path, "--dry-run", "--device", "h100"]) == 0  # any case
    assert main([path, "--dry-run", "--bench-json", str(tmp_path / "none.json")]) == 2
    assert main([path, "--device", "H100"]) == 2  # the estimate belongs to --dry-run


@pytest.mark.slow
def test_a_bench_gpu_measurement_of_the_model_and_device_replaces_the_assumption(tmp_path, capsys, bench_gpu_tiny):
    """bench/gpu.py --tiny measures a TINY_CONFIG model (tiny-random-bert's architecture) on the CPU."""
    proc, bench = bench_gpu_tiny
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(r for r in json.loads(bench.read_text())["finetune"]
               if (r["recipe"], r["variant"]) == ("torch fp32", "dense"))
    path, spec = _spec(tmp_path)
    _, cost = _estimate(spec, "CPU", str(bench))
    # Per run: trained tokens, plus evaluated tokens at a third of their cost, at the measured tokens per second.
    tokens = 12 * (3 * 16 * 32 + 16 * 32 / 3) + 14 * (40 * 32 * 32 + 16 * 32 / 3)
    assert cost.total("hours") == pytest.approx(tokens / row["tokens_per_s"] / 3600)
    assert main([path, "--dry-run", "--bench-json", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "by bench/gpu.py" in out and "assumed" not in out
    _, h100 = _estimate(spec, "H100", str(bench))  # a CPU measurement says nothing about an H100
    assert "assumed" in h100.basis[0]
