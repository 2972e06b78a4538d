"""Sweep efficiency: how busy Ray Tune keeps the trial slots, and how throughput scales from one node to two.

Runs the same sweep of N short real trials (one IMP trajectory each: the tiny random BERT on real SST-2, seeds
0..N-1) through `sweeps.runner.run_sweep` three ways, each with fresh results storage, a fresh SQLite MLflow store and
a fresh Ray temp folder, so nothing is reused:

  local       a local Ray with K CPUs, K one-CPU trial slots (the slot busy fraction, target >= 0.90)
  1 node      ray.cluster_utils.Cluster, one node with 1 CPU (1 slot)
  2 nodes     ray.cluster_utils.Cluster, two nodes with 1 CPU each (2 slots); throughput vs 1 node, target >= 1.8

Slot busy fraction = sum of trial times / (slots x wall), where a trial's time is from Tune starting it to Tune seeing
it complete (worker start, model and data loading, training, evaluation, MLflow logging) and wall is Tune's whole run.
The level fraction counts only the time the engine spent inside levels (train, evaluate, write the level folder).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

os.environ.update(RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1",
                  HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")  # before Hugging Face is imported

from ray.tune import Callback  # noqa: E402
from rich.console import Console  # noqa: E402

from common import machine, median  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE = os.path.join(os.path.dirname(REPO), "shared", "data", "glue")


def spec_text(name: str, storage: str, trials: int, levels: int, samples: int) -> str:
    """A sweep spec of `trials` one-CPU IMP trajectories of the tiny random BERT on real SST-2."""
    return f"""\
name: {name}
model: tiny-random-bert
data_dir: {GLUE}
tasks: [sst2]
seeds: {list(range(trials))}
pruning: {{rate: 0.2, levels: {levels}, rewind: [0]}}
training: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, max_seq_length: 32, max_train_samples: {samples},
           max_eval_samples: 64}}
resources: {{cpus: 1}}
max_failures: 0
storage: {storage}
"""


class TrialClock(Callback):
    """When Tune started and ended the run and each trial, each trial's node, first level start and time in levels."""

    def __init__(self):
        self.run_started = 0.0
        self.run_ended = 0.0
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.node: dict[str, str] = {}
        self.first_level: dict[str, float] = {}
        self.level_s: dict[str, float] = {}

    def setup(self, **info) -> None:
        """Tune's run begins."""
        self.run_started = time.time()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """A trial got a slot."""
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """A level finished: add its time and note the node."""
        if "piece_key" in result:
            self.node[trial.trial_id] = result["node_id"]
            self.first_level.setdefault(trial.trial_id, result["started_at"])
            self.level_s[trial.trial_id] = (self.level_s.get(trial.trial_id, 0.0)
                                            + result["finished_at"] - result["started_at"])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """A trial ended."""
        self.ended[trial.trial_id] = time.time()

    def on_experiment_end(self, trials, **info) -> None:
        """Tune's run ends."""
        self.run_ended = time.time()


@dataclass
class Run:
    """One sweep run: its layout and what it measured."""

    label: str
    slots: int = 0
    trials: int = 0
    wall_s: float = 0.0
    end_to_end_s: float = 0.0
    trial_s: list[float] = field(default_factory=list)
    level_s: float = 0.0
    per_node: list[int] = field(default_factory=list)
    idle_before_s: float = 0.0
    idle_after_s: float = 0.0
    setup_cold_s: list[float] = field(default_factory=list)
    setup_warm_s: list[float] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def busy(self) -> float:
        """Sum of trial times / (slots x wall)."""
        return sum(self.trial_s) / (self.slots * self.wall_s)

    @property
    def level_fraction(self) -> float:
        """Sum of time inside levels / (slots x wall)."""
        return self.level_s / (self.slots * self.wall_s)

    @property
    def throughput(self) -> float:
        """Trials finished per minute of wall time."""
        return 60 * self.trials / self.wall_s

    @property
    def idle_between_s(self) -> float:
        """Idle slot-seconds between one trial ending and the next starting on a slot (the rest of the idle time)."""
        return self.slots * self.wall_s - sum(self.trial_s) - self.idle_before_s - self.idle_after_s

    def record(self, slots: int, wall_s: float, clock: TrialClock) -> None:
        """Fill in the measurements of a finished Tune run from its clock."""
        self.slots, self.wall_s, self.trials = slots, wall_s, len(clock.ended)
        by_start = sorted(clock.started, key=clock.started.get)
        self.trial_s = [clock.ended[t] - clock.started[t] for t in by_start]
        self.level_s = sum(clock.level_s.values())
        nodes = list(clock.node.values())
        self.per_node = sorted((nodes.count(n) for n in set(nodes)), reverse=True)
        self.idle_before_s = sum(clock.started[t] - clock.run_started for t in by_start[:slots])
        last = sorted(clock.ended.values())[-slots:]
        self.idle_after_s = sum(clock.run_ended - end for end in last)
        setup = [clock.first_level[t] - clock.started[t] for t in by_start]
        self.setup_cold_s, self.setup_warm_s = setup[:slots], setup[slots:]


