"""What a piece reads from the result folder of the piece it starts from (its source), as paths relative to that
folder: what a trial fetches into its node's cache when the results store is an object store.

A trajectory or a structured search reads no other piece's result. A per-level branch reads the source level's mask
and the file its branch kind needs (theta_i or the dense fine-tuned weights); a ticket also the level's record and
the trajectory's settings, to take that level's result when the level trained to the end. A standard chain reads the
dense fine-tuned weights; a ticket bisection every level's record and pruned mask, theta_i and the settings; a
subnetwork retraining its search's good mask, importance and record.
"""

from __future__ import annotations

from tickets.bisection import SEARCH_KINDS
from tickets.branches import BRANCHES, BranchConfig
from tickets.paths import GOOD_MASK, IMPORTANCE, MASK, METRICS, REWIND_POINT_WEIGHTS, TRAJECTORY_SETTINGS, level_dir

from .plan import STRUCTURED_SEARCH, Piece


def source_files(piece: Piece) -> list[str]:
    """The files of `piece`'s source folder that running `piece` reads (none for a piece without a source)."""
    if piece.is_root:
        return []
    if piece.kind in SEARCH_KINDS:
        pruned = range(1, piece.recipe.levels + 1)
        return [TRAJECTORY_SETTINGS, REWIND_POINT_WEIGHTS, f"{level_dir('', 0)}/{METRICS}",
                *(f"{level_dir('', lv)}/{name}" for lv in pruned for name in (MASK, METRICS))]
    if piece.is_structured:
        return [] if piece.kind == STRUCTURED_SEARCH else [GOOD_MASK, IMPORTANCE, METRICS]
    kind = BRANCHES[piece.kind]
    needed = kind.needs(BranchConfig(piece.kind, piece.recipe, "", "", **(piece.options or {})))
    if kind.chain:
        return [needed]
    level = level_dir("", piece.level)
    files = [f"{level}/{MASK}", *([needed] if needed else [])]
    if kind.reproduces is not None:
        files += [TRAJECTORY_SETTINGS, f"{level}/{METRICS}"]
    return files
