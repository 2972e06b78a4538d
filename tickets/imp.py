"""Iterative magnitude pruning trajectories (Chen et al. 2020, Algorithm 1), resumable level by level."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

from .config import TrajectoryConfig, content_hash
from .early import level_record, level_watch, next_draw
from .errors import TicketsError
from .lineage import SUPERSEDES, first_stale_level, supersede, trajectory_lineage
from .masks import Mask
from .paths import (HEAD_WEIGHTS, MASK, NEXT_MASK, REWIND_POINT_WEIGHTS, TRAINED_WEIGHTS, TRAJECTORY_SETTINGS,
                    level_dir)
from .pruning import prune, target_sparsity
from .records import finished_metrics, read_json, write_json, write_result_dir
from .session import TaskSession
from .training import total_steps
from .weights import load_parameter_state, load_weights, parameter_state, save_weights



@dataclass
class LevelResult:
    """One finished level of a trajectory."""

    level: int
    directory: str
    metrics: dict
    reused: bool


def finished_levels(out_dir: str, first: int = 0) -> list[int]:
    """Levels already finished in a trajectory (or chain) folder, in order, counting from level `first`."""
    done, level = [], first
    while finished_metrics(level_dir(out_dir, level)) is not None:
        done.append(level)
        level += 1
    return done


def check_trajectory_folder(cfg: TrajectoryConfig, out_dir: str) -> None:
    """Record the trajectory's settings in OUT, or fail when OUT holds finished levels of a trajectory with other
    settings (a folder with no finished level is taken over) or finished levels whose masks fail verification."""
    path = os.path.join(out_dir, TRAJECTORY_SETTINGS)
    identity = cfg.identity()
    if os.path.isfile(path) and finished_levels(out_dir):
        recorded = read_json(path).get("identity")
        if recorded is None:
            raise TicketsError(f"'{out_dir}' holds a trajectory of an older results version; use another --out")
        if recorded != identity:
            ours, theirs = _flatten(identity), _flatten(recorded)
            differing = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            raise TicketsError(
                f"'{out_dir}' holds a trajectory with other settings ({', '.join(differing)} differ); use another --out"
            )
        verify_finished_levels(out_dir, cfg.levels)
    write_json(path, {"config": asdict(cfg), "identity": identity, "content_key": content_hash(identity)})


def verify_finished_levels(out_dir: str, last: int) -> None:
    """Fail naming the level unless every finished level up to `last` has its mask, and its next level's mask where it
    wrote one, intact (content and metadata hashes) and recording the level it belongs to."""
    for level in range(last + 1):
        folder = level_dir(out_dir, level)
        metrics = finished_metrics(folder)
        if metrics is None:
            continue
        for name, owner in ((MASK, level), (NEXT_MASK, level + 1)):
            path = os.path.join(folder, name)
            if name == NEXT_MASK and not os.path.isfile(path):
                continue  # the schedule ends at this level
            try:
                mask = Mask.load(path)
                if mask.metadata.get("level") != str(owner):
                    raise TicketsError(f"'{path}' records level {mask.metadata.get('level')}, not {owner}")
                if name == MASK and not math.isclose(mask.sparsity, metrics.get("sparsity", -1), abs_tol=1e-9):
                    raise TicketsError(f"'{path}' has sparsity {mask.sparsity:.6f} but the level recorded "
                                       f"{metrics.get('sparsity')}")
            except TicketsError as exc:
                raise TicketsError(f"finished level {level} of '{out_dir}' fails verification: {exc}; delete "
                                   f"'{folder}' to run that level again") from None


def run_trajectory(
    cfg: TrajectoryConfig,
    out_dir: str,
    on_level: Callable[[LevelResult], None] | None = None,
    progress: bool = True,
) -> list[LevelResult]:
    """Run levels 0..cfg.levels of an IMP trajectory into `out_dir`, skipping levels already finished there, unless
    stale: a finished level trained from another mask or rewind point than its predecessor now gives is set aside
    with every later finished level, and trained again."""
    cfg.validate()
    os.makedirs(out_dir, exist_ok=True)
    check_trajectory_folder(cfg, out_dir)
    results: list[LevelResult] = []
    session: TaskSession | None = None
    aside: dict[int, str] = {}  # level -> where its stale result was set aside
    for level in range(cfg.levels + 1):
        directory = level_dir(out_dir, level)
        metrics = finished_metrics(directory)
        if metrics is not None and first_stale_level([*(r.metrics for r in results), metrics]) == level:
            stale = [lv for lv in range(level, cfg.levels + 1) if finished_metrics(level_dir(out_dir, lv)) is not None]
            into = supersede([level_dir(out_dir, lv) for lv in stale], out_dir,
                             f"trained from another mask or rewind point than level {level - 1} now gives")
            aside.update({lv: into for lv in stale})
            metrics = None
        if metrics is not None:
            result = LevelResult(level, directory, metrics, reused=True)
        else:
            session = session or TaskSession.open(cfg)
            result = _run_level(cfg, session, out_dir, level, progress, aside.get(level))
        results.append(result)
        if on_level is not None:
            on_level(result)
    return results


def _run_level(cfg: TrajectoryConfig, session: TaskSession, out_dir: str, level: int, progress: bool,
               supersedes: str | None = None) -> LevelResult:
    started_at = time.time()
    model = session.model
    if level == 0:
        load_parameter_state(model, session.theta_0)
        mask = session.full_mask()
    else:
        mask = Mask.load(os.path.join(level_dir(out_dir, level - 1), NEXT_MASK))
        load_parameter_state(model, load_weights(os.path.join(out_dir, REWIND_POINT_WEIGHTS)))
        if not cfg.rewind_head:
            load_parameter_state(model, load_weights(os.path.join(level_dir(out_dir, level - 1), HEAD_WEIGHTS)))
    steps = total_steps(session.data, cfg.train)
    rewind = cfg.rewind_steps(steps)
    capture_at = rewind if level == 0 else None
    watch = level_watch(cfg, mask.tensors, level, steps)
    result = session.train(mask, capture_at=capture_at, progress=progress, description=f"{cfg.task} level {level}",
                           watch=watch)
    if level == 0:
        if result.captured is None:
            raise TicketsError(f"rewind {rewind} is past the end of training ({result.steps} steps)")
        save_weights(result.captured, os.path.join(out_dir, REWIND_POINT_WEIGHTS))
    next_mask = _next_mask(cfg, session, mask, level)
    metrics = session.record(mask, result, level=level, started_at=started_at)
    metrics["target_sparsity"] = target_sparsity(level, cfg.rate, cfg.schedule)
    metrics["rewind_steps"] = rewind
    metrics["content_key"] = cfg.content_key(level)
    metrics["run_key"] = cfg.content_key()
    metrics.update(level_record(cfg, watch))
    metrics.update(trajectory_lineage(mask, next_mask, os.path.join(out_dir, REWIND_POINT_WEIGHTS), level))
    if supersedes is not None:
        metrics[SUPERSEDES] = supersedes

    def fill(tmp: str) -> None:
        mask.save(os.path.join(tmp, MASK))
        save_weights(session.head_state(), os.path.join(tmp, HEAD_WEIGHTS))
        if next_mask is not None:
            next_mask.save(os.path.join(tmp, NEXT_MASK))
        if level == 0:
            save_weights(parameter_state(model), os.path.join(tmp, TRAINED_WEIGHTS))

    directory = level_dir(out_dir, level)
    write_result_dir(directory, fill, metrics)
    return LevelResult(level, directory, metrics, reused=False)


def _next_mask(cfg: TrajectoryConfig, session: TaskSession, mask: Mask, level: int) -> Mask | None:
    """The mask of level + 1, pruned from this level's trained weights (None when the schedule ends at 100%)."""
    draw = next_draw(cfg, level)
    if draw is None:
        return None
    sparsity, seed = draw
    weights = {n: p.detach() for n, p in session.prunable.items()}
    keep = prune(cfg.method, weights, sparsity, current=mask.tensors, seed=seed)
    return session.make_mask(keep, level=level + 1)


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return flat