def run_once(label: str, nodes: int | None, slots: int, args: argparse.Namespace) -> Run:
    """Run the sweep on a fresh local Ray of `slots` CPUs (nodes None) or a fresh Cluster of `nodes` 1-CPU nodes."""
    import ray
    from ray.cluster_utils import Cluster

    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec

    tmp = tempfile.mkdtemp(prefix="se", dir="/tmp")  # short: Ray's socket paths live under RAY_TMPDIR
    os.environ["RAY_TMPDIR"] = os.path.join(tmp, "ray")
    os.makedirs(os.environ["RAY_TMPDIR"])
    cluster = None
    run = Run(label)
    load_before = os.getloadavg()[0]
    try:
        spec_path = os.path.join(tmp, "spec.yaml")
        with open(spec_path, "w") as handle:
            handle.write(spec_text("sweep_efficiency", os.path.join(tmp, "storage"), args.trials, args.levels,
                                   args.samples))
        spec = load_spec(spec_path)
        with contextlib.redirect_stdout(sys.stderr):  # Tune's banners; the table alone goes to stdout
            if nodes is None:
                ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False)
            else:
                cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
                for _ in range(nodes - 1):
                    cluster.add_node(num_cpus=1)
                ray.init(address=cluster.address, log_to_driver=False)
            clock = TrialClock()
            started = time.time()
            result = run_sweep(spec, f"sqlite:///{tmp}/mlruns.db", Console(quiet=True), callbacks=[clock])
            run.end_to_end_s = time.time() - started
        if not result.ok or len(clock.ended) != args.trials:
            raise SystemExit(f"{label}: the sweep did not finish cleanly (failed: {result.failed})")
        run.record((nodes or 1) * slots, result.wall_s, clock)  # the cluster's one-CPU trial capacity
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        os.environ.pop("RAY_TMPDIR")
        shutil.rmtree(tmp, ignore_errors=True)
    run.load = (load_before, os.getloadavg()[0])
    return run


def main() -> None:
    """Run the sweep locally on K slots, then on one and on two simulated nodes, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=2, help="K: CPUs (= one-CPU trial slots) of the local Ray")
    parser.add_argument("--trials", type=int, default=8, help="N trials per sweep (>= 4K)")
    parser.add_argument("--levels", type=int, default=1, help="last IMP level of each trial (levels 0..L)")
    parser.add_argument("--samples", type=int, default=256, help="training examples per level")
    args = parser.parse_args()
    if args.trials < 4 * args.slots:
        parser.error(f"--trials must be >= 4 x --slots = {4 * args.slots}")
    os.environ.pop("RAY_ADDRESS", None)  # always a fresh Ray of the benchmark's own
    local = run_once(f"local, {args.slots} slots", None, args.slots, args)
    one = run_once("1 node x 1 slot", 1, 1, args)
    two = run_once("2 nodes x 1 slot", 2, 1, args)
    print(f"machine: {machine()}")
    print(f"sweep: {args.trials} trials, each one IMP trajectory (levels 0..{args.levels}) of tiny-random-bert on "
          f"{args.samples} real SST-2 examples, 1 CPU per trial; fresh storage, MLflow store and Ray per run")
    print("NOTE: the 2 simulated nodes are two Ray nodes (ray.cluster_utils.Cluster) on this one machine, sharing its "
          f"{os.cpu_count()} cores (and them with any other work: see load); they are not two machines")
    print(f"{'run':<18} {'slots':>5} {'wall s':>7} {'e2e s':>7} {'trial s':>7} {'sum trial':>9} {'busy':>5} "
          f"{'in lvl':>6} {'trials/min':>10} {'per node':>8} {'load 1m':>9}")
    for run in (local, one, two):
        print(f"{run.label:<18} {run.slots:5d} {run.wall_s:7.1f} {run.end_to_end_s:7.1f} {median(run.trial_s):7.1f} "
              f"{sum(run.trial_s):9.1f} {run.busy:5.2f} {run.level_fraction:6.2f} {run.throughput:10.2f} "
              f"{'/'.join(map(str, run.per_node)):>8} {run.load[0]:4.1f}/{run.load[1]:<4.1f}")
    print("wall: Tune run; e2e: whole run_sweep (MLflow runs prepared, Tune run, results reconciled); trial s: median "
          "trial; busy: sum trial / (slots x wall); in lvl: time inside levels / (slots x wall); load 1m: before/after")
    print(f"{local.label}: idle slot-s {local.slots * local.wall_s - sum(local.trial_s):.1f} = before first trials "
          f"{local.idle_before_s:.1f} + between trials {local.idle_between_s:.1f} + after last trials "
          f"{local.idle_after_s:.1f}; trial start -> first level: new workers {median(local.setup_cold_s):.1f} s, "
          f"reused workers {median(local.setup_warm_s):.1f} s (median)")
    ratio = two.throughput / one.throughput
    trial_speed = (sum(one.trial_s) / one.trials) / (sum(two.trial_s) / two.trials)
    print(f"2 nodes / 1 node throughput {ratio:.2f} = 2 slots x busy ratio {two.busy / one.busy:.2f} x "
          f"per-trial speed ratio {trial_speed:.2f} (mean trial {sum(one.trial_s) / one.trials:.1f} s alone, "
          f"{sum(two.trial_s) / two.trials:.1f} s two at a time)")
    print(f"headline: slot busy fraction {local.busy:.2f} on {args.slots} local slots (target >= 0.90); "
          f"2-node/1-node throughput {ratio:.2f} (target >= 1.8; both nodes on one {os.cpu_count()}-core machine)")


if __name__ == "__main__":
    main()
