"""Feeding pieces to Ray Tune as their inputs appear: a Tune Searcher that knows the sweep's dependencies.

Tune's usual trial list is fixed when the experiment starts. Here the searcher hands Tune the next ready piece each
time Tune asks for one: trajectories and structured searches first (they are the critical path and unblock
everything else), then every branch, transfer or subnetwork run whose source has finished, in the order they
finished. Tune asks whenever it has room for another pending trial; a trial starts when the cluster has its resources
free, and its pending trials are what the Ray autoscaler scales on (a ConcurrencyLimiter around the searcher caps
the trials at once only when the spec sets `resources.max_concurrent`). A piece waiting for a level is never
suggested, so no trial holds resources while it waits: a branch starts as soon as its mask exists, not after the
whole sweep, and all pieces get Tune's retries, checkpoints and resource scheduling.

The searcher runs on Tune's event loop, so it never waits on the tracking store: a ready piece whose MLflow run is not
there yet (`prepare` False; the run is being created in the background) is held aside and suggested once it is, and
every step costs the same however many pieces wait (they are indexed by the level they wait for).
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Callable

from ray.tune.search import Searcher

from .plan import Piece


class PieceScheduler(Searcher):
    """Suggests one piece per trial, each as soon as the level it depends on is finished."""

    def __init__(self, pieces: list[Piece], ready_levels: set[tuple[str, int]], config: Callable[[Piece], dict],
                 prepare: Callable[[Piece], bool] = lambda piece: True):
        super().__init__()
        self._config = config
        self._prepare = prepare
        self._done: set[tuple[str, int]] = set()
        self._ready: deque[Piece] = deque()
        self._held: list[Piece] = []
        self._waiting: dict[tuple[str, int], list[Piece]] = defaultdict(list)
        self._live: dict[str, Piece] = {}
        self.blocked: list[Piece] = []
        for piece in pieces:
            if piece.is_root:
                self._make_ready(piece)
            else:
                self._waiting[(piece.source_key, piece.level)].append(piece)
        for level in ready_levels:
            self._level_done(level)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """No metric to optimise: accept Tune's (empty) search properties."""
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        """The config of the next ready piece, None while waiting for a level or a run, FINISHED when nothing is
        left."""
        self._release_held()
        if self._ready:
            piece = self._ready.popleft()
            self._live[trial_id] = piece
            return self._config(piece)
        if not self._waiting and not self._held:
            return Searcher.FINISHED
        if not self._live and not self._held:
            self.blocked.extend(p for waiting in self._waiting.values() for p in waiting)
            self._waiting.clear()
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A level finished: pieces that need it become ready."""
        if "piece_key" in result:
            self._level_done((result["piece_key"], int(result["level"])))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A trial ended; when it failed for good, the pieces waiting for its unfinished levels can never run."""
        piece = self._live.pop(trial_id, None)
        if piece is None or not error:
            return
        for level in [level for level in self._waiting if level[0] == piece.key]:
            self.blocked.extend(self._waiting.pop(level))

    def _level_done(self, level: tuple[str, int]) -> None:
        self._done.add(level)
        for piece in self._waiting.pop(level, []):
            self._make_ready(piece)

    def _make_ready(self, piece: Piece) -> None:
        (self._ready if self._prepare(piece) else self._held).append(piece)

    def _release_held(self) -> None:
        """Pieces whose run now exists join the ready ones, ahead of those that became ready after them."""
        if not self._held:
            return
        released = [p for p in self._held if self._prepare(p)]
        if released:
            self._held = [p for p in self._held if p not in released]
            self._ready.extendleft(reversed(released))

    def save(self, checkpoint_path: str) -> None:
        """Record which levels are done and which pieces are still waiting (for inspection; re-runs re-plan)."""
        with open(checkpoint_path, "w") as handle:
            json.dump({"done": sorted(self._done), "waiting": [p.key for ps in self._waiting.values() for p in ps],
                       "blocked": [p.key for p in self.blocked]}, handle)

    def restore(self, checkpoint_path: str) -> None:
        """Reload the finished levels recorded by `save`."""
        with open(checkpoint_path) as handle:
            for level in json.load(handle)["done"]:
                self._level_done(tuple(level))
