"""A spec becomes pieces of work: one IMP trajectory per task x seed x rewind x method, one run per branch and transfer,
for early-stopped trajectories one ticket run per evaluated level (or one bisection over their levels), and for
structured tickets one search per task x seed plus one retraining per subnetwork kind.

Every piece trains with the resolved recipe of the task it trains on (a transfer: its target's; Spec.training_for).
Every piece has a content key: the trajectory's (model, data, hyperparameters, seed, rewind, code version), the
structured search's (its recipe and search settings) or, for a branch or subnetwork, a hash of its kind, its recipe
and the content key of the piece (level) whose mask it uses. Results live in the results store under that key, so a
piece that finished once is never trained again, whichever spec planned it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from cluster.conventions import SUBNETWORK_SEARCH
from tickets.bisection import SEARCH_KINDS, bisection_key
from tickets.branches import BRANCHES, TICKET
from tickets.config import TrajectoryConfig, content_hash
from tickets.standard import chain_key

from .spec import Spec

TRAJECTORY = "trajectory"
STRUCTURED_PREFIX = "structured-"
STRUCTURED_SEARCH = STRUCTURED_PREFIX + SUBNETWORK_SEARCH
CHAIN_KINDS = (TRAJECTORY, *(name for name, kind in BRANCHES.items() if kind.chain), *SEARCH_KINDS)


@dataclass(frozen=True)
class Piece:
    """One trial: an IMP trajectory, a branch/transfer run that needs the mask of one level of a trajectory, a
    structured search (`options`: its settings besides the recipe), or the retraining of one of a search's subnetworks."""

    kind: str
    key: str
    name: str
    recipe: TrajectoryConfig
    rewind_label: str
    source_key: str | None = None
    source_task: str | None = None
    level: int | None = None
    options: dict | None = None

    @property
    def is_trajectory(self) -> bool:
        """True for an IMP trajectory, False for a branch or transfer run."""
        return self.kind == TRAJECTORY

    @property
    def is_chain(self) -> bool:
        """True for a piece with its own series of levels (an IMP trajectory, a standard-pruning chain)."""
        return self.kind in CHAIN_KINDS

    @property
    def is_structured(self) -> bool:
        """True for a structured search or the retraining of one of its subnetworks."""
        return self.kind.startswith(STRUCTURED_PREFIX)

    @property
    def subnetwork(self) -> str | None:
        """'search' for a structured search, the subnetwork kind (good, random, bad, full) for a retraining."""
        return self.kind.removeprefix(STRUCTURED_PREFIX) if self.is_structured else None

    @property
    def is_root(self) -> bool:
        """True when the piece needs no other piece's result (trajectories and structured searches)."""
        return self.source_key is None

    @property
    def levels(self) -> list[int]:
        """The levels this piece produces results at (a standard chain: 1..its last level, after level 0 it starts
        from)."""
        if self.is_trajectory:
            return list(range(self.recipe.levels + 1))
        return list(range(1, self.recipe.levels + 1)) if self.is_chain else [self.level]

    def to_dict(self) -> dict:
        """A JSON-serialisable form (a Tune trial config)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Piece:
        """Rebuild from `to_dict` output."""
        return cls(**{**data, "recipe": TrajectoryConfig.from_dict(data["recipe"])})


def branch_key(kind: str, recipe: TrajectoryConfig, source: TrajectoryConfig, level: int, options: dict) -> str:
    """The content key of a branch: its kind and options, its recipe, and the content key of the level whose mask it
    uses."""
    return content_hash({"branch": kind, **options, "recipe": recipe.identity(), "source": source.content_key(level)})


def build_plan(spec: Spec) -> list[Piece]:
    """All pieces of a sweep: trajectories, branches, transfers, then structured searches and retrainings, in a stable
    order."""
    trajectories: list[Piece] = []
    for task in spec.tasks if spec.pruning is not None else []:
        for seed in spec.seeds:
            for point in spec.pruning.rewind:
                for method in spec.pruning.method:
                    cfg = spec.trajectory(task, seed, point, method)
                    name = f"{task}-s{seed}-r{_name_part(point)}-{method}"
                    trajectories.append(Piece(TRAJECTORY, cfg.content_key(), name, cfg, str(point), source_task=task))
    pieces = list(trajectories)
    for traj in trajectories:
        for branch in spec.branches:
            levels = spec.branch_levels(branch)
            if BRANCHES[branch.kind].chain:
                recipe = traj.recipe.with_levels(levels[-1])
                pieces.append(Piece(branch.kind, chain_key(recipe, traj.key), f"{traj.name}-{branch.label}", recipe,
                                    traj.rewind_label, traj.key, traj.recipe.task, 0))
                continue
            options = branch.options()
            for level in levels:
                key = branch_key(branch.kind, traj.recipe, traj.recipe, level, options)
                pieces.append(Piece(branch.kind, key, f"{traj.name}-{branch.label}-L{level}", traj.recipe,
                                    traj.rewind_label, traj.key, traj.recipe.task, level, options or None))
    for traj in trajectories:
        pieces += ticket_pieces(spec, traj)
    for transfer in spec.transfer:
        level = spec.transfer_level(transfer)
        for traj in trajectories:
            if traj.recipe.task not in transfer.sources:
                continue
            for target in transfer.targets:
                if target == traj.recipe.task:
                    continue
                source = traj.recipe
                recipe = replace(source, task=target, train=spec.training_for(target))
                key = branch_key("transfer", recipe, source, level, {})
                rewind = _name_part(traj.rewind_label)
                name = f"{source.task}-to-{target}-s{source.seed}-r{rewind}-{source.method}-L{level}"
                pieces.append(Piece("transfer", key, name, recipe, traj.rewind_label, traj.key, source.task, level))
    if spec.structured is not None:
        pieces += structured_pieces(spec)
    return _unique(pieces)


def ticket_pieces(spec: Spec, traj: Piece) -> list[Piece]:
    """The ticket evaluations of an early-stopped trajectory, trained to the end without early stopping: one ticket
    run per level the spec lists (or every pruned level), or one search over its levels (bisection or the predicted
    boundary) once the trajectory's last level is done (none without early stopping)."""
    early = spec.pruning.early_stop
    if early is None:
        return []
    recipe = traj.recipe.without_early_stop()
    task, last = traj.recipe.task, traj.recipe.levels
    if early.search is not None:
        key = bisection_key(recipe, traj.key, early.tolerance, early.search)
        return [Piece(early.search, key, f"{traj.name}-{early.search}", recipe, traj.rewind_label, traj.key, task, last,
                      {"tolerance": early.tolerance})]
    return [Piece(TICKET, branch_key(TICKET, recipe, traj.recipe, level, {}), f"{traj.name}-{TICKET}-L{level}",
                  recipe, traj.rewind_label, traj.key, task, level) for level in spec.ticket_levels()]


