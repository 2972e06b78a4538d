"""Structured tickets (Prasanna et al. 2020): attention heads and whole MLP blocks scored, pruned, retrained, compacted.

Extension is by registry: a structured strategy maps (fine-tuned model, batches, current structure) to an
`Importance` (higher = kept longer); a new one is one file plus one record below.
"""

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from ..errors import TicketsError
from .importance import Importance, gradient_importance
from .structure import Structure

StructuredScorer = Callable[[nn.Module, Iterable[dict], Structure], Importance]


@dataclass(frozen=True)
class StructuredStrategy:
    """A registered structured strategy: its importance function and a one-line help."""

    name: str
    importance: StructuredScorer
    help: str


STRUCTURED_STRATEGIES: dict[str, StructuredStrategy] = {
    strategy.name: strategy
    for strategy in (
        StructuredStrategy("gradient-importance", gradient_importance,
                           "summed |d loss / d gate| (Michel et al. 2019), head scores normalised per layer"),
    )
}


def structured_strategy_helps() -> dict[str, str]:
    """Every registered structured strategy (sorted by name) with its one-line help."""
    return {name: STRUCTURED_STRATEGIES[name].help for name in sorted(STRUCTURED_STRATEGIES)}


def get_structured_strategy(name: str) -> StructuredStrategy:
    """The registered structured strategy called `name`."""
    if not isinstance(name, str) or name not in STRUCTURED_STRATEGIES:
        raise TicketsError(f"unknown structured strategy {name!r}; "
                           f"choose one of {', '.join(sorted(STRUCTURED_STRATEGIES))}")
    return STRUCTURED_STRATEGIES[name]
