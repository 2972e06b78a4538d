"""A Tune callback that prints one line per finished level and measures what ran: trials at once, nodes, busy time."""

from __future__ import annotations

import time

from ray.tune import Callback
from rich.console import Console


class SweepProgress(Callback):
    """Prints finished levels; counts the most trials running at once and the nodes that trained, sums the time
    trials held their resources and the time spent training levels."""

    def __init__(self, console: Console):
        self.console = console
        self.trial_ids: set[str] = set()
        self.retries = 0
        self.busy_s = 0.0
        self.train_s = 0.0
        self.levels_trained = 0
        self.superseded = 0
        self.nodes: set[str] = set()
        self.peak_trials = 0
        self._open: dict[str, float] = {}

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment state: leave the console (it holds a lock) out."""
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, console=Console())

    @property
    def trials(self) -> int:
        """How many trials started (a retried trial counts once)."""
        return len(self.trial_ids)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """A trial (or its retry) got a slot."""
        if trial.trial_id not in self._open:
            self._open[trial.trial_id] = time.time()
        self.trial_ids.add(trial.trial_id)
        self.peak_trials = max(self.peak_trials, len(self._open))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """A level finished: print it."""
        if "piece_key" not in result:
            return
        self.nodes.add(result["node_id"])
        name = trial.config["piece"]["name"]
        metric = result.get("verdict") or f"{result['metric_name']} {result['main_metric']:.4f}"
        level = f"level {result['level']}: sparsity {result['sparsity']:.3f}  {metric}"
        if result["trained"]:
            self.levels_trained += 1
            self.superseded += result.get("superseded", 0)
            self.train_s += result["level_wall_time_s"]
            self.console.print(f"{time.strftime('%H:%M:%S')} {name} {level}  ({result['level_wall_time_s']:.0f} s)")
        else:
            self.console.print(f"{time.strftime('%H:%M:%S')} {name} {level}  (finished earlier)")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """A trial ended well."""
        self._close(trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A trial failed and will be retried from its last checkpoint."""
        self._close(trial)
        self.retries += 1
        self.console.print(f"[yellow]retrying[/] {trial.config['piece']['name']} after a failure "
                           f"({trial.num_failures} so far); finished levels are kept")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """A trial failed for good."""
        self._close(trial)
        self.console.print(f"[red]failed[/] {trial.config['piece']['name']}: {trial.error_file or 'see the Ray logs'}")

    def on_experiment_end(self, trials, **info) -> None:
        """The Tune run ended: trials a stop signal ended are busy until now."""
        for trial in trials:
            self._close(trial)

    def _close(self, trial) -> None:
        started = self._open.pop(trial.trial_id, None)
        if started is not None:
            self.busy_s += time.time() - started