def structured_pieces(spec: Spec) -> list[Piece]:
    """Per task x seed: the structured search, then one retraining per subnetwork kind of the spec."""
    searches, retrains = [], []
    for task in spec.tasks:
        for seed in spec.seeds:
            search = spec.structured_search(task, seed)
            key = search.content_key()
            name = f"{task}-s{seed}-{search.strategy}"
            settings = {k: v for k, v in search.to_dict().items() if k != "trajectory"}
            searches.append(Piece(STRUCTURED_SEARCH, key, f"{name}-search", search.trajectory, "0", source_task=task,
                                  level=0, options=settings))
            for kind in spec.structured.subnetworks:
                retrain_key = content_hash({"structured": kind, "recipe": search.trajectory.identity(), "source": key})
                retrains.append(Piece(STRUCTURED_PREFIX + kind, retrain_key, f"{name}-{kind}", search.trajectory, "0",
                                      key, task, 0, settings))
    return searches + retrains


def _name_part(point: int | str) -> str:
    """A rewind point as it appears in trial and run names, which also name folders ('5%' -> '5pct')."""
    return str(point).replace("%", "pct")


def _unique(pieces: list[Piece]) -> list[Piece]:
    seen: dict[str, Piece] = {}
    for piece in pieces:
        seen.setdefault(piece.key, piece)
    return list(seen.values())
