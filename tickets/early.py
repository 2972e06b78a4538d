"""Early tickets (You et al. 2020, Early-Bird): how far the mask the next IMP level would get moves while a level
trains, and when it has converged.

Every `check_every` optimizer steps, from step 0, a level draws the next level's mask from its current weights with
the `prune()` call that draws it at the end of the level (`next_draw` gives both the same sparsity and seed), and
records its normalised Hamming distance over the prunable set to the previous check's mask. With early stopping on
(`EarlyStopConfig.window` > 0), a pruned level whose schedule has a next level stops as soon as its last `window`
distances are all <= `threshold`; the next mask is then drawn from the weights at that step. Level 0 always trains to the end: it is
the dense reference every ticket is judged against, and it gives theta_i and the dense fine-tuned weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import EarlyStopConfig, TrajectoryConfig
from .errors import TicketsError
from .models import base_model
from .pruning import prune, target_sparsity


def mask_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The normalised Hamming distance of two keep-masks over the same tensors: the fraction of weights kept by one
    and pruned by the other (0: identical, 1: complementary)."""
    if a.keys() != b.keys():
        raise TicketsError("masks over different tensors have no distance")
    differ = sum(int(torch.count_nonzero(a[name] ^ b[name])) for name in a)
    total = sum(t.numel() for t in a.values())
    return differ / total if total else 0.0


def converged(distances: list[float], window: int, threshold: float) -> bool:
    """The Early-Bird rule: the last `window` distances (at least that many) are all <= `threshold`."""
    return window > 0 and len(distances) >= window and all(d <= threshold for d in distances[-window:])


def level_threshold(rule: EarlyStopConfig, distances: list[float]) -> float | None:
    """The threshold a level's distances are held to: the fixed one, or with a relative rule that fraction of the
    level's first distance (None before the first distance)."""
    if not rule.relative:
        return rule.threshold
    return rule.relative * distances[0] if distances else None


def next_draw(cfg: TrajectoryConfig, level: int) -> tuple[float, int] | None:
    """The sparsity and pruning seed the mask of level + 1 is drawn with (None when the schedule ends at 100%)."""
    try:
        sparsity = target_sparsity(level + 1, cfg.rate, cfg.schedule)
    except TicketsError:
        return None
    return sparsity, cfg.seed * 1000 + level + 1


@dataclass
class MaskWatch:
    """Draws the next level's mask every `every` steps during one level's training and records its distance to the
    previous draw; stops the level when `may_stop` and the Early-Bird rule holds. Reads the weights on the CPU (where
    the end of the level draws them too), touching neither them nor any random stream."""

    method: str
    sparsity: float
    seed: int
    current: dict[str, torch.Tensor]
    every: int
    rule: EarlyStopConfig
    may_stop: bool
    distances: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    converged_at: int | None = None
    stopped_at: int | None = None
    _previous: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, step: int, model: nn.Module) -> bool:
        """Draw the would-be next mask after `step` steps; True stops training here."""
        started = time.perf_counter()
        params = dict(base_model(model).named_parameters())
        weights = {name: params[name].detach().to("cpu") for name in self.current}
        keep = prune(self.method, weights, self.sparsity, current=self.current, seed=self.seed)
        if self._previous is not None:
            self.distances.append({"step": step, "distance": mask_distance(self._previous, keep)})
        self._previous = keep
        distances = [d["distance"] for d in self.distances]
        threshold = level_threshold(self.rule, distances)
        if self.converged_at is None and threshold is not None and converged(distances, self.rule.window, threshold):
            self.converged_at = step
        stop = self.may_stop and self.converged_at is not None
        if stop:
            self.stopped_at = step
        self.seconds += time.perf_counter() - started
        return stop


def level_watch(cfg: TrajectoryConfig, mask_tensors: dict[str, torch.Tensor], level: int,
                steps: int) -> MaskWatch | None:
    """The watch of one IMP level of `steps` optimizer steps trained under `mask_tensors` (None where the schedule has
    no next level); it may stop the level only where early stopping is on and the level is pruned. The trajectory's
    last level is watched like any other (its next mask is drawn too), so a level's result never depends on how many
    levels the trajectory runs, which content keys leave out."""
    draw = next_draw(cfg, level)
    if draw is None:
        return None
    sparsity, seed = draw
    rule = cfg.early_stop
    return MaskWatch(cfg.method, sparsity, seed, mask_tensors, rule.every(steps), rule,
                     may_stop=rule.enabled and level >= 1)


def level_record(cfg: TrajectoryConfig, watch: MaskWatch | None) -> dict:
    """What a level's metrics.json records of its checks: `mask_distance` by step and `mask_check_s` (levels with a
    next level), and where early stopping is on `early_stop` (the rule, whether the level could stop, where the rule
    first held and where it stopped, null when it trained to the end)."""
    record = {}
    if watch is not None:
        record.update(mask_distance=watch.distances, mask_check_s=watch.seconds)
    if cfg.early_stop.enabled:
        record["early_stop"] = {
            "window": cfg.early_stop.window, "threshold": cfg.early_stop.threshold,
            "relative": cfg.early_stop.relative or None,
            "level_threshold": None if watch is None else level_threshold(
                cfg.early_stop, [d["distance"] for d in watch.distances]),
            "check_every": None if watch is None else watch.every,
            "may_stop": watch is not None and watch.may_stop,
            "converged": watch is not None and watch.converged_at is not None,
            "converged_at_step": None if watch is None else watch.converged_at,
            "stopped_at_step": None if watch is None else watch.stopped_at,
        }
    return record
