"""A spec becomes pieces of work: one IMP trajectory per task x seed x rewind x method, one run per branch and transfer.

Every piece has a content key: the trajectory's (model, data, hyperparameters, seed, rewind, code version) or, for a
branch, a hash of its kind, its recipe and the content key of the level whose mask it uses. Results live in the
results store under that key, so a piece that finished once is never trained again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tickets.config import TrajectoryConfig, content_hash

from .spec import Spec

TRAJECTORY = "trajectory"


@dataclass(frozen=True)
class Piece:
    """One trial: an IMP trajectory, or a branch/transfer run that needs the mask of one level of a trajectory."""

    kind: str
    key: str
    name: str
    recipe: TrajectoryConfig
    rewind_label: str
    source_key: str | None = None
    source_task: str | None = None
    level: int | None = None

    @property
    def is_trajectory(self) -> bool:
        """True for an IMP trajectory, False for a branch or transfer run."""
        return self.kind == TRAJECTORY

    @property
    def levels(self) -> list[int]:
        """The levels this piece produces results at."""
        return list(range(self.recipe.levels + 1)) if self.is_trajectory else [self.level]

    def to_dict(self) -> dict:
        """A JSON-serialisable form (a Tune trial config)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Piece:
        """Rebuild from `to_dict` output."""
        return cls(**{**data, "recipe": TrajectoryConfig.from_dict(data["recipe"])})


def branch_key(kind: str, recipe: TrajectoryConfig, source: TrajectoryConfig, level: int) -> str:
    """The content key of a branch: its kind, its recipe, and the content key of the level whose mask it uses."""
    identity = recipe.identity()
    return content_hash({"branch": kind, "recipe": identity, "source": source.content_key(level)})


def build_plan(spec: Spec) -> list[Piece]:
    """All pieces of a sweep: trajectories first, then branches and transfers, each in a stable order."""
    trajectories: list[Piece] = []
    for task in spec.tasks:
        for seed in spec.seeds:
            for point in spec.pruning.rewind:
                for method in spec.pruning.method:
                    cfg = spec.trajectory(task, seed, spec.rewind_steps(task, point), method)
                    label = str(point) if isinstance(point, int) else f"{point}={cfg.rewind}"
                    name = f"{task}-s{seed}-r{cfg.rewind}-{method}"
                    trajectories.append(Piece(TRAJECTORY, cfg.content_key(), name, cfg, label, source_task=task))
    pieces = list(trajectories)
    for traj in trajectories:
        for branch in spec.branches:
            for level in spec.branch_levels(branch):
                key = branch_key(branch.kind, traj.recipe, traj.recipe, level)
                pieces.append(Piece(branch.kind, key, f"{traj.name}-{branch.kind}-L{level}", traj.recipe,
                                    traj.rewind_label, traj.key, traj.recipe.task, level))
    for transfer in spec.transfer:
        level = spec.transfer_level(transfer)
        for traj in trajectories:
            if traj.recipe.task not in transfer.sources:
                continue
            for target in transfer.targets:
                if target == traj.recipe.task:
                    continue
                recipe = spec.trajectory(target, traj.recipe.seed, traj.recipe.rewind, traj.recipe.method)
                key = branch_key("transfer", recipe, traj.recipe, level)
                source = traj.recipe
                name = f"{source.task}-to-{target}-s{source.seed}-r{source.rewind}-{source.method}-L{level}"
                pieces.append(Piece("transfer", key, name, recipe, traj.rewind_label, traj.key, source.task, level))
    return _unique(pieces)


def _unique(pieces: list[Piece]) -> list[Piece]:
    seen: dict[str, Piece] = {}
    for piece in pieces:
        seen.setdefault(piece.key, piece)
    return list(seen.values())
