"""Feeding pieces to Ray Tune as their inputs appear: a Tune Searcher that knows the sweep's dependencies.

Tune's usual trial list is fixed when the experiment starts. Here the searcher hands Tune the next ready piece each
time Tune asks for one: trajectories and structured searches first (they are the critical path and unblock
everything else), then every branch, transfer or subnetwork run whose source has finished, in the order they
finished. Tune asks whenever it has room for another pending trial; a trial starts when the cluster has its resources
free, and its pending trials are what the Ray autoscaler scales on (a ConcurrencyLimiter around the searcher caps
the trials at once only when the spec sets `resources.max_concurrent`). A piece waiting for a level is never
suggested, so no trial holds resources while it waits: a branch starts as soon as its mask exists, not after the
whole sweep, and all pieces get Tune's retries, checkpoints and resource scheduling.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Callable

from ray.tune.search import Searcher

from .plan import Piece


class PieceScheduler(Searcher):
    """Suggests one piece per trial, each as soon as the level it depends on is finished."""

    def __init__(self, pieces: list[Piece], ready_levels: set[tuple[str, int]], config: Callable[[Piece], dict]):
        super().__init__()
        self._config = config
        self._done = set(ready_levels)
        self._ready = deque(p for p in pieces if p.is_root)
        self._waiting = [p for p in pieces if not p.is_root]
        self._live: dict[str, Piece] = {}
        self.blocked: list[Piece] = []
        self._promote()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """No metric to optimise: accept Tune's (empty) search properties."""
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        """The config of the next ready piece, None while waiting for a level, FINISHED when nothing is left."""
        self._promote()
        if self._ready:
            piece = self._ready.popleft()
            self._live[trial_id] = piece
            return self._config(piece)
        if not self._waiting:
            return Searcher.FINISHED
        if not self._live:
            self.blocked.extend(self._waiting)
            self._waiting.clear()
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A level finished: pieces that need it become ready."""
        if "piece_key" in result:
            self._done.add((result["piece_key"], int(result["level"])))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A trial ended; when it failed for good, the pieces waiting for its unfinished levels can never run."""
        piece = self._live.pop(trial_id, None)
        if piece is None or not error:
            return
        stuck = [p for p in self._waiting if p.source_key == piece.key and (p.source_key, p.level) not in self._done]
        self.blocked.extend(stuck)
        self._waiting = [p for p in self._waiting if p not in stuck]

    def _promote(self) -> None:
        ready = [p for p in self._waiting if (p.source_key, p.level) in self._done]
        if ready:
            self._ready.extend(ready)
            self._waiting = [p for p in self._waiting if (p.source_key, p.level) not in self._done]

    def save(self, checkpoint_path: str) -> None:
        """Record which levels are done and which pieces are still waiting (for inspection; re-runs re-plan)."""
        with open(checkpoint_path, "w") as handle:
            json.dump({"done": sorted(self._done), "waiting": [p.key for p in self._waiting],
                       "blocked": [p.key for p in self.blocked]}, handle)

    def restore(self, checkpoint_path: str) -> None:
        """Reload the finished levels recorded by `save`."""
        with open(checkpoint_path) as handle:
            self._done |= {tuple(item) for item in json.load(handle)["done"]}
