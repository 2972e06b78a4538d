"""Standard pruning (Han et al. 2015), the baseline of Chen et al. 2020: a chain of its own levels, resumable level by level.

Level L prunes this chain's own trained level L-1 weights (level 0: the trajectory's dense fine-tuned weights) by
global magnitude to the IMP schedule's level-L sparsity and trains on from there with the recipe; it never rewinds.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from .config import TrajectoryConfig, content_hash
from .errors import TicketsError
from .imp import LevelResult, finished_levels
from .paths import CHAIN_SETTINGS, MASK, TRAINED_WEIGHTS, TRAJECTORY_SETTINGS, level_dir
from .masks import Mask
from .pruning import prune, target_sparsity
from .records import finished_metrics, read_json, write_json, write_result_dir
from .session import TaskSession
from .weights import load_parameter_state, load_weights, parameter_state, save_weights

KIND = "standard"


def chain_key(cfg: TrajectoryConfig, trajectory_key: str) -> str:
    """The content key of the standard chain that starts from the trajectory with content key `trajectory_key`."""
    return content_hash({"branch": KIND, "recipe": cfg.identity(), "source": trajectory_key})


def run_standard(
    cfg: TrajectoryConfig,
    trajectory_dir: str,
    out_dir: str,
    key: str | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
    progress: bool = True,
) -> list[LevelResult]:
    """Run levels 1..cfg.levels of the standard-pruning chain into `out_dir`, skipping levels finished there.

    `trajectory_dir` is the IMP trajectory whose level 0 (dense fine-tuned weights) starts the chain; `key` is the
    chain's content key (default: from the recipe and the trajectory's recorded key).
    """
    cfg.validate()
    dense = os.path.join(level_dir(trajectory_dir, 0), TRAINED_WEIGHTS)
    if not os.path.isfile(dense):
        raise TicketsError(f"standard pruning needs '{dense}' (level 0 of the trajectory), which does not exist")
    key = key or chain_key(cfg, _trajectory_key(trajectory_dir))
    _check_chain_folder(out_dir, key)
    done = set(finished_levels(out_dir, first=1))
    results: list[LevelResult] = []
    session: TaskSession | None = None
    for level in range(1, cfg.levels + 1):
        directory = level_dir(out_dir, level)
        if level in done:
            result = LevelResult(level, directory, finished_metrics(directory), reused=True)
        else:
            session = session or TaskSession.open(cfg)
            result = _run_level(cfg, session, dense, out_dir, level, key, progress)
        results.append(result)
        if on_level is not None:
            on_level(result)
    return results


def _run_level(cfg: TrajectoryConfig, session: TaskSession, dense: str, out_dir: str, level: int, key: str,
               progress: bool) -> LevelResult:
    started_at = time.time()
    if level == 1:
        previous_weights, previous_keep = dense, None
    else:
        previous = level_dir(out_dir, level - 1)
        previous_weights = os.path.join(previous, TRAINED_WEIGHTS)
        previous_keep = Mask.load(os.path.join(previous, MASK)).tensors
    load_parameter_state(session.model, load_weights(previous_weights))
    weights = {n: p.detach() for n, p in session.prunable.items()}
    sparsity = target_sparsity(level, cfg.rate, cfg.schedule)
    keep = prune("magnitude", weights, sparsity, current=previous_keep, seed=cfg.seed)
    mask = session.make_mask(keep, level=level, method=KIND)
    result = session.train(mask, progress=progress, description=f"{KIND} level {level}")
    metrics = session.record(mask, result, level=level, started_at=started_at)
    metrics.update(branch=KIND, target_sparsity=sparsity, content_key=content_hash({"run": key, "level": level}),
                   run_key=key)

    def fill(tmp: str) -> None:
        mask.save(os.path.join(tmp, MASK))
        save_weights(parameter_state(session.model), os.path.join(tmp, TRAINED_WEIGHTS))

    directory = level_dir(out_dir, level)
    write_result_dir(directory, fill, metrics)
    return LevelResult(level, directory, metrics, reused=False)


def _trajectory_key(trajectory_dir: str) -> str:
    path = os.path.join(trajectory_dir, TRAJECTORY_SETTINGS)
    if not os.path.isfile(path):
        raise TicketsError(f"'{trajectory_dir}' is not a trajectory folder (no {TRAJECTORY_SETTINGS})")
    return read_json(path)["content_key"]


def _check_chain_folder(out_dir: str, key: str) -> None:
    """Record the chain's key in OUT, or fail when OUT holds finished levels of a chain with another key (a folder with
    no finished level is taken over)."""
    path = os.path.join(out_dir, CHAIN_SETTINGS)
    if os.path.isfile(path) and finished_levels(out_dir, first=1) and read_json(path).get("content_key") != key:
        raise TicketsError(f"'{out_dir}' holds a standard-pruning chain with other settings; use another --out")
    os.makedirs(out_dir, exist_ok=True)
    write_json(path, {"branch": KIND, "content_key": key})
