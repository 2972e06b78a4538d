"""How losing a node counts against `max_failures`: it does not.

Ray Tune retries a failed trial from its last checkpoint while the trial's failures stay within `max_failures`. It
counts every failure except one whose node the autoscaler drained for preemption. Here a trial whose node was lost in
any way (a preempted spot instance, a node removed or crashed) also gets that failure back: its budget grows by one,
so `max_failures` bounds the failures a trial causes itself (an exception, its worker killed or out of memory on a
live node), and a multi-day sweep on preemptible nodes survives any number of preemptions. Tune decides on a retry
before a callback can tell why a trial failed, so a trial that had already used its whole budget on failures of its
own fails for good at its next failure of any kind.
"""

from __future__ import annotations

import os

from ray.tune import Callback
from rich.console import Console

NODE_DIED = "its node has died"  # Ray's text for an actor lost with its node (ActorDiedError)
FAILURE_HEADER = "Failure # "  # Tune's header of each failure in a trial's error file


class NodeLossPolicy(Callback):
    """Gives a retried trial back the failure Tune counted when the trial's node was lost."""

    def __init__(self, console: Console):
        self.console = console
        self.node_losses = 0
        self._counted: dict[str, int] = {}

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the experiment state: leave the console (it holds a lock) out."""
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, console=Console())

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A trial failed and will be retried: when its node was lost, that failure does not count."""
        counted = trial.num_failures > self._counted.get(trial.trial_id, 0)
        self._counted[trial.trial_id] = trial.num_failures
        if not lost_its_node(trial.error_file):
            return
        self.node_losses += 1
        if counted and trial.max_failures >= 0:
            trial.max_failures += 1
        self.console.print(f"[yellow]node lost[/]: {trial.config['piece']['name']} is retried on another node "
                           "(not counted against max_failures)")


def lost_its_node(error_file: str | None) -> bool:
    """True when the latest failure recorded in a trial's error file is the loss of the trial's node."""
    if not error_file or not os.path.isfile(error_file):
        return False
    with open(error_file, encoding="utf-8", errors="replace") as handle:
        latest = handle.read().rsplit(FAILURE_HEADER, 1)[-1]
    return NODE_DIED in latest
