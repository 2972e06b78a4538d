"""Which MLflow run a piece's levels belong to: one run per *series* (cluster.conventions explains why).

A series is what a researcher draws as one line: the IMP trajectory of one task x seed x rewind x method, or one
baseline kind of that trajectory (random pruning, random re-initialisation, one-shot, standard pruning, a ticket
evaluation...) over its levels, or one transfer (S -> T), or one structured subnetwork. A per-level branch is one
trial per level, so several pieces share a series; every other piece is a series of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickets.branches import DEFAULT_REINIT_SCOPE
from tickets.config import content_hash
from tickets.pruning import target_sparsity

from .plan import TRAJECTORY, Piece

IMP = "imp"
DEFAULT_METHOD = "magnitude"
TRANSFER = "transfer"
RANDOM_PRUNE = "random-prune"


@dataclass(frozen=True)
class Series:
    """One MLflow run's identity: its content key (the run's `content_key` tag), `series` label and run name, and
    the pieces whose levels it holds."""

    key: str
    label: str
    name: str
    pieces: tuple[Piece, ...]

    @property
    def levels(self) -> list[int]:
        """Every level the series holds once complete, in order."""
        return sorted({level for piece in self.pieces for level in piece.levels})

    @property
    def first(self) -> Piece:
        """The piece whose recipe and tags stand for the series."""
        return self.pieces[0]


def is_per_level(piece: Piece) -> bool:
    """True for a branch trained once per level (its series gathers one piece per level)."""
    return not (piece.is_chain or piece.is_structured or piece.kind == TRANSFER)


def series_key(piece: Piece) -> str:
    """The content key of the series `piece` belongs to: its own key, or for a per-level branch a hash of its kind,
    options and source trajectory."""
    if not is_per_level(piece):
        return piece.key
    return content_hash({"series": piece.kind, "options": piece.options or {}, "source": piece.source_key})


def series_label(piece: Piece) -> str:
    """The `series` tag: imp (imp:METHOD for another pruning method), the branch kind (random-reinit:encoder for a
    non-default scope), transfer:S->T, or structured:SUBNETWORK."""
    if piece.kind == TRAJECTORY:
        return IMP if piece.recipe.method == DEFAULT_METHOD else f"{IMP}:{piece.recipe.method}"
    if piece.is_structured:
        return f"structured:{piece.subnetwork}"
    if piece.kind == TRANSFER:
        return f"{TRANSFER}:{piece.source_task}->{piece.recipe.task}"
    scope = (piece.options or {}).get("reinit_scope", DEFAULT_REINIT_SCOPE)
    return piece.kind if scope == DEFAULT_REINIT_SCOPE else f"{piece.kind}:{scope}"


def series_name(piece: Piece) -> str:
    """The run name, distinguishing part first: 'random-prune sst2 s0 r0', 'transfer:sst2->cola s1 r0',
    'structured:good sst2 s0' (a non-default IMP method is named last)."""
    cfg = piece.recipe
    label = series_label(piece)
    if piece.is_structured:
        return f"{label} {cfg.task} s{cfg.seed}"
    task = "" if piece.kind == TRANSFER else f" {cfg.task}"
    method = "" if cfg.method == DEFAULT_METHOD or piece.kind == TRAJECTORY else f" {cfg.method}"
    return f"{label}{task} s{cfg.seed} r{piece.rewind_label}{method}"


def pruning_method(piece: Piece) -> str:
    """How the run's masks were drawn (the `method` tag): random for random pruning, else the trajectory's method
    (structured runs: their strategy)."""
    if piece.is_structured:
        return piece.options["strategy"]
    return "random" if piece.kind == RANDOM_PRUNE else piece.recipe.method


def level_sparsity(piece: Piece, level: int, measured: float) -> float:
    """The sparsity a level is logged at: the schedule's value of that level (IMP levels, branches and transfers
    of a level), else the measured fraction; rounded to 6 decimals either way."""
    if piece.is_structured or (level == 0 and piece.kind != TRAJECTORY):
        return round(measured, 6)
    return round(target_sparsity(level, piece.recipe.rate, piece.recipe.schedule), 6)


def group_series(pieces: list[Piece]) -> list[Series]:
    """The series of a plan, in plan order, each with its pieces in plan order."""
    grouped: dict[str, list[Piece]] = {}
    for piece in pieces:
        grouped.setdefault(series_key(piece), []).append(piece)
    return [Series(key, series_label(members[0]), series_name(members[0]), tuple(members))
            for key, members in grouped.items()]
