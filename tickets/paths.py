"""Every file name inside a result folder (trajectory, standard chain, branch, structured search), in one place."""

from __future__ import annotations

import os

METRICS = "metrics.json"  # written last: marks a level or run as finished
MASK = "mask.safetensors"  # the mask a level or run trained under
NEXT_MASK = "next_mask.safetensors"  # the mask the next IMP level trains under, pruned from this level's weights
HEAD_WEIGHTS = "head.safetensors"  # the task head after training (kept between levels with --no-rewind-head)
TRAINED_WEIGHTS = "trained.safetensors"  # every weight after training (IMP level 0, standard-chain levels)
REWIND_POINT_WEIGHTS = "rewind_point.safetensors"  # theta_i, once per trajectory
TRAJECTORY_SETTINGS = "trajectory.json"  # a trajectory folder's settings and content key
CHAIN_SETTINGS = "chain.json"  # a standard-pruning chain folder's content key
TICKET_EVALUATIONS = "evaluations"  # a ticket bisection's full-length ticket trainings, one level_XX/ each
GOOD_MASK = "good.safetensors"  # a structured search's good subnetwork
IMPORTANCE = "importance.json"  # a structured search's head and MLP importance scores
COMPACT_MODEL = "compact"  # a retrained structured subnetwork compacted to a smaller dense model (a folder)


def level_dir(out_dir: str, level: int) -> str:
    """The folder of level `level` in a trajectory or chain folder."""
    return os.path.join(out_dir, f"level_{level:02d}")
