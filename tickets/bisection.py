"""The sparsest matching ticket of one early-stopped trajectory, found by judging as few full-length tickets as it can.

An early-stopped search (tickets.early) draws every level's mask cheaply, but the accuracy of a level that stopped
early is not its ticket's: each ticket judged needs a full-length training from theta_i with its mask (branch kind
`ticket`). Two strategies, both under one assumption recorded in every result (MONOTONE_ASSUMPTION):

- `ticket-bisect`: bisection over the pruned levels (the sparsest first, then the middle of the undecided range).
- `ticket-boundary`: the search's own signals predict the boundary (PREDICTOR: each stopped level's dev metric at its
  stop), and only the predicted sparsest matching level and the next sparser one are trained to the end; where a
  verdict contradicts the prediction, bisection of the levels on that side measures the boundary.

One trajectory holds one seed, so a level matches when its ticket's main dev metric is at least that seed's dense
(level 0) metric minus `tolerance` (at most plus it where lower is better); DESIGN.md's matching rule over seeds
(mean >= dense mean - dense std) is applied by the report to whatever was evaluated.

Results: `OUT/evaluations/level_XX/` holds each ticket training (resumable, reused by content key); once the search
has decided, `OUT/level_XX/` is written for every pruned level: an evaluated level carries its ticket's metrics, every
level the whole record (`bisection` or `boundary`: levels judged in order and why, the sparsest matching level) and
its own verdict (`evaluated`; `matches`, inferred from the assumption where not evaluated; with `ticket-boundary`
`predicted: true` and the level's early-stopped metric, never shown as a ticket's).
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
from .versions import library_versions

KIND = "ticket-bisect"
BOUNDARY = "ticket-boundary"
SEARCH_KINDS = (KIND, BOUNDARY)
RECORD_KEY = {KIND: "bisection", BOUNDARY: "boundary"}  # where each strategy's record sits in a level's metrics
MONOTONE_ASSUMPTION = ("matching is assumed monotone in sparsity: once a level's ticket fails to match, every sparser "
                       "level's fails too (so every level denser than a matching one matches)")
PREDICTOR = ("a pruned level is predicted to match when the dev metric it reached where it stopped is within the "
             "tolerance of the best early-stopped metric of the levels from level 1 to it (a level trained to the end "
             "is its own ticket: its verdict is measured); the predicted boundary is the last level before the first "
             "predicted failure")


def bisection_key(cfg: TrajectoryConfig, trajectory_key: str, tolerance: float, kind: str = KIND) -> str:
    """The content key of the ticket search `kind` over the trajectory with content key `trajectory_key`."""
    fallback = {"fallback": "bisect"} if kind == BOUNDARY else {}  # how a missed prediction is settled
    return content_hash({"branch": kind, "tolerance": tolerance, "recipe": cfg.without_early_stop().identity(),
                         "source": trajectory_key, **fallback})


class _Judge:
    """Judges levels of `levels` (densest first) by `matches`, keeping the trace of verdicts and reasons."""

    def __init__(self, levels: list[int], matches: Callable[[int], bool]):
        self.levels, self.matches, self.trace = levels, matches, []

    def __call__(self, index: int, reason: str) -> bool:
        verdict = bool(self.matches(self.levels[index]))
        self.trace.append({"level": self.levels[index], "matches": verdict, "reason": reason})
        return verdict

    def bisect(self, matching: int, failing: int) -> int | None:
        """The sparsest matching level between index `matching` (known to match, -1: none known) and `failing`
        (known to fail, len(levels): none known), judging the middle of the undecided range until it is empty."""
        while failing - matching > 1:
            middle = (matching + failing) // 2
            undecided = f"levels {self.levels[matching + 1]}-{self.levels[failing - 1]}"
            if self(middle, f"the middle of the undecided {undecided}"):
                matching = middle
            else:
                failing = middle
        return self.levels[matching] if matching >= 0 else None


def bisect_sparsest(levels: list[int], matches: Callable[[int], bool]) -> tuple[int | None, list[dict]]:
    """The sparsest of `levels` (given densest first) whose ticket matches, judging levels one by one as bisection
    picks them under MONOTONE_ASSUMPTION: the sparsest level first, then the middle of the undecided range. Returns it
    (None when none matches) and the judged levels in order, each with its verdict and why it was judged."""
    judge = _Judge(levels, matches)
    if not levels:
        return None, judge.trace
    if judge(len(levels) - 1, "the sparsest level: if it matches, every denser level does"):
        return levels[-1], judge.trace
    return judge.bisect(-1, len(levels) - 1), judge.trace


def predict_boundary(levels: list[int], early: dict[int, float], measured: dict[int, bool], tolerance: float,
                     lower: bool) -> tuple[int, dict[int, bool]]:
    """The predicted sparsest matching level of `levels` (densest first; 0 where none is predicted to) and each
    level's predicted verdict, by PREDICTOR from each stopped level's `early` metric and the `measured` verdicts of
    the levels that trained to the end."""
    predicted: dict[int, bool] = {}
    best = None
    for level in levels:
        if level in measured:
            predicted[level] = measured[level]
            continue
        value = early[level]
        best = value if best is None else (min(best, value) if lower else max(best, value))
        predicted[level] = value <= best + tolerance if lower else value >= best - tolerance
    boundary = 0
    for level in levels:
        if not predicted[level]:
            break
        boundary = level
    return boundary, predicted


def confirm_boundary(levels: list[int], predicted: int, matches: Callable[[int], bool]) -> tuple[int | None,
                                                                                                list[dict]]:
    """The sparsest of `levels` (densest first) whose ticket matches, judged from the `predicted` one (0: none
    predicted to): that level and the next sparser one; where a verdict contradicts the prediction, by bisection of
    the levels on that side, under MONOTONE_ASSUMPTION. Returns it (None when none matches) and the judged levels in
    order with their verdicts and why each was judged."""
    judge = _Judge(levels, matches)
    index = levels.index(predicted) if predicted in levels else -1
    if index >= 0 and not judge(index, "the predicted sparsest matching level"):
        return judge.bisect(-1, index), judge.trace  # the prediction missed: the boundary is denser
    if index + 1 >= len(levels) or not judge(index + 1, "the next sparser level, to confirm the boundary"):
        return (levels[index] if index >= 0 else None), judge.trace
    return judge.bisect(index + 1, len(levels)), judge.trace  # the next sparser matched too: the boundary is sparser


def run_bisection(cfg: TrajectoryConfig, trajectory_dir: str, out_dir: str, tolerance: float, key: str | None = None,
                  on_level: Callable[[LevelResult], None] | None = None, progress: bool = True,
                  kind: str = KIND) -> list[LevelResult]:
    """Find the sparsest matching ticket of the finished trajectory in `trajectory_dir` (levels 0..cfg.levels) by the
    search `kind` (bisection or the predicted boundary), training the tickets it judges into `out_dir`; write
    `out_dir/level_XX/` for every pruned level."""
    if kind not in SEARCH_KINDS:
        raise TicketsError(f"unknown ticket search '{kind}'; one of {', '.join(SEARCH_KINDS)}")
    cfg = cfg.without_early_stop().validate()
    if tolerance < 0:
        raise TicketsError(f"tolerance must be >= 0, got {tolerance}")
    missing = [lv for lv in range(cfg.levels + 1) if finished_metrics(level_dir(trajectory_dir, lv)) is None]
    if missing:
        raise TicketsError(f"bisection needs levels 0-{cfg.levels} of '{trajectory_dir}'; level {missing[0]} is not "
                           "finished")
    key = key or bisection_key(cfg, finished_metrics(level_dir(trajectory_dir, 0))["run_key"], tolerance, kind)
    levels = list(range(1, cfg.levels + 1))
    done = [finished_metrics(level_dir(out_dir, lv)) for lv in levels]
    if all(m is not None and m.get("run_key") == key for m in done):
        results = [LevelResult(lv, level_dir(out_dir, lv), m, reused=True) for lv, m in zip(levels, done)]
    else:
        results = _decide(cfg, trajectory_dir, out_dir, tolerance, key, levels, progress, kind)
    for result in results:
        if on_level is not None:
            on_level(result)
    return results


def _decide(cfg: TrajectoryConfig, trajectory_dir: str, out_dir: str, tolerance: float, key: str,
            levels: list[int], progress: bool, kind: str) -> list[LevelResult]:
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

    record = {"assumption": MONOTONE_ASSUMPTION, "main_metric": metric, "dense_metric": dense["metrics"][metric],
              "tolerance": tolerance, "threshold": threshold}
    early: dict[int, float] = {}
    if kind == BOUNDARY:
        searched = {level: finished_metrics(level_dir(trajectory_dir, level)) for level in levels}
        early = {level: m["metrics"][metric] for level, m in searched.items()}
        sparsest, trace, prediction = _predicted_search(searched, early, threshold, tolerance, lower, matches)
        record.update(prediction)
    else:
        sparsest, trace = bisect_sparsest(levels, matches)
    record.update(trace=trace, sparsest_matching_level=sparsest, levels_evaluated=[step["level"] for step in trace])
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
            if kind == BOUNDARY:
                metrics.update(predicted=True, early_metric=early[level])
        metrics.update({"branch": kind, RECORD_KEY[kind]: record,
                        "content_key": content_hash({"run": key, "level": level}), "run_key": key, "reused": False})
        directory = level_dir(out_dir, level)
        write_result_dir(directory, lambda tmp, src=source: shutil.copyfile(os.path.join(src, MASK),
                                                                            os.path.join(tmp, MASK)), metrics)
        results.append(LevelResult(level, directory, metrics, reused=False))
    return results


def _predicted_search(searched: dict[int, dict], early: dict[int, float], threshold: float, tolerance: float,
                      lower: bool, matches: Callable[[int], bool]) -> tuple[int | None, list[dict], dict]:
    """The boundary search over the levels of `searched` (their records): the sparsest matching level, the judged
    levels, and what the record keeps of the prediction (the early metrics, stops and predicted verdicts)."""
    levels = list(searched)
    stops = {level: (m.get("early_stop") or {}).get("stopped_at_step") for level, m in searched.items()}
    measured = {level: (early[level] <= threshold if lower else early[level] >= threshold)
                for level in levels if stops[level] is None}
    predicted_level, predicted = predict_boundary(levels, early, measured, tolerance, lower)
    sparsest, trace = confirm_boundary(levels, predicted_level, matches)
    return sparsest, trace, {
        "predictor": PREDICTOR, "early_metrics": {str(lv): v for lv, v in early.items()},
        "stopped_at_step": {str(lv): step for lv, step in stops.items()},
        "predicted_matches": {str(lv): v for lv, v in predicted.items()},
        "predicted_sparsest_matching_level": predicted_level, "prediction_hit": predicted_level == (sparsest or 0)}


def _unevaluated(cfg: TrajectoryConfig, dense: dict, mask: Mask, level: int, started_at: float,
                 matches: bool) -> dict:
    """The record of a level bisection did not judge: its mask's sparsity, no metrics, the inferred verdict."""
    now = time.time()
    return {"level": level, "task": dense["task"], "seed": cfg.seed, "model": dense["model"],
            "sparsity": mask.sparsity, "prunable_set": dense["prunable_set"], "steps": 0, "evaluation_steps": 0,
            "train_loss": None, "wall_time_s": 0.0, "started_at": started_at, "finished_at": now, "metrics": {},
            "main_metric": dense["main_metric"], "eval_history": [], "results_version": RESULTS_VERSION,
            "versions": library_versions(),
            "evaluated": False, "matches": matches}
