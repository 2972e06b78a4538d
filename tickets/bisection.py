"""The sparsest matching ticket of one early-stopped trajectory, found by bisection over its pruned levels.

An early-stopped search (tickets.early) draws every level's mask cheaply, but the accuracy of a level that stopped
early is not its ticket's: each ticket judged needs a full-length training from theta_i with its mask (branch kind
`ticket`). Bisection judges as few of them as it can, under one assumption, recorded in every result:
MONOTONE_ASSUMPTION. One trajectory holds one seed, so a level matches when its ticket's main dev metric is at least
that seed's dense (level 0) metric minus `tolerance` (at most plus it where lower is better); DESIGN.md's matching
rule over seeds (mean >= dense mean - dense std) is applied by the report to whatever was evaluated.

Results: `OUT/evaluations/level_XX/` holds each ticket training (resumable, reused by content key); once bisection
has decided, `OUT/level_XX/` is written for every pruned level: an evaluated level carries its ticket's metrics, every
level the whole record (`bisection`: levels judged in order and why, the sparsest matching level) and its own verdict
(`evaluated`, `matches`: inferred from the assumption where not evaluated).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable

from . import RESULTS_VERSION
from .branches import TICKET, BranchConfig, run_branch
from .config import TrajectoryConfig, content_hash
from .errors import TicketsError
from .imp import LevelResult
from .masks import Mask
from .paths import MASK, TICKET_EVALUATIONS, level_dir
from .records import finished_metrics, write_result_dir
from .tasks import LOWER_IS_BETTER

KIND = "ticket-bisect"
MONOTONE_ASSUMPTION = ("matching is assumed monotone in sparsity: once a level's ticket fails to match, every sparser "
                       "level's fails too (so every level denser than a matching one matches)")


def bisection_key(cfg: TrajectoryConfig, trajectory_key: str, tolerance: float) -> str:
    """The content key of the bisection over the trajectory with content key `trajectory_key`."""
    return content_hash({"branch": KIND, "tolerance": tolerance, "recipe": cfg.without_early_stop().identity(),
                         "source": trajectory_key})


def bisect_sparsest(levels: list[int], matches: Callable[[int], bool]) -> tuple[int | None, list[dict]]:
    """The sparsest of `levels` (given densest first) whose ticket matches, judging levels one by one as bisection
    picks them under MONOTONE_ASSUMPTION: the sparsest level first, then the middle of the undecided range. Returns it
    (None when none matches) and the judged levels in order, each with its verdict and why it was judged."""
    trace: list[dict] = []

    def judge(index: int, reason: str) -> bool:
        verdict = bool(matches(levels[index]))
        trace.append({"level": levels[index], "matches": verdict, "reason": reason})
        return verdict

    if not levels:
        return None, trace
    if judge(len(levels) - 1, "the sparsest level: if it matches, every denser level does"):
        return levels[-1], trace
    matching, failing = -1, len(levels) - 1  # levels[:matching + 1] match, levels[failing:] fail
    while failing - matching > 1:
        middle = (matching + failing) // 2
        undecided = f"levels {levels[matching + 1]}-{levels[failing - 1]}"
        if judge(middle, f"the middle of the undecided {undecided}"):
            matching = middle
        else:
            failing = middle
    return (levels[matching] if matching >= 0 else None), trace


def run_bisection(cfg: TrajectoryConfig, trajectory_dir: str, out_dir: str, tolerance: float, key: str | None = None,
                  on_level: Callable[[LevelResult], None] | None = None, progress: bool = True) -> list[LevelResult]:
    """Find the sparsest matching ticket of the finished trajectory in `trajectory_dir` (levels 0..cfg.levels) by
    bisection, training the tickets it judges into `out_dir`; write `out_dir/level_XX/` for every pruned level."""
    cfg = cfg.without_early_stop().validate()
    if tolerance < 0:
        raise TicketsError(f"tolerance must be >= 0, got {tolerance}")
    missing = [lv for lv in range(cfg.levels + 1) if finished_metrics(level_dir(trajectory_dir, lv)) is None]
    if missing:
        raise TicketsError(f"bisection needs levels 0-{cfg.levels} of '{trajectory_dir}'; level {missing[0]} is not "
                           "finished")
    key = key or bisection_key(cfg, finished_metrics(level_dir(trajectory_dir, 0))["run_key"], tolerance)
    levels = list(range(1, cfg.levels + 1))
    done = [finished_metrics(level_dir(out_dir, lv)) for lv in levels]
    if all(m is not None and m.get("run_key") == key for m in done):
        results = [LevelResult(lv, level_dir(out_dir, lv), m, reused=True) for lv, m in zip(levels, done)]
    else:
        results = _decide(cfg, trajectory_dir, out_dir, tolerance, key, levels, progress)
    for result in results:
        if on_level is not None:
            on_level(result)
    return results


def _decide(cfg: TrajectoryConfig, trajectory_dir: str, out_dir: str, tolerance: float, key: str,
            levels: list[int], progress: bool) -> list[LevelResult]:
    started_at = time.time()
    dense = finished_metrics(level_dir(trajectory_dir, 0))
    metric = dense["main_metric"]
    lower = metric in LOWER_IS_BETTER
    threshold = dense["metrics"][metric] + (tolerance if lower else -tolerance)
    evaluated: dict[int, dict] = {}

    def matches(level: int) -> bool:
        mask = os.path.join(level_dir(trajectory_dir, level), MASK)
        folder = level_dir(os.path.join(out_dir, TICKET_EVALUATIONS), level)
        evaluated[level] = run_branch(BranchConfig(TICKET, cfg, mask, trajectory_dir), folder, run_key=key,
                                      progress=progress)
        value = evaluated[level]["metrics"][metric]
        return value <= threshold if lower else value >= threshold

    sparsest, trace = bisect_sparsest(levels, matches)
    record = {"assumption": MONOTONE_ASSUMPTION, "main_metric": metric, "dense_metric": dense["metrics"][metric],
              "tolerance": tolerance, "threshold": threshold, "trace": trace, "sparsest_matching_level": sparsest,
              "levels_evaluated": [step["level"] for step in trace]}
    verdicts = {step["level"]: step["matches"] for step in trace}
    results = []
    for level in levels:
        source = level_dir(os.path.join(out_dir, TICKET_EVALUATIONS), level) if level in evaluated \
            else level_dir(trajectory_dir, level)
        if level in evaluated:
            metrics = dict(evaluated[level], evaluated=True, matches=verdicts[level])
        else:
            metrics = _unevaluated(cfg, dense, Mask.load(os.path.join(source, MASK)), level, started_at,
                                   matches=sparsest is not None and level <= sparsest)
        metrics.update(branch=KIND, bisection=record, content_key=content_hash({"run": key, "level": level}),
                       run_key=key, reused=False)
        directory = level_dir(out_dir, level)
        write_result_dir(directory, lambda tmp, src=source: shutil.copyfile(os.path.join(src, MASK),
                                                                            os.path.join(tmp, MASK)), metrics)
        results.append(LevelResult(level, directory, metrics, reused=False))
    return results


def _unevaluated(cfg: TrajectoryConfig, dense: dict, mask: Mask, level: int, started_at: float,
                 matches: bool) -> dict:
    """The record of a level bisection did not judge: its mask's sparsity, no metrics, the inferred verdict."""
    now = time.time()
    return {"level": level, "task": dense["task"], "seed": cfg.seed, "model": dense["model"],
            "sparsity": mask.sparsity, "prunable_set": dense["prunable_set"], "steps": 0, "evaluation_steps": 0,
            "train_loss": None, "wall_time_s": 0.0, "started_at": started_at, "finished_at": now, "metrics": {},
            "main_metric": dense["main_metric"], "eval_history": [], "results_version": RESULTS_VERSION,
            "evaluated": False, "matches": matches}
