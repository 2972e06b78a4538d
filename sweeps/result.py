"""What a finished sweep reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Piece


@dataclass
class SweepResult:
    """What a sweep did: pieces complete and failed, levels trained, how busy the trial slots were."""

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
    slots: int = 0
    wall_s: float = 0.0
    busy_s: float = 0.0
    train_s: float = 0.0
    nodes: set[str] = field(default_factory=set)
    retries: int = 0
    view_url: str = ""

    @property
    def ok(self) -> bool:
        """True when every piece is complete."""
        return not self.failed

    @property
    def utilisation(self) -> float | None:
        """Busy trial time over slots x wall time of the Tune run (None when nothing ran)."""
        capacity = self.slots * self.wall_s
        return self.busy_s / capacity if capacity > 0 else None
