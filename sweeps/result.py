"""What a finished sweep reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Piece


@dataclass
class SweepResult:
    """What a sweep did: pieces complete and failed, levels trained, how many trials ran at once on how many nodes,
    and whether a signal stopped it."""

    name: str
    storage: str
    tracking_uri: str
    pieces: list[Piece]
    experiment_id: str = ""
    complete: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    trials: int = 0
    levels_trained: int = 0
    levels_logged: int = 0
    peak_trials: int = 0
    wall_s: float = 0.0
    busy_s: float = 0.0
    train_s: float = 0.0
    nodes: set[str] = field(default_factory=set)
    retries: int = 0
    stale: list[str] = field(default_factory=list)
    superseded: int = 0
    node_losses: int = 0
    stopped_by: str | None = None
    exit_code: int = 0
    view_url: str = ""

    @property
    def ok(self) -> bool:
        """True when every piece is complete."""
        return not self.failed

    @property
    def mean_trials(self) -> float | None:
        """Trials running at once on average over the Tune run: busy trial time over wall time (None when nothing
        ran)."""
        return self.busy_s / self.wall_s if self.wall_s > 0 else None
