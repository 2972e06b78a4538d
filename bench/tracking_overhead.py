"""Tracking overhead: a sweep trial's wall time with MLflow logging on vs off.

The sweep trial (`sweeps.trial.run_piece`) has no switch to turn MLflow off, so this runs the trial's work in-process:
the same real IMP trajectory as bench/sweep_efficiency.py (tiny random BERT on real SST-2), with logging on (the
trial's `TrialRecorder`: connect, log every finished level as it lands) or off (the
trajectory alone), interleaved on/off, off/on, ... on fresh seeds, against a fresh local SQLite store. The MLflow calls
are timed one by one, so the overhead is the measured logging time over the trial's time without it; the side-by-side
walls are shown too, but on a shared 2-core machine their difference is mostly noise.

Also measured: `import mlflow` plus connecting, which a trial pays once per fresh worker process; the driver's
per-sweep work (create the store, create one run per trial when it starts, reconcile at the end); and logging one level with the
mask of the embedded MiniLM and of a BERT-base-size model, whose artifacts are larger than the tiny model's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from sweep_efficiency import REPO, spec_text  # first: it sets the offline, quiet environment

from common import build_sized_model, machine, median

FRESH_WORKER = """
import sys, time
import ray, sweeps.trial  # what a Ray trial worker has imported before its TrialRecorder connects
from sweeps.mlflow_runs import TrialRecorder
start = time.perf_counter()
recorder = TrialRecorder(sys.argv[1], sys.argv[2])
print(time.perf_counter() - start)
assert not recorder.failed
"""


def run_trial(piece, store, uri: str, run_id: str | None) -> tuple[float, list[float], float]:
    """Run a trajectory as the trial does, logging to `run_id` (None: off): (wall, per-level logging, logging) s."""
    from sweeps.mlflow_runs import TrialRecorder
    from tickets.imp import run_trajectory

    start = time.perf_counter()
    per_level: list[float] = []
    other = 0.0
    recorder = None
    if run_id is not None:
        t = time.perf_counter()
        recorder = TrialRecorder(uri, run_id)
        other += time.perf_counter() - t

    def on_level(result) -> None:
        if recorder is not None:
            t = time.perf_counter()
            recorder.level(piece, result.level, store.result_dir(piece, result.level), None, not result.reused)
            per_level.append(time.perf_counter() - t)

    run_trajectory(piece.recipe, store.path(piece.key), on_level=on_level, progress=False)
    if recorder is not None and recorder.failed:
        raise SystemExit("MLflow logging failed during the benchmark")
    return time.perf_counter() - start, per_level, other + sum(per_level)


def fresh_worker_connect(uri: str, run_id: str) -> float:
    """Seconds to import mlflow and connect a trial's recorder in a fresh process that has the trial's imports."""
    out = subprocess.run([sys.executable, "-c", FRESH_WORKER, uri, run_id], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def big_mask_logging(client, experiment_id: str, piece, level_dir: str, size: str, reps: int,
                     tmp: str) -> tuple[float, float]:
    """(median s to log one level with a 50%-sparse mask of model `size`, mask MB), logged `reps` times."""
    from sweeps.mlflow_runs import log_result
    from tickets.masks import Mask
    from tickets.models import prunable_parameters, prunable_patterns
    from tickets.pruning import prune

    model = build_sized_model(size)
    params = prunable_parameters(model, prunable_patterns(model, size == "bert-base"))
    keep = prune("magnitude", {n: p.detach() for n, p in params.items()}, 0.5)
    folder = os.path.join(tmp, f"level_{size}")
    os.makedirs(folder)
    shutil.copy(os.path.join(level_dir, "metrics.json"), folder)
    Mask(keep, {"model_id": size}).save(os.path.join(folder, "mask.safetensors"))
    run_id = client.create_run(experiment_id, run_name=f"mask-{size}").info.run_id
    times = []
    for level in range(reps):
        t = time.perf_counter()
        log_result(client, run_id, piece, level, folder)
        times.append(time.perf_counter() - t)
    return median(times), os.path.getsize(os.path.join(folder, "mask.safetensors")) / 1e6


def main() -> None:
    """Interleave trials with logging on and off, time every MLflow call, and print the table."""
    from cluster import tracking
    from sweeps.plan import build_plan
    from sweeps.spec import load_spec
    from sweeps.store import ResultsStore
    from sweeps.mlflow_runs import SweepRuns

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="on/off trial pairs (plus one warm-up trial)")
    parser.add_argument("--levels", type=int, default=1, help="last IMP level of each trial (levels 0..L)")
    parser.add_argument("--samples", type=int, default=256, help="training examples per level")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a 1-CPU Ray trial (Ray sets OMP_NUM_THREADS to the trial's CPUs)
    tmp = tempfile.mkdtemp(prefix="to", dir="/tmp")
    try:
        uri = f"sqlite:///{tmp}/mlruns.db"
        spec_path = os.path.join(tmp, "spec.yaml")
        with open(spec_path, "w") as handle:
            handle.write(spec_text("tracking_overhead", os.path.join(tmp, "storage"), 2 * args.pairs + 1,
                                   args.levels, args.samples))
        spec = load_spec(spec_path)
        plan = build_plan(spec)
        store = ResultsStore(spec.storage)
        t = time.perf_counter()
        tracking.check_tracking(uri)
        create_s = time.perf_counter() - t
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(client, spec.name, uri)
        runs = SweepRuns(client, experiment_id, plan, store)
        t = time.perf_counter()
        run_ids = {piece.key: runs.open(piece) for piece in plan}
        prepare_s = (time.perf_counter() - t) / len(plan)
        run_trial(plan[0], store, uri, None)  # warm-up: imports, data cache, allocator
        walls: dict[bool, list[float]] = {True: [], False: []}
        per_level: list[float] = []
        logging_s: list[float] = []
        on_pieces = []
        close_s: list[float] = []
        for i, piece in enumerate(plan[1:]):
            pair, second = divmod(i, 2)
            on = (pair % 2 == 0) != bool(second)  # on, off | off, on | on, off ...
            wall, levels, total = run_trial(piece, store, uri, run_ids[piece.key] if on else None)
            walls[on].append(wall)
            if on:
                per_level += levels
                logging_s.append(total)
                on_pieces.append(piece)
                t = time.perf_counter()
                runs.close(piece, failed=False)  # what the driver's Tune callback does when the trial ends
                close_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        logged_runs = SweepRuns(client, experiment_id, on_pieces, store)  # the logged trials' series only
        if logged_runs.reconcile(ended=True):
            raise SystemExit("a logged trial left levels unlogged: the timings would miss them")
        reconcile_s = (time.perf_counter() - t) / len(on_pieces)
        connect_s = median([fresh_worker_connect(uri, run_ids[plan[0].key]) for _ in range(2)])
        level_dir = store.result_dir(on_pieces[0], 0)
        masks = {size: big_mask_logging(client, experiment_id, on_pieces[0], level_dir, size, args.pairs, tmp)
                 for size in ("minilm", "bert-base")}
        tiny_mb = os.path.getsize(os.path.join(level_dir, "mask.safetensors")) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    off, on, logged = median(walls[False]), median(walls[True]), median(logging_s)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} (other work shares these cores)")
    print(f"trial: IMP trajectory levels 0..{args.levels} of tiny-random-bert on {args.samples} real SST-2 examples "
          f"(as in sweep_efficiency.py), in-process on 1 thread, {args.pairs} on/off pairs interleaved; "
          "fresh local SQLite MLflow store")
    print(f"{'':<62} {'seconds':>8} {'n':>3}")
    rows = [
        ("trial wall, logging off (median)", off, len(walls[False])),
        ("trial wall, logging on (median)", on, len(walls[True])),
        ("MLflow calls in a logged trial (timed, median)", logged, len(logging_s)),
        (f"  of which one level: metrics + {tiny_mb * 1e3:.0f} kB mask artifact (median)", median(per_level),
         len(per_level)),
        ("import mlflow + connect, once per fresh worker process", connect_s, 2),
        ("driver, once per sweep: import mlflow, create the SQLite store", create_s, 1),
        ("driver, per trial: create its run with tags and params", prepare_s, len(plan)),
        ("driver, per trial: close its run when the trial ends", median(close_s), len(close_s)),
        ("driver, per trial: reconcile at the end (all logged)", reconcile_s, len(on_pieces)),
    ]
    rows += [(f"one level with a {mb:.1f} MB {size} mask (50% sparse, median)", s, args.pairs)
             for size, (s, mb) in masks.items()]
    for label, seconds, n in rows:
        print(f"{label:<62} {seconds:8.3f} {n:3d}")
    print(f"side by side: median wall on/off = {on / off:.3f}; walls on {' '.join(f'{w:.1f}' for w in walls[True])} s, "
          f"off {' '.join(f'{w:.1f}' for w in walls[False])} s (machine noise included; the timed calls are not)")
    print(f"headline: trial wall with logging on/off = {(off + logged) / off:.3f} (MLflow calls {logged:.2f} s over a "
          f"{off:.1f} s trial, {median(per_level):.2f} s per level), plus {connect_s:.1f} s once per fresh worker")

if __name__ == "__main__":
    main()
